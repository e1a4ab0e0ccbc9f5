import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { volumeDeposedEvent } from './events/volume-deposed.js';
import { AdminServer } from './admin/admin-server.js';
import { GatewayMetrics } from './admin/metrics.js';
import { diskCacheStatus, volumeStatus, waitingStatus } from './admin/volume-status.js';
import { policyDocument } from '../shared/hang-policy.js';
import { EventBus, type EventSink } from './events/event-sink.js';
import { openEventSinks } from './events/open-sinks.js';
import { type DiskCache, openDiskCache } from './disk-cache/disk-cache.js';
import { VolumeDeposedError, VolumeExistsError, errorMessage } from '../shared/errors.js';
import type { ResolvedConfig } from './config/load-config.js';
import { volumeOptions } from './config/volume-options.js';
import { processFailpoints } from './failpoints.js';
import { collectGarbage, type GcReport } from './image/gc.js';
import type { VolumeStorage } from './admin/storage-routes.js';
import { ownerIdentity } from './image/take-volume.js';
import type { ExportRegistry, NbdExport } from './nbd/export.js';
import { FileSecurity } from './nbd/security.js';
import { NbdServer, type BoundAddress } from './nbd/server.js';
import { type ObjectStore, StoreError } from './store/object-store.js';
import { openStore } from './store/open-store.js';
import { VolumeCatalog } from './volume/catalog.js';
import { journalIdentity } from './volume/journal-identity.js';
import { openVolume } from './volume/open-volume.js';
import { Volume } from './volume/volume.js';
import { loadShape, saveShape, volumesServedBefore, WaitingVolume } from './volume/waiting-volume.js';
import { servedVolumeStorage } from './served-volume-storage.js';
import { VolumeWatcher } from './volume/volume-watcher.js';

import { configuredHangPolicy } from './config/volume-options.js';

export { configuredHangPolicy };

/** How often a volume that could not be opened (its store unreachable) is tried again. */
const REOPEN_MS = 2000;

/**
 * The long-running task: takes and serves every configured volume over NBD, runs garbage collection,
 * and shuts down without losing anything acknowledged. A volume is served only once its head was read
 * and taken; while the store is unreachable at start, it is tried again in the background.
 */
export class Gateway implements ExportRegistry {
  private readonly served = new Map<string, Volume>();
  private readonly waiting = new Set<string>();
  /** Volumes served here before whose store does not answer now: offered to clients, their requests held. */
  private readonly standIns = new Map<string, WaitingVolume>();
  /** Volumes being deleted: no longer served, not to be taken again meanwhile. */
  private readonly retiring = new Set<string>();
  private watcher: VolumeWatcher | undefined;
  private nbd: NbdServer | undefined;
  private security: FileSecurity | undefined;
  private admin: AdminServer | undefined;
  private stopping: Promise<void> | undefined;
  private reopenTimer: NodeJS.Timeout | undefined;
  private gcTimer: NodeJS.Timeout | undefined;
  private gcRunning: Promise<GcReport> | undefined;
  private journalId = '';
  private diskCache: DiskCache | undefined;
  readonly startedAt = new Date();
  readonly events: EventBus;
  readonly metrics: GatewayMetrics;
  readonly gatewayId: string;
  /** Where NBD clients connect, in the order of --listen. */
  readonly listeners: BoundAddress[] = [];
  adminAddress: AddressInfo | undefined;

  private constructor(
    readonly config: ResolvedConfig,
    readonly store: ObjectStore,
    private readonly logger: Logger,
    sinks: readonly EventSink[],
  ) {
    this.gatewayId = config.gatewayId ?? hostname();
    this.events = new EventBus(sinks, logger);
    const sources = { volumes: () => [...this.served.values()], nbd: () => this.nbd?.stats, events: () => this.events.deliveryCounters() };
    this.metrics = new GatewayMetrics({ ...sources, diskCache: () => this.diskCache?.stats() });
  }

