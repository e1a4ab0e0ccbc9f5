import type { Logger } from 'pino';
import { VolumeDeposedError, VolumeExistsError, errorMessage } from '../shared/errors.js';
import type { ResolvedConfig } from './config/load-config.js';
import { volumeOptions } from './config/volume-options.js';
import type { DiskCache } from './disk-cache/disk-cache.js';
import type { EventBus } from './events/event-sink.js';
import { volumeDeposedEvent } from './events/volume-deposed.js';
import type { Owner } from './image/head.js';
import type { NbdExport } from './nbd/export.js';
import type { NbdServer } from './nbd/server.js';
import { type ObjectStore, StoreError } from './store/object-store.js';
import { VolumeCatalog } from './volume/catalog.js';
import { openVolume } from './volume/open-volume.js';
import { Volume } from './volume/volume.js';
import { VolumeWatcher } from './volume/volume-watcher.js';
import { loadShape, saveShape, volumesServedBefore, WaitingVolume } from './volume/waiting-volume.js';

/** How often a volume that could not be opened (its store unreachable) is tried again. */
const REOPEN_MS = 2000;

export interface ServedVolumesOptions {
  readonly config: ResolvedConfig;
  readonly store: ObjectStore;
  readonly logger: Logger;
  readonly events: EventBus;
  readonly gatewayId: string;
  /** What the heads this gateway writes name as their owner; asked at every take (the admin address comes late). */
  readonly owner: () => Owner;
  readonly diskCache: () => DiskCache | undefined;
  /** Withdraws a volume from NBD clients; undefined until the server runs. */
  readonly nbd: () => NbdServer | undefined;
  readonly stopping: () => boolean;
}

/**
 * The volumes this gateway serves, and those it is to serve: taking each (a volume is served only
 * once its head was read and taken), trying again in the background while the store does not answer
 * (meanwhile a stand-in holds the requests of a volume served here before), taking volumes created
 * while it runs, and letting go of one deposed by another gateway or retired by the admin API.
 */
