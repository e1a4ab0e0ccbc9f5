// The top level of gateway/ owns the long-running task: this file wires it up at start (admin API,
// disk cache, volumes, NBD listeners, GC) and shuts it down; served-volumes.ts takes, serves and
// lets go of volumes; served-volume-storage.ts is what the admin API may do with a served volume's
// storage; main.ts is the binary's entry point, logger.ts and failpoints.ts what every part shares.
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { AdminServer } from './admin/admin-server.js';
import { GatewayMetrics } from './admin/metrics.js';
import { diskCacheStatus, volumeStatus, waitingStatus } from './admin/volume-status.js';
import { policyDocument } from '../shared/hang-policy.js';
import { EventBus, type EventSink } from './events/event-sink.js';
import { openEventSinks } from './events/open-sinks.js';
import { type DiskCache, openDiskCache } from './disk-cache/disk-cache.js';
import { errorMessage } from '../shared/errors.js';
import type { ResolvedConfig } from './config/load-config.js';
import { configuredHangPolicy } from './config/volume-options.js';
import { processFailpoints } from './failpoints.js';
import { collectGarbage, type GcReport } from './image/gc.js';
import type { VolumeStorage } from './admin/storage-routes.js';
import { ownerIdentity } from './image/take-volume.js';
import type { ExportRegistry, NbdExport } from './nbd/export.js';
import { FileSecurity } from './nbd/security.js';
import { NbdServer, type BoundAddress } from './nbd/server.js';
import type { ObjectStore } from './store/object-store.js';
import { openStore } from './store/open-store.js';
import { journalIdentity } from './volume/journal-identity.js';
import type { Volume } from './volume/volume.js';
import { MemoryLimit } from './memory-limit.js';
import { MEMORY_HEADROOM_BYTES } from '../shared/config.js';
import { servedVolumeStorage } from './served-volume-storage.js';
import { ServedVolumes } from './served-volumes.js';

/**
 * The long-running task: takes and serves every configured volume over NBD, runs garbage collection,
 * and shuts down without losing anything acknowledged. A volume is served only once its head was read
 * and taken; while the store is unreachable at start, it is tried again in the background.
 */
export class Gateway implements ExportRegistry {
  private readonly volumes: ServedVolumes;
  private nbd: NbdServer | undefined;
  private security: FileSecurity | undefined;
  private admin: AdminServer | undefined;
  private stopping: Promise<void> | undefined;
  private gcTimer: NodeJS.Timeout | undefined;
  private gcRunning: Promise<GcReport> | undefined;
  private journalId = '';
  private diskCache: DiskCache | undefined;
  private memoryLimit: MemoryLimit | undefined;
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
    this.volumes = new ServedVolumes({
      config,
      store,
      logger,
      events: this.events,
      gatewayId: this.gatewayId,
      owner: () => ownerIdentity(this.gatewayId, this.journalId, this.adminEndpoint()),
      diskCache: () => this.diskCache,
      nbd: () => this.nbd,
      stopping: () => this.stopping !== undefined,
    });
    const sources = { volumes: () => this.volumes.volumes(), nbd: () => this.nbd?.stats, events: () => this.events.deliveryCounters() };
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
          volumeNames: () => gateway.volumes.names(),
          status: (name) => {
            const volume = gateway.volume(name);
            if (volume !== undefined) return volumeStatus(volume.status());
            const standIn = gateway.volumes.standIn(name);
            return standIn === undefined
              ? undefined
              : waitingStatus(standIn, policyDocument(configuredHangPolicy(config)), gateway.startedAt);
          },
          hangControl: (name) => gateway.volume(name)?.hangControl(),
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
      await gateway.volumes.openAll();
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
      gateway.limitMemory();
      gateway.volumes.watchForVolumes();
    } catch (err) {
      await gateway.shutdown(0);
      throw err;
    }
    return gateway;
  }

  lookup(name: string): NbdExport | undefined {
    return this.volumes.lookup(name);
  }

  list(): readonly NbdExport[] {
    return this.volumes.list();
  }

  volume(name: string): Volume | undefined {
    return this.volumes.get(name);
  }

  /** What the admin API may do with a served volume's storage: snapshots, compaction, resize, delete. */
  storageOf(name: string): VolumeStorage | undefined {
    const volume = this.volumes.get(name);
    if (volume === undefined) return undefined;
    return servedVolumeStorage(volume, {
      store: this.store,
      journalRoot: this.config.journalRoot,
      retire: (v) => this.volumes.retire(v),
      forgotten: (n) => {
        this.volumes.forgotten(n);
      },
      resized: (v) => this.volumes.saveShapeOf(v),
    });
  }

  /** Volumes configured but not served yet: their store did not answer. */
  get pending(): readonly string[] {
    return this.volumes.pending;
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

  /** `--memory-limit`: the caches give up room while the rest of the process grows (memory-limit.ts). */
  private limitMemory(): void {
    const setting = this.config.memoryLimit;
    if (setting === 0) return;
    const volumes = (): Volume[] => this.volumes.volumes();
    const limitBytes =
      setting === 'auto' ? () => volumes().reduce((sum, v) => sum + v.cacheMaxBytes, MEMORY_HEADROOM_BYTES) : () => setting;
    this.memoryLimit = new MemoryLimit({ limitBytes, caches: volumes, logger: this.logger.child({ component: 'memory' }) });
    this.memoryLimit.start();
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
    if (this.gcTimer !== undefined) clearTimeout(this.gcTimer);
    this.memoryLimit?.stop();
    this.volumes.stopTaking();
    await this.nbd?.close(graceMs);
    await this.volumes.closeAll(graceMs);
    await this.diskCache?.close();
    await this.gcRunning?.catch(() => undefined);
    await this.admin?.close();
    await this.events.close();
    await this.store.close();
  }
}