  static async start(config: ResolvedConfig, logger: Logger): Promise<Gateway> {
    const store = openStore(config);
    const gateway = new Gateway(config, store, logger, await openEventSinks(config, logger));
    try {
      gateway.security = await FileSecurity.load({
        tls: config.tls,
        files: { cert: config.tlsCert, key: config.tlsKey, ca: config.tlsCa, psk: config.tlsPsk },
        accessFile: config.nbdAccess,
      });
      // The admin API first: its address goes into every head this gateway writes, so CLI commands
      // can find the gateway that serves a volume.
      gateway.admin = new AdminServer({
        sources: {
          volumeNames: () => [...gateway.served.keys(), ...gateway.standIns.keys()],
          status: (name) => {
            const volume = gateway.volume(name);
            if (volume !== undefined) return volumeStatus(volume);
            const standIn = gateway.standIns.get(name);
            return standIn === undefined
              ? undefined
              : waitingStatus(standIn, policyDocument(configuredHangPolicy(config)), gateway.startedAt);
          },
          hangControl: (name) => gateway.volume(name)?.hang,
          storage: (name) => gateway.storageOf(name),
          healthy: () => gateway.stopping === undefined && gateway.listeners.length > 0,
          events: (volume) => gateway.events.history(volume),
          gatewayId: gateway.gatewayId,
          gc: (dryRun) => gateway.collectGarbage(dryRun),
          diskCache: () => (gateway.diskCache === undefined ? undefined : diskCacheStatus(gateway.diskCache.stats())),
        },
        metrics: gateway.metrics,
        logger: logger.child({ component: 'admin' }),
        token: config.adminToken,
      });
      gateway.adminAddress = await gateway.admin.listen(config.admin.host, config.admin.port);
      gateway.journalId = await journalIdentity(config.journalRoot);
      gateway.diskCache = await openDiskCache(config.diskCache, store.location, logger);
      await gateway.openVolumes();
      const nbd = new NbdServer({
        registry: gateway,
        logger,
        security: gateway.security,
        handshakeTimeoutMs: config.nbdHandshakeTimeout,
        maxConnections: config.nbdMaxConnections,
        maxConnectionsPerPeer: config.nbdMaxConnectionsPerPeer,
        limits: { idleTimeoutMs: config.nbdIdleTimeout },
        bufferMemory: config.nbdBufferMemory,
        observeLatency: (volume, cmd, s) => {
          gateway.metrics.observeNbdLatency(volume, cmd, s);
        },
      });
      gateway.nbd = nbd;
      for (const target of config.listen) gateway.listeners.push(await nbd.listen(target));
      gateway.scheduleGc();
      gateway.watchForVolumes();
    } catch (err) {
      await gateway.shutdown(0);
      throw err;
    }
    return gateway;
  }

  lookup(name: string): NbdExport | undefined {
    const all = this.list();
    if (name === '' && all.length === 1) return all[0];
    return this.served.get(name) ?? this.standIns.get(name);
  }

  list(): readonly NbdExport[] {
    return [...this.served.values(), ...this.standIns.values()];
  }

  volume(name: string): Volume | undefined {
    return this.served.get(name);
  }

  /** What the admin API may do with a served volume's storage: snapshots, compaction, resize, delete. */
  storageOf(name: string): VolumeStorage | undefined {
    const volume = this.served.get(name);
    if (volume === undefined) return undefined;
    return servedVolumeStorage(volume, {
      store: this.store,
      journalRoot: this.config.journalRoot,
      retire: (v) => this.retire(v),
      forgotten: (n) => this.retiring.delete(n),
      resized: (v) => this.saveShapeOf(v),
    });
  }

  /** A gateway told to serve every volume serves those created while it runs, too (docs/volume-format-2.md, "Live volumes"). */
  private watchForVolumes(): void {
    if (this.config.volumes.length > 0 || this.config.volumePoll <= 0) return;
    this.watcher = new VolumeWatcher({
      store: this.store,
      intervalMs: this.config.volumePoll,
      logger: this.logger,
      known: (name) => this.served.has(name) || this.waiting.has(name) || this.waiting.has('*') || this.retiring.has(name),
      take: (name) => this.open(name),
    });
    this.watcher.start();
  }

  private async retire(volume: Volume): Promise<number> {
    this.retiring.add(volume.name);
    if (this.served.get(volume.name) === volume) this.served.delete(volume.name);
    const closed = (await this.nbd?.withdraw(volume.name, this.config.shutdownGrace)) ?? 0;
    await volume.close();
    return closed;
  }

  private async saveShapeOf(volume: Volume): Promise<void> {
    const { name, size, extentSize, head } = volume;
    await saveShape(Volume.journalDirFor(this.config.journalRoot, name), {
      name,
      size,
      extentSize,
      readOnly: head.readOnly,
      createdAt: head.createdAt,
    });
  }

