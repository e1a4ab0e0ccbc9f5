import { mkdir, readFile, readdir, rename, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { DEFAULT_CLASS_ACTIONS, type HangPolicy } from '../shared/hang-policy.js';
import { AdminServer } from './admin/admin-server.js';
import { GatewayMetrics } from './admin/metrics.js';
import { EventBus, type EventSink } from './events/event-sink.js';
import { openEventSinks } from './events/open-sinks.js';
import { VolumeNotFoundError, errorMessage } from '../shared/errors.js';
import type { VolumeManifest } from '../shared/volume-manifest.js';
import type { ResolvedConfig } from './config/load-config.js';
import { volumeOptions } from './config/volume-options.js';
import type { ExportRegistry, NbdExport } from './nbd/export.js';
import { NbdServer } from './nbd/server.js';
import type { ObjectStore } from './store/object-store.js';
import { openStore } from './store/open-store.js';
import { VolumeCatalog, parseManifest } from './volume/catalog.js';
import { Volume } from './volume/volume.js';
import { VolumeLock, journalIdentity } from './volume/volume-lock.js';

/** The hang policy every volume starts with, from the configuration. */
export function configuredHangPolicy(config: ResolvedConfig): HangPolicy {
  return {
    timeout: config.hangTimeout,
    classes: { ...DEFAULT_CLASS_ACTIONS, ...config.hangPolicy },
    retryMaxMs: config.retryMax,
  };
}

interface ServedVolume {
  readonly volume: Volume;
  readonly lock: VolumeLock;
}

/**
 * The long-running task: opens the store, replays and serves every configured volume over NBD,
 * and shuts down without losing anything acknowledged.
 */
export class Gateway implements ExportRegistry {
  private readonly served = new Map<string, ServedVolume>();
  private nbd: NbdServer | undefined;
  private admin: AdminServer | undefined;
  private stopping: Promise<void> | undefined;
  readonly events: EventBus;
  readonly metrics: GatewayMetrics;
  readonly gatewayId: string;
  address: AddressInfo | undefined;
  adminAddress: AddressInfo | undefined;

  private constructor(
    readonly config: ResolvedConfig,
    readonly store: ObjectStore,
    private readonly logger: Logger,
    sinks: readonly EventSink[],
  ) {
    this.gatewayId = config.gatewayId ?? hostname();
    this.events = new EventBus(sinks, logger);
    this.metrics = new GatewayMetrics({ volumes: () => this.list() as Volume[], nbd: () => this.nbd?.stats, events: () => this.events.deliveryCounters() });
  }

  static async start(config: ResolvedConfig, logger: Logger): Promise<Gateway> {
    const store = openStore(config);
    const gateway = new Gateway(config, store, logger, await openEventSinks(config, logger));
    try {
      await gateway.openVolumes();
      const nbd = new NbdServer({ registry: gateway, logger, observeLatency: (volume, cmd, s) => gateway.metrics.observeNbdLatency(volume, cmd, s) });
      gateway.nbd = nbd;
      gateway.address = await nbd.listen(config.listen.host, config.listen.port);
      gateway.admin = new AdminServer({
        sources: {
          volumes: () => [...gateway.served.values()].map((s) => s.volume),
          volume: (name) => gateway.volume(name),
          healthy: () => gateway.stopping === undefined && gateway.address !== undefined,
          events: (volume) => gateway.events.history(volume),
          gatewayId: gateway.gatewayId,
        },
        metrics: gateway.metrics,
        logger: logger.child({ component: 'admin' }),
        token: config.adminToken,
      });
      gateway.adminAddress = await gateway.admin.listen(config.admin.host, config.admin.port);
    } catch (err) {
      await gateway.nbd?.close(0);
      await gateway.closeVolumes();
      await gateway.events.close();
      await store.close();
      throw err;
    }
    return gateway;
  }

  lookup(name: string): NbdExport | undefined {
    if (name === '' && this.served.size === 1) return this.served.values().next().value?.volume;
    return this.served.get(name)?.volume;
  }

  list(): readonly NbdExport[] {
    return [...this.served.values()].map((s) => s.volume);
  }

  volume(name: string): Volume | undefined {
    return this.served.get(name)?.volume;
  }

  get nbdStats(): NbdServer['stats'] | undefined {
    return this.nbd?.stats;
  }

  private async openVolumes(): Promise<void> {
    const manifests = await this.manifestsToServe();
    const journalId = await journalIdentity(this.config.journalRoot);
    for (const manifest of manifests) {
      const journalDir = Volume.journalDirFor(this.config.journalRoot, manifest.name);
      const lock = await VolumeLock.acquire({ name: manifest.name, journalDir, journalId, store: this.store, logger: this.logger });
      try {
        await saveLocalManifest(journalDir, manifest);
        const volume = await Volume.open({
          ...volumeOptions(this.config, manifest, this.store, this.logger),
          forceReadOnly: this.config.readOnly,
          hangPolicy: configuredHangPolicy(this.config),
          events: this.events,
          gatewayId: this.gatewayId,
        });
        this.served.set(manifest.name, { volume, lock });
      } catch (err) {
        await lock.release();
        throw err;
      }
    }
  }

  /**
   * The manifests come from the store; when it is unreachable, from the copies kept in the journal
   * directory, so that a restart during an outage still serves (and replays) every volume.
   */
  private async manifestsToServe(): Promise<VolumeManifest[]> {
    const catalog = new VolumeCatalog(this.store);
    const wanted = this.config.volumes;
    try {
      const auto = this.config.createVolume;
      if (auto !== undefined && (wanted.length === 0 || wanted.includes(auto.name)) && !(await catalog.exists(auto.name))) {
        await catalog.create({ name: auto.name, size: auto.size, extentSize: this.config.extentSize });
        this.logger.info({ volume: auto.name, size: auto.size }, 'created volume');
      }
      if (wanted.length === 0) return await catalog.list();
      return await Promise.all(wanted.map((name) => catalog.get(name)));
    } catch (err) {
      if (err instanceof VolumeNotFoundError) throw err;
      this.logger.warn({ err: errorMessage(err) }, 'object store unreachable at start; serving from the journal directory');
      const local = await loadLocalManifests(this.config.journalRoot);
      const chosen = wanted.length === 0 ? local : local.filter((m) => wanted.includes(m.name));
      if (chosen.length === 0 || (wanted.length > 0 && chosen.length < wanted.length)) throw err;
      return chosen;
    }
  }

  /** Stops accepting clients, lets requests in flight finish, syncs every journal. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  /**
   * Held requests are dropped first (their clients are about to lose the connection anyway), so
   * that the grace period is spent finishing requests that can finish, not waiting on storage.
   */
  private async doStop(): Promise<void> {
    for (const { volume } of this.served.values()) volume.hang.close();
    await this.nbd?.close(this.config.shutdownGrace);
    await this.closeVolumes();
    await this.admin?.close();
    await this.events.close();
    await this.store.close();
  }

  private async closeVolumes(): Promise<void> {
    await Promise.all(
      [...this.served.values()].map(async ({ volume, lock }) => {
        await volume.close();
        await lock.release();
      }),
    );
    this.served.clear();
  }
}

async function saveLocalManifest(journalDir: string, manifest: VolumeManifest): Promise<void> {
  await mkdir(journalDir, { recursive: true });
  const path = join(journalDir, 'manifest.json');
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify(manifest, null, 2), { flush: true });
  await rename(tmp, path);
}

async function loadLocalManifests(journalRoot: string): Promise<VolumeManifest[]> {
  const out: VolumeManifest[] = [];
  let names: string[];
  try {
    names = await readdir(journalRoot);
  } catch {
    return out;
  }
  for (const name of names) {
    const path = join(journalRoot, name, 'manifest.json');
    const body = await readFile(path).catch(() => undefined);
    if (body !== undefined) out.push(parseManifest(body, path));
  }
  return out;
}
