import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { HangPolicyPatchSchema, applyPolicyPatch } from '../../shared/hang-policy.js';
import type { HoldfastEvent } from '../../shared/events.js';
import type { Volume } from '../volume/volume.js';
import type { GatewayMetrics } from './metrics.js';
import { volumeStatus } from './volume-status.js';
import { storageRoute } from './storage-routes.js';
import type { GcReport } from '../image/gc.js';

export interface AdminSources {
  readonly volumes: () => readonly Volume[];
  readonly volume: (name: string) => Volume | undefined;
  /** False once the gateway cannot serve (not listening, or stopping). */
  readonly healthy: () => boolean;
  readonly events: (volume?: string) => readonly HoldfastEvent[];
  readonly gatewayId: string;
  /** Garbage collection of the whole store, now. */
  readonly gc?: (dryRun: boolean) => Promise<GcReport>;
}

export interface AdminServerOptions {
  readonly sources: AdminSources;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  readonly token?: string | undefined;
}

/** Request bodies are tiny JSON documents; anything larger is refused unread. */
const MAX_BODY_BYTES = 64 * 1024;

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const VOLUME_ROUTE = /^\/v1\/volumes\/([^/]+)(?:\/(hang-policy|pause|resume|release))?$/;

/**
 * The admin HTTP API: health for load balancers, Prometheus metrics, volume state, and the hang
 * controls (policy, pause, resume, release). Routes are few and fixed, so plain node:http is enough.
 */
export class AdminServer {
  private readonly server: Server;

  constructor(private readonly opts: AdminServerOptions) {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        const status = err instanceof HttpError ? err.status : 500;
        if (status === 500) opts.logger.error({ err, url: req.url }, 'admin request failed');
        send(res, status, { error: err instanceof Error ? err.message : String(err) });
      });
    });
    // Admin clients are few; a slow one must not keep sockets forever.
    this.server.requestTimeout = 10_000;
    this.server.headersTimeout = 5_000;
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    if (path === '/healthz') {
      allow(method, ['GET', 'HEAD']);
      const healthy = this.opts.sources.healthy();
      send(res, healthy ? 200 : 503, { status: healthy ? 'ok' : 'unavailable', gateway: this.opts.sources.gatewayId, volumes: this.opts.sources.volumes().length });
      return;
    }
    this.authorize(req);
    if (path === '/metrics') {
      allow(method, ['GET']);
      const body = await this.opts.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.opts.metrics.registry.contentType });
      res.end(body);
      return;
    }
    if (path === '/v1/volumes') {
      allow(method, ['GET']);
      send(res, 200, { gateway: this.opts.sources.gatewayId, volumes: this.opts.sources.volumes().map(volumeStatus) });
      return;
    }
    if (path === '/v1/events') {
      allow(method, ['GET']);
      send(res, 200, { events: this.opts.sources.events(url.searchParams.get('volume') ?? undefined) });
      return;
    }
    const storage = await storageRoute(path, method, url, this.opts.sources, () => readJson(req), this.opts.logger);
    if (storage !== undefined) {
      send(res, storage.status, storage.body);
      return;
    }
    const m = VOLUME_ROUTE.exec(path);
    if (m === null) throw new HttpError(404, `no such endpoint: ${path}`);
    const name = decodeURIComponent(m[1]!);
    const volume = this.opts.sources.volume(name);
    if (volume === undefined) throw new HttpError(404, `no volume named ${name} is served here`);
    switch (m[2]) {
      case undefined:
        allow(method, ['GET']);
        send(res, 200, volumeStatus(volume));
        return;
      case 'hang-policy': {
        allow(method, ['GET', 'PUT']);
        if (method === 'PUT') {
          const parsed = HangPolicyPatchSchema.safeParse(await readJson(req));
          if (!parsed.success) throw new HttpError(400, `invalid hang policy: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')}`);
          let next;
          try {
            next = applyPolicyPatch(volume.hang.policy, parsed.data);
          } catch (err) {
            throw new HttpError(400, err instanceof Error ? err.message : String(err));
          }
          volume.hang.setPolicy(next);
          this.opts.logger.info({ volume: name, policy: next }, 'hang policy changed');
        }
        send(res, 200, volume.hang.policy);
        return;
      }
      case 'pause':
        allow(method, ['POST']);
        send(res, 200, { paused: true, failed: volume.hang.pause() });
        return;
      case 'resume':
        allow(method, ['POST']);
        volume.hang.resume();
        send(res, 200, { paused: false });
        return;
      case 'release':
        allow(method, ['POST']);
        send(res, 200, { failed: volume.hang.release() });
        return;
    }
  }

  private authorize(req: IncomingMessage): void {
    const token = this.opts.token;
    if (token === undefined) return;
    const header = req.headers.authorization ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
    const wanted = Buffer.from(token);
    if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) throw new HttpError(401, 'missing or wrong bearer token');
  }
}

export function allow(method: string, methods: readonly string[]): void {
  if (!methods.includes(method)) throw new HttpError(405, `method ${method} not allowed here; use ${methods.join(' or ')}`);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
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
    return JSON.parse(text === '' ? '{}' : text);
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