  /** Volumes configured but not served yet: their store did not answer. */
  get pending(): readonly string[] {
    return [...this.waiting];
  }

  private adminEndpoint(): string | null {
    const a = this.adminAddress;
    if (a === undefined) return null;
    const host = a.address === '0.0.0.0' || a.address === '::' ? hostname() : a.address;
    return `${host.includes(':') ? `[${host}]` : host}:${a.port}`;
  }

  /**
   * Rereads the TLS certificate, key, CA, PSK file and access file (SIGHUP). Connections keep
   * their sessions; new handshakes and options use the new material. A bad file changes nothing.
   */
  async reloadSecurity(): Promise<void> {
    await this.security?.reload();
  }

  /**
   * Takes every configured volume. What the store refuses for good (another gateway serves it, it is
   * still in format 1, it does not exist) stops the start; a store that does not answer leaves the
   * volume to be tried again in the background.
   */
  private async openVolumes(): Promise<void> {
    let names: string[];
    try {
      names = await this.volumeNames();
    } catch (err) {
      if (!(err instanceof StoreError)) throw err;
      this.logger.warn({ err: errorMessage(err) }, 'object store unreachable at start; volumes are served once it answers');
      const known = this.config.volumes.length > 0 ? [...this.config.volumes] : await volumesServedBefore(this.config.journalRoot);
      for (const name of known) await this.waitFor(name);
      if (this.config.volumes.length === 0) this.waiting.add('*');
      this.scheduleReopen();
      return;
    }
    for (const name of names) {
      try {
        await this.open(name);
      } catch (err) {
        if (!(err instanceof StoreError)) throw err;
        this.logger.warn({ volume: name, err: errorMessage(err) }, 'object store unreachable: volume not served until it answers');
        await this.waitFor(name);
      }
    }
    if (this.waiting.size > 0) this.scheduleReopen();
  }

  /**
   * A volume to take once the store answers. If it was served here before, clients find it meanwhile
   * (its shape is in its journal directory) and their requests wait, held, for it.
   */
  private async waitFor(name: string): Promise<void> {
    this.waiting.add(name);
    if (this.standIns.has(name)) return;
    const shape = await loadShape(Volume.journalDirFor(this.config.journalRoot, name));
    if (shape !== undefined)
      this.standIns.set(
        name,
        new WaitingVolume(
          shape,
          () => this.config.hangTimeout,
          (event) => {
            this.events.publish(event);
          },
          this.gatewayId,
        ),
      );
  }

  private async volumeNames(): Promise<string[]> {
    const catalog = new VolumeCatalog(this.store);
    const wanted = this.config.volumes;
    const auto = this.config.createVolume;
    if (auto !== undefined && (wanted.length === 0 || wanted.includes(auto.name)) && !(await catalog.exists(auto.name))) {
      try {
        await catalog.create({ name: auto.name, size: auto.size, extentSize: this.config.extentSize });
        this.logger.info({ volume: auto.name, size: auto.size }, 'created volume');
      } catch (err) {
        // Another gateway created it a moment ago: taking it decides which of us serves it.
        if (!(err instanceof VolumeExistsError)) throw err;
      }
    }
    if (wanted.length > 0) return [...wanted];
    return (await catalog.list()).map((v) => v.shape.name);
  }

  private async open(name: string): Promise<void> {
    const owner = ownerIdentity(this.gatewayId, this.journalId, this.adminEndpoint());
    const size = (await new VolumeCatalog(this.store).get(name)).size;
    // The callback may only fire once the volume is served: it names that very volume, never a later one.
    let opened: Volume | undefined;
    const volume = await openVolume(
      volumeOptions(this.config, name, size, this.store, owner, this.logger, {
        events: this.events,
        gatewayId: this.gatewayId,
        onDeposed: (err) => {
          if (opened !== undefined) this.deposed(opened, err);
        },
        diskCache: this.diskCache,
      }),
    );
    opened = volume;
    if (this.stopping !== undefined) {
      await volume.close({ release: true });
      return;
    }
    await this.saveShapeOf(volume);
    this.served.set(name, volume);
    this.waiting.delete(name);
    const standIn = this.standIns.get(name);
    this.standIns.delete(name);
    standIn?.ready(volume);
    this.logger.info({ volume: name, epoch: volume.head.epoch, seq: volume.head.seq }, 'serving volume');
  }

