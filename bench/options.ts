import { elementAt } from '../shared/checked.js';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { S3_SERVER_KINDS, type S3ServerKind } from '../tests/helpers/s3-server.js';

export const WORKLOADS = ['randread-warm', 'randread-cold', 'seqread', 'recovery', 'randwrite', 'seqwrite', 'flush-heavy'] as const;
export type Workload = (typeof WORKLOADS)[number];
/** On one large data set (bench/large-volume.ts), after the rounds. */
export const LARGE_WORKLOADS = ['large-randread', 'large-zipf', 'large-restart'] as const;
export type LargeWorkload = (typeof LARGE_WORKLOADS)[number];
/** Too long to repeat every round: run once, after the rounds. */
export const ONCE_WORKLOADS = ['outage-writes', 'sustained-writes', ...LARGE_WORKLOADS] as const;
export type OnceWorkload = (typeof ONCE_WORKLOADS)[number];
const ALL_WORKLOADS: readonly (Workload | OnceWorkload)[] = [...WORKLOADS, ...ONCE_WORKLOADS];

export const SYSTEMS = ['holdfast-local', 'holdfast-s3', 'qemu-nbd', 'qemu-nbd-wt', 'nbdkit', 's3backer', 'holdfast-tls'] as const;
export type SystemName = (typeof SYSTEMS)[number];

export interface BenchOptions {
  readonly quick: boolean;
  readonly rounds: number;
  /** Seconds each measured fio run lasts. */
  readonly runtime: number;
  /** Bytes of every volume, raw file and s3backer file. */
  readonly size: number;
  /** Seconds the S3 server stays down in the recovery workload. */
  readonly outage: number;
  /** Seconds the S3 server stays down in the outage-writes workload. */
  readonly longOutage: number;
  /** Holdfast's `--cache-size` and s3backer's block cache, in bytes. */
  readonly cacheSize: number;
  /** Bytes of the large-volume data set (the large-* workloads). */
  readonly largeSize: number;
  /** Holdfast's `--disk-cache-size` on the large volume. */
  readonly diskCacheSize: number;
  /** The volume of the sustained-writes workload, in bytes. */
  readonly sustainedSize: number;
  /** Seconds of writes in sustained-writes. */
  readonly sustainedRuntime: number;
  /** Holdfast's `--upload-delay`; undefined keeps the gateway's default. */
  readonly uploadDelay: string | undefined;
  /** Concurrent requests of the S3 server's own GET/PUT measurement. */
  readonly s3Parallelism: number;
  /** The S3 server behind holdfast-s3 and s3backer: Ceph's RADOS Gateway, or the s3rver mock. */
  readonly s3Server: S3ServerKind;
  readonly systems: readonly SystemName[];
  /** The workloads of every round. */
  readonly workloads: readonly Workload[];
  /** The workloads run once, after the rounds. */
  readonly onceWorkloads: readonly OnceWorkload[];
  /** Where the JSON, Markdown and PNG files go. */
  readonly out: string;
  /** Their base name; undefined: bench-<start time>. */
  readonly name: string | undefined;
  /** Where every gateway the run starts writes a CPU profile (node --cpu-prof) when it stops; none when absent. */
  readonly cpuProfileDir: string | undefined;
}

export const USAGE = `usage: npm run bench -- [options]

  --quick              one round of 1 s runs on 32 MiB, a 2 s outage, a 3 s long outage, a 1 s upload delay (about a minute)
  --rounds N           rounds of every workload on every system, medians reported (default 3)
  --runtime SECONDS    length of each measured fio run (default 10)
  --size SIZE          volume / file size, e.g. 64M, 1G (default 1G)
  --outage SECONDS     how long the S3 server is down in the recovery workload (default 10)
  --long-outage SECONDS
                       how long the S3 server is down in outage-writes, run once after the rounds on
                       holdfast-s3: 4 KiB random writes, peak RSS during and after it (default 300)
  --cache-size SIZE    Holdfast --cache-size and s3backer's block cache (default 256M)
  --large-size SIZE    the data set of the large-* workloads, run once after the rounds against
                       qemu-nbd and nbdkit on the same data: 4 KiB random reads, a zipf 70/30 mix, and
                       random reads after a gateway restart (default 16G, 64M with --quick)
  --disk-cache-size SIZE
                       Holdfast --disk-cache-size on the large volume (default 1.25 × --large-size)
  --sustained-size SIZE
                       the volume of sustained-writes, run once after the rounds on an S3 server of its
                       own: 4 KiB random writes with a 256 MiB journal limit (default 16G, 64M with --quick)
  --sustained-runtime SECONDS
                       how long sustained-writes writes (default 300, 3 with --quick)
  --upload-delay DUR   Holdfast --upload-delay (default: the gateway's own, 1s with --quick)
  --s3-parallelism N   concurrent GET/PUT of the S3 server's own throughput (default 8)
  --s3-server KIND     the S3 server: rgw (Ceph's RADOS Gateway, one node, objects in a BlueStore
                       file; the default) or s3rver (a mock, for comparison)
  --systems A,B        only these systems: ${SYSTEMS.join(', ')}
  --workloads A,B      only these workloads: ${ALL_WORKLOADS.join(', ')}
  --out DIR            where results go (default bench/results)
  --name NAME          base name of the result files (default bench-<start time>; full-run is kept in git)
  --cpu-prof DIR       every gateway the run starts writes a CPU profile (node --cpu-prof) into DIR
                       when it stops (node names each file by its start time and pid)
  --help`;