export class ServedVolumes {
  private readonly served = new Map<string, Volume>();
  private readonly waiting = new Set<string>();
  /** Volumes served here before whose store does not answer now: offered to clients, their requests held. */
  private readonly standIns = new Map<string, WaitingVolume>();
  /** Volumes being deleted: no longer served, not to be taken again meanwhile. */
  private readonly retiring = new Set<string>();
  private watcher: VolumeWatcher | undefined;
  private reopenTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: ServedVolumesOptions) {}

  lookup(name: string): NbdExport | undefined {
    const all = this.list();
    if (name === '' && all.length === 1) return all[0];
    return this.served.get(name) ?? this.standIns.get(name);
  }

  list(): readonly NbdExport[] {
    return [...this.served.values(), ...this.standIns.values()];
  }

  get(name: string): Volume | undefined {
    return this.served.get(name);
  }

  standIn(name: string): WaitingVolume | undefined {
    return this.standIns.get(name);
  }

  /** Served and stand-ins: what the admin API reports on. */
  names(): string[] {
    return [...this.served.keys(), ...this.standIns.keys()];
  }

  volumes(): Volume[] {
    return [...this.served.values()];
  }

  /** Volumes configured but not served yet: their store did not answer. */
  get pending(): readonly string[] {
    return [...this.waiting];
  }

  /**
   * Takes every configured volume. What the store refuses for good (another gateway serves it, it is
   * still in format 1, it does not exist) stops the start; a store that does not answer leaves the
   * volume to be tried again in the background.
   */
  async openAll(): Promise<void> {
    const { config, logger } = this.opts;
    let names: string[];
    try {
      names = await this.volumeNames();
    } catch (err) {
      if (!(err instanceof StoreError)) throw err;
      logger.warn({ err: errorMessage(err) }, 'object store unreachable at start; volumes are served once it answers');
      const known = config.volumes.length > 0 ? [...config.volumes] : await volumesServedBefore(config.journalRoot);
      for (const name of known) await this.waitFor(name);
      if (config.volumes.length === 0) this.waiting.add('*');
      this.scheduleReopen();
      return;
    }
    for (const name of names) {
      try {
        await this.open(name);
      } catch (err) {
        if (!(err instanceof StoreError)) throw err;
        logger.warn({ volume: name, err: errorMessage(err) }, 'object store unreachable: volume not served until it answers');
        await this.waitFor(name);
      }
    }
    if (this.waiting.size > 0) this.scheduleReopen();
  }

  /** A gateway told to serve every volume serves those created while it runs, too (docs/volume-format-2.md, "Live volumes"). */
  watchForVolumes(): void {
    const { config } = this.opts;
    if (config.volumes.length > 0 || config.volumePoll <= 0) return;
    this.watcher = new VolumeWatcher({
      store: this.opts.store,
      intervalMs: config.volumePoll,
      logger: this.opts.logger,
      known: (name) => this.served.has(name) || this.waiting.has(name) || this.waiting.has('*') || this.retiring.has(name),
      take: (name) => this.open(name),
    });
    this.watcher.start();
  }

  /**
   * Stops offering the volume (the watcher leaves its name alone until `forgotten`), closes its
   * connections after their requests in flight, and closes it; resolves with the connections closed.
   */
  async retire(volume: Volume): Promise<number> {
    this.retiring.add(volume.name);
    if (this.served.get(volume.name) === volume) this.served.delete(volume.name);
    const closed = (await this.opts.nbd()?.withdraw(volume.name, this.opts.config.shutdownGrace)) ?? 0;
    await volume.close();
    return closed;
  }

  forgotten(name: string): void {
    this.retiring.delete(name);
  }

  /** Keeps the volume's shape in its journal directory, so a restart can offer it before the store answers. */
  async saveShapeOf(volume: Volume): Promise<void> {
    const { name, size, extentSize, head } = volume;
    await saveShape(Volume.journalDirFor(this.opts.config.journalRoot, name), {
      name,
      size,
      extentSize,
      readOnly: head.readOnly,
      createdAt: head.createdAt,
    });
  }

  /**
   * Takes no more volumes and holds no more requests: held requests are dropped (their clients are
   * about to lose the connection anyway), so the shutdown grace is spent on requests that can finish.
   */
  stopTaking(): void {
    if (this.reopenTimer !== undefined) clearTimeout(this.reopenTimer);
    this.watcher?.stop();
    for (const volume of this.served.values()) volume.stopHolding();
    for (const standIn of this.standIns.values()) standIn.abandon('gateway shutting down before the volume could be taken');
  }

  /** Ships what is left in the journals while half the grace lasts, then hands each volume back. */
  async closeAll(graceMs: number): Promise<void> {
    await Promise.all(
      [...this.served.values()].map(async (v) => {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([v.drain().catch(() => undefined), new Promise<void>((r) => (timer = setTimeout(r, graceMs / 2)))]);
        clearTimeout(timer);
        await v.close({ release: true });
      }),
    );
    this.served.clear();
  }

  /**
   * A volume to take once the store answers. If it was served here before, clients find it meanwhile
   * (its shape is in its journal directory) and their requests wait, held, for it.
   */
  private async waitFor(name: string): Promise<void> {
    this.waiting.add(name);
    if (this.standIns.has(name)) return;
    const shape = await loadShape(Volume.journalDirFor(this.opts.config.journalRoot, name));
    if (shape !== undefined)
      this.standIns.set(
        name,
        new WaitingVolume(
          shape,
          () => this.opts.config.hangTimeout,
          (event) => {
            this.opts.events.publish(event);
          },
          this.opts.gatewayId,
        ),
      );
  }

  private async volumeNames(): Promise<string[]> {
    const { config, store, logger } = this.opts;
    const catalog = new VolumeCatalog(store);
    const wanted = config.volumes;
    const auto = config.createVolume;
    if (auto !== undefined && (wanted.length === 0 || wanted.includes(auto.name)) && !(await catalog.exists(auto.name))) {
      try {
        await catalog.create({ name: auto.name, size: auto.size, extentSize: config.extentSize });
        logger.info({ volume: auto.name, size: auto.size }, 'created volume');
      } catch (err) {
        // Another gateway created it a moment ago: taking it decides which of us serves it.
        if (!(err instanceof VolumeExistsError)) throw err;
      }
    }
    if (wanted.length > 0) return [...wanted];
    return (await catalog.list()).map((v) => v.shape.name);
  }

  private async open(name: string): Promise<void> {
    const { config, store, logger } = this.opts;
    const owner = this.opts.owner();
    const size = (await new VolumeCatalog(store).get(name)).size;
    // The callback may only fire once the volume is served: it names that very volume, never a later one.
    let opened: Volume | undefined;
    const volume = await openVolume(
      volumeOptions(config, name, size, store, owner, logger, {
        events: this.opts.events,
        gatewayId: this.opts.gatewayId,
        onDeposed: (err) => {
          if (opened !== undefined) this.deposed(opened, err);
        },
        diskCache: this.opts.diskCache(),
      }),
    );
    opened = volume;
    if (this.opts.stopping()) {
      await volume.close({ release: true });
      return;
    }
    await this.saveShapeOf(volume);
    this.served.set(name, volume);
    this.waiting.delete(name);
    const standIn = this.standIns.get(name);
    this.standIns.delete(name);
    standIn?.ready(volume);
    logger.info({ volume: name, epoch: volume.head.epoch, seq: volume.head.seq }, 'serving volume');
  }

  private scheduleReopen(): void {
    if (this.reopenTimer !== undefined || this.opts.stopping()) return;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = undefined;
      void this.reopen();
    }, REOPEN_MS);
    this.reopenTimer.unref();
  }

  private async reopen(): Promise<void> {
    const { logger } = this.opts;
    if (this.waiting.has('*')) {
      try {
        const names = await this.volumeNames();
        this.waiting.delete('*');
        for (const n of names) if (!this.served.has(n)) this.waiting.add(n);
      } catch (err) {
        logger.debug({ err: errorMessage(err) }, 'object store still unreachable');
      }
    }
    for (const name of [...this.waiting]) {
      if (name === '*' || this.opts.stopping()) continue;
      try {
        await this.open(name);
      } catch (err) {
        if (err instanceof StoreError) continue;
        this.waiting.delete(name);
        this.standIns.get(name)?.abandon(`volume ${name} cannot be served: ${errorMessage(err)}`);
        this.standIns.delete(name);
        logger.error({ volume: name, err: errorMessage(err) }, 'volume cannot be served');
      }
    }
    if (this.waiting.size > 0) this.scheduleReopen();
  }

  /** Another gateway took the volume: withdraw it, so its clients reconnect to the new owner. */
  private deposed(volume: Volume, err: VolumeDeposedError): void {
    if (this.served.get(volume.name) !== volume) return;
    this.served.delete(volume.name);
    void this.opts.nbd()?.withdraw(volume.name, this.opts.config.shutdownGrace);
    this.opts.events.publish(volumeDeposedEvent(volume.name, this.opts.gatewayId, volume.head.epoch, err.message));
    void volume.close().catch((e: unknown) => {
      this.opts.logger.warn({ err: e, volume: volume.name }, 'closing a deposed volume failed');
    });
  }
}
