import { createHash, createHmac, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** What the test's credentials are; the server checks every request's SigV4 signature with them. */
export const TEST_CREDENTIALS = { accessKeyId: 'AKIDHOLDFASTTEST', secretAccessKey: 'holdfast-test-secret' } as const;

export interface Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export interface ReceivedEntry {
  readonly Source?: string;
  readonly DetailType?: string;
  readonly Detail?: string;
  readonly EventBusName?: string;
  readonly Time?: number | string;
  readonly Resources?: string[];
}

/** The answer to one entry: accepted, or refused with an error code as EventBridge does per entry. */
export type EntryVerdict = 'ok' | { readonly errorCode: string; readonly errorMessage?: string };

/** How the server answers one PutEvents call. */
export type CallVerdict = 'ok' | 'throttle' | 'hang' | readonly EntryVerdict[];

export interface PutEventsCall {
  readonly entries: readonly ReceivedEntry[];
  readonly verdict: CallVerdict;
}

/**
 * A local endpoint that speaks EventBridge's JSON protocol (AWSEvents.PutEvents over
 * application/x-amz-json-1.1) and verifies SigV4 signatures, so that the real SDK client — its
 * serialization, signing and error parsing — runs in the tests. It can refuse entries, throttle
 * calls, hang, and be stopped and started again on the same port.
 */
export class FakeEventBridge {
  readonly calls: PutEventsCall[] = [];
  /** Entries given an EventId, in the order they were accepted. */
  readonly accepted: ReceivedEntry[] = [];
  readonly protocolErrors: string[] = [];
  /** Decides each call; the default accepts everything. */
  behaviour: (entries: readonly ReceivedEntry[], callIndex: number) => CallVerdict = () => 'ok';
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private port: number,
    private readonly credentials: Credentials,
  ) {}

  /** Listens on `port` (0: a free one) and accepts requests signed with `credentials`. */
  static async start(port = 0, credentials: Credentials = TEST_CREDENTIALS): Promise<FakeEventBridge> {
    const fake = new FakeEventBridge(port, credentials);
    await fake.listen();
    return fake;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  async listen(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        resolve();
      });
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Closes the port and every open connection, as a dead endpoint would. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const problem = this.protocolProblem(req, body);
    if (problem !== undefined) {
      this.protocolErrors.push(problem);
      reply(res, 400, { __type: 'ValidationException', message: problem });
      return;
    }
    const entries = (JSON.parse(body.toString('utf8')) as { Entries?: ReceivedEntry[] }).Entries ?? [];
    const verdict = this.behaviour(entries, this.calls.length);
    this.calls.push({ entries, verdict });
    if (verdict === 'hang') return;
    if (verdict === 'throttle') {
      reply(res, 400, { __type: 'ThrottlingException', message: 'Rate exceeded' });
      return;
    }
    const results = entries.map((entry, i) => {
      const v = verdict === 'ok' ? 'ok' : (verdict[i] ?? 'ok');
      if (v === 'ok') {
        this.accepted.push(entry);
        return { EventId: randomUUID() };
      }
      return { ErrorCode: v.errorCode, ErrorMessage: v.errorMessage ?? v.errorCode };
    });
    reply(res, 200, { FailedEntryCount: results.filter((r) => 'ErrorCode' in r).length, Entries: results });
  }

  private protocolProblem(req: IncomingMessage, body: Buffer): string | undefined {
    if (req.method !== 'POST' || req.url !== '/') return `unexpected ${req.method} ${req.url}`;
    if (req.headers['content-type'] !== 'application/x-amz-json-1.1') return `content-type ${req.headers['content-type']}`;
    if (req.headers['x-amz-target'] !== 'AWSEvents.PutEvents') return `x-amz-target ${String(req.headers['x-amz-target'])}`;
    const auth =
      /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/events\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/.exec(
        req.headers.authorization ?? '',
      );
    if (auth === null) return `authorization header ${req.headers.authorization}`;
    const [, keyId, date, region, signedHeaders, signature] = auth as unknown as [string, string, string, string, string, string];
    if (keyId !== this.credentials.accessKeyId) return `unknown access key ${keyId}`;
    const expected = sigV4(req, body, this.credentials.secretAccessKey, { date, region, signedHeaders });
    return expected === signature ? undefined : 'signature does not match';
  }
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': randomUUID() });
  res.end(JSON.stringify(body));
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();

/** The SigV4 signature the request should carry, computed independently of the SDK. */
function sigV4(
  req: IncomingMessage,
  body: Buffer,
  secretAccessKey: string,
  scope: { date: string; region: string; signedHeaders: string },
): string {
  const headers = scope.signedHeaders.split(';');
  const canonicalHeaders = headers
    .map(
      (h) =>
        `${h}:${String(req.headers[h] ?? '')
          .trim()
          .replace(/\s+/g, ' ')}\n`,
    )
    .join('');
  const canonicalRequest = ['POST', '/', '', canonicalHeaders, scope.signedHeaders, sha256(body)].join('\n');
  const credentialScope = `${scope.date}/${scope.region}/events/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', String(req.headers['x-amz-date']), credentialScope, sha256(canonicalRequest)].join('\n');
  let key = hmac(`AWS4${secretAccessKey}`, scope.date);
  for (const part of [scope.region, 'events', 'aws4_request']) key = hmac(key, part);
  return createHmac('sha256', key).update(stringToSign).digest('hex');
}