  private scheduleReopen(): void {
    if (this.reopenTimer !== undefined || this.stopping !== undefined) return;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = undefined;
      void this.reopen();
    }, REOPEN_MS);
    this.reopenTimer.unref();
  }

  private async reopen(): Promise<void> {
    if (this.waiting.has('*')) {
      try {
        const names = await this.volumeNames();
        this.waiting.delete('*');
        for (const n of names) if (!this.served.has(n)) this.waiting.add(n);
      } catch (err) {
        this.logger.debug({ err: errorMessage(err) }, 'object store still unreachable');
      }
    }
    for (const name of [...this.waiting]) {
      if (name === '*' || this.stopping !== undefined) continue;
      try {
        await this.open(name);
      } catch (err) {
        if (err instanceof StoreError) continue;
        this.waiting.delete(name);
        this.standIns.get(name)?.abandon(`volume ${name} cannot be served: ${errorMessage(err)}`);
        this.standIns.delete(name);
        this.logger.error({ volume: name, err: errorMessage(err) }, 'volume cannot be served');
      }
    }
    if (this.waiting.size > 0) this.scheduleReopen();
  }

  /** Another gateway took the volume: withdraw it, so its clients reconnect to the new owner. */
  private deposed(volume: Volume, err: VolumeDeposedError): void {
    if (this.served.get(volume.name) !== volume) return;
    this.served.delete(volume.name);
    void this.nbd?.withdraw(volume.name, this.config.shutdownGrace);
    this.events.publish(volumeDeposedEvent(volume.name, this.gatewayId, volume.head.epoch, err.message));
    void volume.close().catch((e: unknown) => {
      this.logger.warn({ err: e, volume: volume.name }, 'closing a deposed volume failed');
    });
  }

  /** Collects garbage in the whole store now (one at a time). */
  collectGarbage(dryRun = false): Promise<GcReport> {
    this.gcRunning ??= collectGarbage(this.store, {
      graceMs: this.config.gcGrace,
      dryRun,
      logger: this.logger.child({ component: 'gc' }),
      failpoints: processFailpoints,
    }).finally(() => {
      this.gcRunning = undefined;
    });
    return this.gcRunning;
  }

  private scheduleGc(): void {
    const every = this.config.gcInterval;
    if (every <= 0 || this.stopping !== undefined) return;
    // Jittered, so that gateways started together do not list the bucket together.
    this.gcTimer = setTimeout(
      () => {
        this.collectGarbage()
          .catch((err: unknown) => {
            this.logger.warn({ err: errorMessage(err) }, 'garbage collection failed; will try again');
          })
          .finally(() => {
            this.scheduleGc();
          });
      },
      every * (0.75 + Math.random() / 2),
    );
    this.gcTimer.unref();
  }

  /** Stops accepting clients, lets requests in flight finish, syncs every journal. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown(this.config.shutdownGrace);
    return this.stopping;
  }

  /**
   * Held requests are dropped first (their clients are about to lose the connection anyway), so that
   * the grace period is spent finishing requests that can finish, not waiting on storage. A volume whose
   * journal is all in the store is handed back, so another gateway can take it at once.
   */
  private async shutdown(graceMs: number): Promise<void> {
    this.stopping ??= Promise.resolve();
    if (this.reopenTimer !== undefined) clearTimeout(this.reopenTimer);
    if (this.gcTimer !== undefined) clearTimeout(this.gcTimer);
    this.watcher?.stop();
    for (const volume of this.served.values()) volume.hang.close();
    for (const standIn of this.standIns.values()) standIn.abandon('gateway shutting down before the volume could be taken');
    await this.nbd?.close(graceMs);
    // What is left in the journals is shipped while the grace lasts; a volume fully in the store is handed back.
    await Promise.all(
      [...this.served.values()].map(async (v) => {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([v.drain().catch(() => undefined), new Promise<void>((r) => (timer = setTimeout(r, graceMs / 2)))]);
        clearTimeout(timer);
        await v.close({ release: true });
      }),
    );
    this.served.clear();
    await this.diskCache?.close();
    await this.gcRunning?.catch(() => undefined);
    await this.admin?.close();
    await this.events.close();
    await this.store.close();
  }
}
