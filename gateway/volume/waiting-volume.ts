import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import type { IoHangEvent } from '../../shared/events.js';
import { join } from 'node:path';
import { RequestAbortedError, RequestDroppedError } from '../../shared/errors.js';
import type { HangTimeout } from '../../shared/hang-policy.js';
import { VolumeShapeSchema, type VolumeShape } from '../../shared/volume-manifest.js';
import { StorageFailedError } from '../hang/index.js';
import type { AllocationExtent, NbdExport, RequestContext, ZeroOptions } from '../nbd/export.js';
import { writeFileAtomic } from '../util/atomic-write.js';

/** The shape of the volume as last served here, kept in its journal directory. */
const SHAPE_FILE = 'volume.json';

export async function saveShape(journalDir: string, shape: VolumeShape): Promise<void> {
  await writeFileAtomic(join(journalDir, SHAPE_FILE), JSON.stringify(shape));
}

export async function loadShape(journalDir: string): Promise<VolumeShape | undefined> {
  try {
    const parsed = VolumeShapeSchema.safeParse(JSON.parse(await readFile(join(journalDir, SHAPE_FILE), 'utf8')) as unknown);
    return parsed.success ? parsed.data : undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (err instanceof SyntaxError || code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** The volumes whose journal directory under `journalRoot` says they were served here. */
export async function volumesServedBefore(journalRoot: string): Promise<string[]> {
  // The journal root also holds files of its own (journal-id): only directories are volumes.
  const entries = await readdir(journalRoot, { withFileTypes: true }).catch(() => []);
  const out: string[] = [];
  for (const e of entries) if (e.isDirectory() && (await loadShape(join(journalRoot, e.name))) !== undefined) out.push(e.name);
  return out;
}

/**
 * A volume this gateway served before, whose store does not answer now that it restarted: it cannot be
 * taken (its head cannot be read), so nothing is acknowledged — but a client that reconnects (QEMU's
 * reconnect-delay) finds the export with its size, and its requests wait, held, as in any outage, until
 * the volume is taken and they go to it. They fail like held requests: with EIO at the hang timeout,
 * at once with hang handling off, and unanswered (the connection closes) when the gateway stops.
 */
export class WaitingVolume implements NbdExport {
  readonly name: string;
  readonly size: number;
  readonly readOnly: boolean;
  readonly canMultiConn = true;
  readonly minimumBlockSize = 1;
  readonly preferredBlockSize = 4096;
  private target: NbdExport | undefined;
  private failure: Error | undefined;
  private attached = 0;
  private readonly waiters = new Set<{ resolve: (e: NbdExport) => void; reject: (err: Error) => void }>();
  private readonly since = performance.now();
  /** The hang episode its waiting requests are, from the first held request until the volume is taken. */
  private episode: { id: string; startedAt: number } | undefined;

  constructor(
    shape: VolumeShape,
    private readonly timeout: () => HangTimeout,
    /** Told of the io-hang episode (set and clear), as a served volume's hang monitor reports one. */
    private readonly onHang: (event: IoHangEvent) => void = () => undefined,
    private readonly gatewayId = 'gateway',
  ) {
    this.name = shape.name;
    this.size = shape.size;
    this.readOnly = shape.readOnly;
  }

  /** Requests waiting for the volume: they count as held. */
  get held(): number {
    return this.waiters.size;
  }

  /** The volume was taken: waiting and later requests go to it. */
  ready(volume: NbdExport): void {
    this.target = volume;
    for (let i = 0; i < this.attached; i++) volume.attach();
    this.endEpisode();
    for (const w of this.waiters) w.resolve(volume);
    this.waiters.clear();
  }

  /** The gateway stops, or the volume cannot be served after all: waiting requests get no answer. */
  abandon(reason: string): void {
    this.failure = new RequestDroppedError(reason);
    this.endEpisode();
    for (const w of this.waiters) w.reject(this.failure);
    this.waiters.clear();
  }

  private volume(ctx: RequestContext | undefined): Promise<NbdExport> {
    if (this.target !== undefined) return Promise.resolve(this.target);
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const timeout = this.timeout();
    if (timeout === 'off') return Promise.reject(new StorageFailedError('policy', 'transient'));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (e: NbdExport) => {
          cleanup();
          resolve(e);
        },
        reject: (err: Error) => {
          cleanup();
          reject(err);
        },
      };
      const onAbort = () => {
        waiter.reject(new RequestAbortedError('client disconnected while waiting for its volume'));
      };
      // The episode began when the gateway found the store silent: the timeout counts from then.
      const timer =
        typeof timeout === 'number'
          ? setTimeout(
              () => {
                waiter.reject(new StorageFailedError('timeout', 'transient'));
              },
              Math.max(0, this.since + timeout - performance.now()),
            )
          : undefined;
      const cleanup = () => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        ctx?.signal.removeEventListener('abort', onAbort);
      };
      ctx?.signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
      this.startEpisode();
    });
  }

  private startEpisode(): void {
    if (this.episode !== undefined) return;
    this.episode = { id: randomUUID(), startedAt: Date.now() };
    this.onHang({ ...this.eventBase(this.episode, 'set'), kind: 'io-hang', set: true });
  }

  private endEpisode(): void {
    const episode = this.episode;
    if (episode === undefined) return;
    this.episode = undefined;
    this.onHang({
      ...this.eventBase(episode, 'clear'),
      kind: 'io-hang',
      set: false,
      durationMs: Math.max(0, Date.now() - episode.startedAt),
    });
  }

  private eventBase(episode: { id: string }, what: string): Omit<IoHangEvent, 'kind' | 'set'> {
    return {
      id: `${episode.id}-${what}`,
      volume: this.name,
      gateway: this.gatewayId,
      episode: episode.id,
      time: new Date().toISOString(),
      held: { requests: this.waiters.size, bytes: 0 },
      errorClass: 'transient',
      lastError: 'the object store did not answer when the gateway started: the volume is not taken yet',
    };
  }

  async read(offset: number, length: number, ctx: RequestContext): Promise<Buffer> {
    return (await this.volume(ctx)).read(offset, length, ctx);
  }

  /** A READ's reply left: its data goes back to the volume that read it (a lent cache view is reused then). */
  readDone(data: Buffer): void {
    this.target?.readDone?.(data);
  }

  async write(offset: number, data: Buffer, fua: boolean, ctx: RequestContext): Promise<void> {
    return (await this.volume(ctx)).write(offset, data, fua, ctx);
  }

  async flush(ctx: RequestContext): Promise<void> {
    return (await this.volume(ctx)).flush(ctx);
  }

  async trim(offset: number, length: number, fua: boolean, ctx: RequestContext): Promise<void> {
    return (await this.volume(ctx)).trim(offset, length, fua, ctx);
  }

  async writeZeroes(offset: number, length: number, options: ZeroOptions, ctx: RequestContext): Promise<void> {
    return (await this.volume(ctx)).writeZeroes(offset, length, options, ctx);
  }

  async allocation(offset: number, length: number, ctx: RequestContext): Promise<readonly AllocationExtent[]> {
    return (await this.volume(ctx)).allocation(offset, length, ctx);
  }

  async prefetch(offset: number, length: number, ctx: RequestContext): Promise<void> {
    return (await this.volume(ctx)).prefetch(offset, length, ctx);
  }

  /** Connections using the export. */
  get clients(): number {
    return this.attached;
  }

  attach(): void {
    this.attached++;
    this.target?.attach();
  }

  detach(): void {
    this.attached--;
    this.target?.detach();
  }
}
