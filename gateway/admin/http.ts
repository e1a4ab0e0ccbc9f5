import type { IncomingMessage, ServerResponse } from 'node:http';

/** Request bodies are tiny JSON documents; anything larger is refused unread. */
export const MAX_BODY_BYTES = 64 * 1024;

/** A request the admin API refuses: `status` is the HTTP answer, the message its `error` field. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export function allow(method: string, methods: readonly string[]): void {
  if (!methods.includes(method)) throw new HttpError(405, `method ${method} not allowed here; use ${methods.join(' or ')}`);
}

/** The body as JSON; an empty body is `{}`. Bounded by MAX_BODY_BYTES whatever Content-Length claims. */
export async function readJson(req: IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) throw new HttpError(413, `body over ${MAX_BODY_BYTES} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text === '' ? '{}' : text) as unknown;
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
}

/** Pretty-printed JSON and a final newline, as a person reading curl's output wants it. */
export function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A percent-encoded part of a path (a volume or snapshot name); bad encoding is the client's error, a 400. */
export function pathSegment(encoded: string, what: string): string {
  try {
    return decodeURIComponent(encoded);
  } catch {
    throw new HttpError(400, `${what} ${JSON.stringify(encoded)} is not valid percent-encoding`);
  }
}
