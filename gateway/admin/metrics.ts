import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { DiskCacheStats } from '../disk-cache/cache-stats.js';
import type { EventDeliveryCounters } from '../events/event-sink.js';
import type { CommandName } from '../nbd/constants.js';
import type { NbdStats } from '../nbd/stats.js';
import type { VolumeSnapshot } from '../volume/volume.js';
import { LatencyHistogram, type LatencySeries } from './latency-histogram.js';

/** Upper bounds (seconds) of the NBD latency buckets: cache hits are tens of µs, held requests seconds. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** Label values are snake_case, as Prometheus' own are: `writeZeroes` is `write_zeroes`. */
export function commandLabel(command: string): string {
  return command.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/**
 * prom-client's default metrics that are gauges named like counters (promtool refuses them); the
 * same numbers are in their `{type}`-labelled siblings without the suffix.
 */
const GAUGES_NAMED_TOTAL = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** A served volume as metrics read it: its name and what `Volume.status()` answers. */
export interface MetricsVolume {
  readonly name: string;
  status(): VolumeSnapshot;
}

export interface MetricsSources {
  readonly volumes: () => readonly MetricsVolume[];
  readonly nbd: () => NbdStats | undefined;
  readonly events?: () => readonly EventDeliveryCounters[];
  /** The disk cache tier, when the gateway has one. */
  readonly diskCache?: () => DiskCacheStats | undefined;
}

/**
 * The gateway's Prometheus metrics. Everything but the latency histogram is read from the volumes'
 * and the server's own counters at scrape time, so the data path pays nothing for them.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly nbdLatency: LatencyHistogram;
  /** Series per volume and command, so that observing a latency does no label work on the hot path. */
  private readonly latencyByVolume = new Map<string, Map<CommandName, LatencySeries>>();

  constructor(sources: MetricsSources) {
    const r = this.registry;
    // Node's own metrics as holdfast_process_* and holdfast_nodejs_* (their names already say which).
    collectDefaultMetrics({ register: r, prefix: 'holdfast_' });
    for (const name of GAUGES_NAMED_TOTAL) r.removeSingleMetric(`holdfast_${name}`);
    this.nbdLatency = new LatencyHistogram({
      name: 'holdfast_nbd_request_duration_seconds',
      help: 'NBD request latency, from request parsed to reply sent',
      labelNames: ['volume', 'command'],
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });

    const perVolume = (name: string, help: string, read: (v: VolumeSnapshot) => number, kind: 'gauge' | 'counter' = 'gauge') => {
      const collect = function (this: Gauge<'volume'> | Counter<'volume'>) {
        this.reset();
        for (const v of sources.volumes()) {
          const value = read(v.status());
          if (this instanceof Gauge) this.set({ volume: v.name }, value);
          else this.inc({ volume: v.name }, value);
        }
      };
      if (kind === 'gauge') new Gauge({ name, help, labelNames: ['volume'], registers: [r], collect });
      else new Counter({ name, help, labelNames: ['volume'], registers: [r], collect });
    };

    perVolume('holdfast_held_requests', 'guest requests held now', (v) => v.hang.held.requests);
    perVolume('holdfast_held_bytes', 'bytes of guest requests held now', (v) => v.hang.held.bytes);
    perVolume('holdfast_hang_episodes_total', 'hang episodes begun', (v) => v.hangCounters.episodes, 'counter');
    perVolume('holdfast_hang_seconds_total', 'seconds spent in finished hang episodes', (v) => v.hangCounters.hangSeconds, 'counter');
    perVolume('holdfast_hang_timeouts_total', 'hang timeouts fired', (v) => v.hangCounters.timeouts, 'counter');
    perVolume('holdfast_hang_retries_total', 'retries of held requests', (v) => v.hangCounters.retries, 'counter');
    perVolume('holdfast_failed_fast_total', 'requests failed at once while timed out', (v) => v.hangCounters.failedFast, 'counter');
    perVolume('holdfast_journal_bytes', 'bytes in the journal (live segments and queued records)', (v) => v.stats.journalBytes);
    perVolume('holdfast_journal_limit_bytes', 'journal limit', (v) => v.stats.journalLimitBytes);
    perVolume('holdfast_journal_backlog_records', 'journal records not yet in the store', (v) => v.stats.pendingEntries);
    perVolume('holdfast_dirty_extents', 'extents with changes not yet in the store', (v) => v.stats.dirtyExtents);
    perVolume('holdfast_cache_bytes', 'bytes in the extent cache', (v) => v.stats.cacheBytes);
    perVolume(
      'holdfast_cache_squeezed_bytes',
      "bytes taken off the extent cache's bound to keep the gateway under --memory-limit",
      (v) => v.stats.cacheSqueezedBytes,
    );
    perVolume('holdfast_cache_hits_total', 'extent cache hits', (v) => v.stats.cacheHits, 'counter');
    perVolume('holdfast_cache_misses_total', 'extent cache misses', (v) => v.stats.cacheMisses, 'counter');
    perVolume('holdfast_uploads_total', 'extent PUTs and DELETEs done', (v) => v.stats.puts + v.stats.deletes, 'counter');
    perVolume('holdfast_upload_bytes_total', 'bytes uploaded', (v) => v.stats.bytesUploaded, 'counter');
    perVolume('holdfast_upload_failures_total', 'failed extent uploads', (v) => v.stats.uploadFailures, 'counter');
    perVolume('holdfast_clients', 'NBD connections using the volume', (v) => v.stats.clients);
    perVolume(
      'holdfast_disk_cache_hits_total',
      'object reads the disk cache answered for the volume',
      (v) => v.stats.diskCache?.hits ?? 0,
      'counter',
    );
    perVolume(
      'holdfast_disk_cache_misses_total',
      'object reads the disk cache did not hold, fetched from the store',
      (v) => v.stats.diskCache?.misses ?? 0,
      'counter',
    );

    new Gauge({
      name: 'holdfast_hang_state',
      help: '1 for the state each volume is in (normal, hang, timed-out)',
      labelNames: ['volume', 'state'],
      registers: [r],
      collect() {
        this.reset();
        for (const v of sources.volumes()) {
          const state = v.status().hang.state;
          for (const s of ['normal', 'hang', 'timed-out'] as const) this.set({ volume: v.name, state: s }, state === s ? 1 : 0);
        }
      },
    });
    new Counter({
      name: 'holdfast_storage_errors_total',
      help: 'failed storage operations by error class',
      labelNames: ['volume', 'class'],
      registers: [r],
      collect() {
        this.reset();
        for (const v of sources.volumes())
          for (const [cls, n] of Object.entries(v.status().hangCounters.storageErrors)) this.inc({ volume: v.name, class: cls }, n);
      },
    });
    new Counter({
      name: 'holdfast_nbd_requests_total',
      help: 'NBD requests received by command',
      labelNames: ['command'],
      registers: [r],
      collect() {
        this.reset();
        const s = sources.nbd();
        if (s !== undefined) for (const [cmd, n] of Object.entries(s.requests)) this.inc({ command: commandLabel(cmd) }, n);
      },
    });
    new Gauge({
      name: 'holdfast_nbd_connections',
      help: 'open NBD connections',
      registers: [r],
      collect() {
        this.set(sources.nbd()?.connectionsActive ?? 0);
      },
    });
    new Counter({
      name: 'holdfast_nbd_error_replies_total',
      help: 'NBD replies carrying an error',
      registers: [r],
      collect() {
        this.reset();
        this.inc(sources.nbd()?.errorReplies ?? 0);
      },
    });
    this.eventMetrics(r, sources);
    this.diskCacheMetrics(r, sources);
  }

  private diskCacheMetrics(r: Registry, sources: MetricsSources): void {
    const stat = (name: string, help: string, read: (s: DiskCacheStats) => number, kind: 'gauge' | 'counter') => {
      const collect = function (this: Gauge | Counter) {
        this.reset();
        const s = sources.diskCache?.();
        if (s === undefined) return;
        if (this instanceof Gauge) this.set(read(s));
        else this.inc(read(s));
      };
      if (kind === 'gauge') new Gauge({ name, help, registers: [r], collect });
      else new Counter({ name, help, registers: [r], collect });
    };
    stat('holdfast_disk_cache_bytes', 'bytes the disk cache holds', (s) => s.bytes, 'gauge');
    stat(
      'holdfast_disk_cache_limit_bytes',
      'the disk cache bound in force (--disk-cache-size, or less when its disk has less room)',
      (s) => s.effectiveLimitBytes,
      'gauge',
    );
    stat('holdfast_disk_cache_objects', 'store objects the disk cache holds bytes of', (s) => s.objects, 'gauge');
    stat(
      'holdfast_disk_cache_corrupt_total',
      'cached ranges that failed their CRC32C or were cut short, dropped and fetched again',
      (s) => s.corrupt,
      'counter',
    );
    stat('holdfast_disk_cache_evictions_total', 'objects evicted from the disk cache', (s) => s.evictions, 'counter');
    stat('holdfast_disk_cache_written_bytes_total', 'bytes written to the disk cache', (s) => s.writtenBytes, 'counter');
    stat(
      'holdfast_disk_cache_skipped_total',
      'ranges not kept: no room, too much being written, or the disk full',
      (s) => s.skipped,
      'counter',
    );
    stat('holdfast_disk_cache_full_total', 'disk cache writes refused by a full disk', (s) => s.full, 'counter');
    stat('holdfast_disk_cache_errors_total', 'disk cache reads and writes that failed otherwise', (s) => s.errors, 'counter');
  }

  private eventMetrics(r: Registry, sources: MetricsSources): void {
    const sinks = () => sources.events?.() ?? [];
    const perSink = (name: string, help: string, read: (c: EventDeliveryCounters) => number) =>
      new Counter({
        name,
        help,
        labelNames: ['sink'],
        registers: [r],
        collect() {
          this.reset();
          for (const c of sinks()) this.inc({ sink: c.sink }, read(c));
        },
      });
    perSink('holdfast_events_delivered_total', 'events a sink delivered', (c) => c.delivered);
    perSink('holdfast_events_retried_total', 'events sent again after a failed call or a refused entry', (c) => c.retried);
    perSink('holdfast_events_failed_calls_total', 'calls to an event destination that failed', (c) => c.failedCalls);
    new Gauge({
      name: 'holdfast_events_queued',
      help: 'events waiting for delivery',
      labelNames: ['sink'],
      registers: [r],
      collect() {
        this.reset();
        for (const c of sinks()) this.set({ sink: c.sink }, c.queued);
      },
    });
    new Counter({
      name: 'holdfast_events_dropped_total',
      help: 'events that never reached a sink, by reason',
      labelNames: ['sink', 'reason'],
      registers: [r],
      collect() {
        this.reset();
        for (const c of sinks()) for (const [reason, n] of Object.entries(c.dropped)) this.inc({ sink: c.sink, reason }, n);
      },
    });
  }

  observeNbdLatency(volume: string, command: CommandName, seconds: number): void {
    let byCommand = this.latencyByVolume.get(volume);
    if (byCommand === undefined) {
      byCommand = new Map();
      this.latencyByVolume.set(volume, byCommand);
    }
    let series = byCommand.get(command);
    if (series === undefined) {
      series = this.nbdLatency.seriesFor(volume, commandLabel(command));
      byCommand.set(command, series);
    }
    series.observe(seconds);
  }
}