const UNITS: Readonly<Record<string, number>> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  const unit = m === null ? undefined : UNITS[elementAt(m, 2).toLowerCase()];
  if (m === null || unit === undefined) throw new Error(`"${text}" is not a size like 64M or 1GiB`);
  return Math.round(Number(m[1]) * unit);
}

function positive(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: "${text}" is not a positive number`);
  return n;
}

function list<T extends string>(name: string, text: string, allowed: readonly T[]): T[] {
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const item of items)
    if (!(allowed as readonly string[]).includes(item)) throw new Error(`--${name}: unknown "${item}" (one of ${allowed.join(', ')})`);
  return items as T[];
}

function oneOf<T extends string>(name: string, text: string, allowed: readonly T[]): T {
  const [item, ...rest] = list(name, text, allowed);
  if (item === undefined || rest.length > 0) throw new Error(`--${name}: one of ${allowed.join(', ')}`);
  return item;
}

/** `undefined` means --help was asked for. */
export function parseOptions(argv: readonly string[], defaultOut: string): BenchOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      runtime: { type: 'string' },
      size: { type: 'string' },
      outage: { type: 'string' },
      'long-outage': { type: 'string' },
      'cache-size': { type: 'string' },
      'large-size': { type: 'string' },
      'disk-cache-size': { type: 'string' },
      'sustained-size': { type: 'string' },
      'sustained-runtime': { type: 'string' },
      'upload-delay': { type: 'string' },
      's3-parallelism': { type: 'string' },
      's3-server': { type: 'string' },
      systems: { type: 'string' },
      workloads: { type: 'string' },
      out: { type: 'string' },
      name: { type: 'string' },
      'cpu-prof': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return undefined;
  const quick = values.quick;
  if (values.name !== undefined && !/^[\w.-]+$/.test(values.name)) throw new Error(`--name: "${values.name}" is not a plain file name`);
  const size = parseSize(values.size ?? (quick ? '32M' : '1G'));
  if (size % 2 ** 20 !== 0) throw new Error('--size: must be a whole number of MiB (the 1 MiB sequential workloads and s3backer need it)');
  const workloads = values.workloads === undefined ? [...ALL_WORKLOADS] : list('workloads', values.workloads, ALL_WORKLOADS);
  const largeSize = parseSize(values['large-size'] ?? (quick ? '64M' : '16G'));
  if (largeSize % 2 ** 20 !== 0) throw new Error('--large-size: must be a whole number of MiB');
  return {
    quick,
    rounds: Math.round(positive('rounds', values.rounds ?? (quick ? '1' : '3'))),
    runtime: positive('runtime', values.runtime ?? (quick ? '1' : '10')),
    size,
    outage: positive('outage', values.outage ?? (quick ? '2' : '10')),
    longOutage: positive('long-outage', values['long-outage'] ?? (quick ? '3' : '300')),
    cacheSize: parseSize(values['cache-size'] ?? '256M'),
    largeSize,
    diskCacheSize:
      values['disk-cache-size'] === undefined ? Math.ceil((largeSize * 1.25) / 2 ** 20) * 2 ** 20 : parseSize(values['disk-cache-size']),
    sustainedSize: parseSize(values['sustained-size'] ?? (quick ? '64M' : '16G')),
    sustainedRuntime: positive('sustained-runtime', values['sustained-runtime'] ?? (quick ? '3' : '300')),
    uploadDelay: values['upload-delay'] ?? (quick ? '1s' : undefined),
    s3Parallelism: Math.round(positive('s3-parallelism', values['s3-parallelism'] ?? '8')),
    s3Server: oneOf('s3-server', values['s3-server'] ?? 'rgw', S3_SERVER_KINDS),
    systems: values.systems === undefined ? [...SYSTEMS] : list('systems', values.systems, SYSTEMS),
    // Run in the fixed order whatever order they were named in: the write workloads come last in
    // a round, so every read of the round sees the data the prefill left in the store.
    workloads: WORKLOADS.filter((w) => workloads.includes(w)),
    onceWorkloads: ONCE_WORKLOADS.filter((w) => workloads.includes(w)),
    out: values.out ?? defaultOut,
    name: values.name,
    cpuProfileDir: values['cpu-prof'] === undefined ? undefined : path.resolve(values['cpu-prof']),
  };
}
