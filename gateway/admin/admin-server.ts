// gateway/admin owns the admin HTTP API: this server and its routes (volume status, hang control,
// storage operations in storage-routes.ts), the JSON request/response edge (http.ts), the status
// schema shared with `holdfast status` (volume-status.ts) and the Prometheus metrics (metrics.ts).
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { HoldfastEvent, RequestedBy } from '../../shared/events.js';
import { HangPolicyPatchSchema, applyPolicyPatch, policyDocument } from '../../shared/hang-policy.js';
import type { HangControl } from '../hang/index.js';
import { allow, HttpError, pathSegment, readJson, send } from './http.js';
import type { GatewayMetrics } from './metrics.js';
import { type DiskCacheStatus, type VolumeStatus } from './volume-status.js';
import { storageRoute, type StorageSources } from './storage-routes.js';

/** What the admin API reads and controls; the gateway provides it, tests provide their own. */
export interface AdminSources extends StorageSources {
  /** The volumes served, in order. */
  readonly volumeNames: () => readonly string[];
  readonly status: (volume: string) => VolumeStatus | undefined;
  readonly hangControl: (volume: string) => HangControl | undefined;
  /** False once the gateway cannot serve (not listening, or stopping). */
  readonly healthy: () => boolean;
  readonly events: (volume?: string) => readonly HoldfastEvent[];
  readonly gatewayId: string;
  /** The disk cache tier; undefined when the gateway has none. */
  readonly diskCache?: () => DiskCacheStatus | undefined;
}

export interface AdminServerOptions {
  readonly sources: AdminSources;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  readonly token?: string | undefined;
}

const VOLUME_ROUTE = /^\/v1\/volumes\/([^/]+)(?:\/(hang-policy|pause|resume|release))?$/;

/**
 * gateway/admin — the admin HTTP API (this file; http.ts its request and response helpers): health
 * for load balancers, Prometheus metrics (metrics.ts), volume state (volume-status.ts, the schema
 * `holdfast status` reads back), and the hang controls — policy, pause, resume, release — each
 * logged and sent as an event with who asked. Routes are few and fixed, so plain node:http is enough.
 */
export class AdminServer {
  private readonly server: Server;
  /** Names the configured token in logs and events without revealing it. */
  private readonly tokenId: string | null;

  constructor(private readonly opts: AdminServerOptions) {
    this.tokenId = opts.token === undefined ? null : `sha256:${createHash('sha256').update(opts.token).digest('hex').slice(0, 12)}`;
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
      this.server.close(() => {
        resolve();
      });
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const sources = this.opts.sources;
    if (path === '/healthz') {
      allow(method, ['GET', 'HEAD']);
      const healthy = sources.healthy();
      send(res, healthy ? 200 : 503, {
        status: healthy ? 'ok' : 'unavailable',
        gateway: sources.gatewayId,
        volumes: sources.volumeNames().length,
      });
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
      const volumes = sources.volumeNames().flatMap((name) => sources.status(name) ?? []);
      send(res, 200, { gateway: sources.gatewayId, volumes, diskCache: sources.diskCache?.() ?? null });
      return;
    }
    if (path === '/v1/events') {
      allow(method, ['GET']);
      send(res, 200, { events: sources.events(url.searchParams.get('volume') ?? undefined) });
      return;
    }
    const storage = await storageRoute(path, method, url, sources, () => readJson(req), this.opts.logger);
    if (storage !== undefined) {
      send(res, storage.status, storage.body);
      return;
    }
    const m = VOLUME_ROUTE.exec(path);
    if (m === null) throw new HttpError(404, `no such endpoint: ${path}`);
    const name = pathSegment(m[1] ?? '', 'volume name');
    const status = sources.status(name);
    if (status === undefined) throw new HttpError(404, `no volume named ${name} is served here`);
    if (m[2] === undefined) {
      allow(method, ['GET']);
      send(res, 200, status);
      return;
    }
    // A volume waiting for its store to answer has a status but no hang controls yet.
    const control = sources.hangControl(name);
    if (control === undefined)
      throw new HttpError(409, `volume ${name} is not taken yet (its store does not answer): its hang handling cannot be changed`);
    switch (m[2]) {
      case 'hang-policy':
        allow(method, ['GET', 'PUT']);
        if (method === 'PUT') await this.changePolicy(req, name, control);
        send(res, 200, policyDocument(control.policy));
        return;
      case 'pause':
        allow(method, ['POST']);
        send(res, 200, { paused: true, failed: control.pause(this.requestedBy(req)) });
        return;
      case 'resume':
        allow(method, ['POST']);
        control.resume(this.requestedBy(req));
        send(res, 200, { paused: false });
        return;
      case 'release':
        allow(method, ['POST']);
        send(res, 200, { failed: control.release(this.requestedBy(req)) });
        return;
    }
  }

  private async changePolicy(req: IncomingMessage, name: string, control: HangControl): Promise<void> {
    const parsed = HangPolicyPatchSchema.safeParse(await readJson(req));
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`);
      throw new HttpError(400, `invalid hang policy for ${name}: ${issues.join('; ')}`);
    }
    control.setPolicy(applyPolicyPatch(control.policy, parsed.data), this.requestedBy(req));
  }

  /** The admin client, for the log and the events of what it did. */
  private requestedBy(req: IncomingMessage): RequestedBy {
    const { remoteAddress, remotePort } = req.socket;
    const host = remoteAddress?.includes(':') === true ? `[${remoteAddress}]` : (remoteAddress ?? 'unknown');
    return { address: remotePort === undefined ? host : `${host}:${remotePort}`, token: this.tokenId };
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
