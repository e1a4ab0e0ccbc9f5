import { elementAt } from './checked.js';
import { z } from 'zod';
import { DEFAULT_EXTENT_SIZE, isValidExtentSize, VOLUME_NAME } from './volume-manifest.js';
import { parseDuration, parseSize } from './units.js';
import { HangTimeoutSchema, parseClassActions } from './hang-policy.js';
import { EVENT_BUS_NAME } from './eventbridge.js';

/** `a, b,c` → ['a', 'b', 'c']: how lists are written in flags, environment variables and CDK context. */
export function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** A size given as a number of bytes or as text like `256MiB`. */
const size = (what: string) =>
  z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
    const n = typeof v === 'number' ? v : parseSize(v);
    if (n === undefined) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a ${what} like 256MiB, 10G or 4096` });
      return z.NEVER;
    }
    return n;
  });

/** A duration given as milliseconds or as text like `25s` or `250ms`. */
const duration = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : parseDuration(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a duration like 25s or 250ms` });
    return z.NEVER;
  }
  return n;
});

function parseHostPort(v: string): { host: string; port: number } | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) return undefined;
  return { host: elementAt(m, 1).replace(/^\[|\]$/g, ''), port };
}

const hostPort = z.string().transform((v, ctx) => {
  const parsed = parseHostPort(v);
  if (parsed === undefined) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not HOST:PORT (e.g. 127.0.0.1:10809)` });
    return z.NEVER;
  }
  return parsed;
});

/** An NBD listen address: TCP `HOST:PORT` or a Unix socket `unix:/path`. */
export type ListenTarget =
  { readonly kind: 'tcp'; readonly host: string; readonly port: number } | { readonly kind: 'unix'; readonly path: string };

/** One or more listen addresses, as a list or comma-separated (the environment's form). */
const listenTargets = z.union([z.string(), z.array(z.string())]).transform((v, ctx): ListenTarget[] => {
  const items = (Array.isArray(v) ? v : [v])
    .flatMap((item) => item.split(','))
    .map((item) => item.trim())
    .filter((item) => item !== '');
  const targets: ListenTarget[] = [];
  for (const item of items) {
    if (item.startsWith('unix:')) {
      const path = item.slice('unix:'.length);
      if (!path.startsWith('/') || path.length > 100) {
        ctx.addIssue({ code: 'custom', message: `${JSON.stringify(item)} is not unix:/absolute/path (at most 100 characters)` });
        return z.NEVER;
      }
      targets.push({ kind: 'unix', path });
      continue;
    }
    const tcp = parseHostPort(item);
    if (tcp === undefined) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(item)} is not HOST:PORT (e.g. 127.0.0.1:10809) or unix:/path` });
      return z.NEVER;
    }
    targets.push({ kind: 'tcp', ...tcp });
  }
  if (targets.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'at least one address is needed' });
    return z.NEVER;
  }
  return targets;
});

/** A duration, or `off` (0) for none. */
const durationOrOff = z.union([z.literal('off'), z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  if (v === 'off') return 0;
  const n = typeof v === 'number' ? v : parseDuration(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a duration like 24h or 90s, or off` });
    return z.NEVER;
  }
  return n;
});

/**
 * The gateway's memory limit: `auto` (the volumes' caches plus MEMORY_HEADROOM_BYTES), `off` (0), or a
 * size.
 */
const memoryLimit = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx): number | 'auto' => {
  if (v === 'auto') return 'auto';
  if (v === 'off') return 0;
  const n = typeof v === 'number' ? v : parseSize(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a size like 1GiB, or auto, or off` });
    return z.NEVER;
  }
  return n;
});

/** What `--memory-limit auto` allows beyond the volumes' caches: Node itself, the heap, buffers in flight. */
export const MEMORY_HEADROOM_BYTES = 150 * 2 ** 20;

/** `NAME=SIZE`: a volume created on first start when it does not exist. */
const autoCreate = z.string().transform((v, ctx) => {
  if (v === '') return undefined;
  const [name, sizeText] = v.split('=');
  const bytes = sizeText === undefined ? undefined : parseSize(sizeText);
  if (name === undefined || !VOLUME_NAME.test(name) || bytes === undefined || bytes <= 0 || bytes % 512 !== 0) {
    ctx.addIssue({
      code: 'custom',
      message: `${JSON.stringify(v)} is not NAME=SIZE with a valid volume name and a size that is a multiple of 512 (e.g. demo=1G), or empty to create nothing`,
    });
    return z.NEVER;
  }
  return { name, size: bytes };
});

/** Where events go besides the admin API's history. */
export type EventsTarget = { readonly kind: 'log' } | { readonly kind: 'eventbridge'; readonly bus: string };

const eventsTarget = z.string().transform((v, ctx): EventsTarget => {
  if (v === 'log') return { kind: 'log' };
  const bus = v.startsWith('eventbridge:') ? v.slice('eventbridge:'.length) : undefined;
  if (bus === undefined || !EVENT_BUS_NAME.test(bus)) {
    ctx.addIssue({
      code: 'custom',
      message: `${JSON.stringify(v)} is not log or eventbridge:BUS (a bus name or ARN, e.g. eventbridge:holdfast)`,
    });
    return z.NEVER;
  }
  return { kind: 'eventbridge', bus };
});

const classOverrides = z.string().transform((v, ctx) => {
  const parsed = parseClassActions(v);
  if (typeof parsed === 'string') {
    ctx.addIssue({ code: 'custom', message: parsed });
    return z.NEVER;
  }
  return parsed;
});

/**
 * Every gateway setting, with the same names on the command line (kebab-case), in the config file
 * (camelCase JSON) and in the environment (HOLDFAST_ + upper snake case).
 */
export const GatewayConfigSchema = z
  .object({
    /** NBD listen addresses: TCP HOST:PORT and Unix sockets unix:/path. */
    listen: listenTargets.prefault('127.0.0.1:10809'),
    /** NBD STARTTLS: off, on (the client's choice) or require (nothing but STARTTLS before TLS). */
    tls: z.enum(['off', 'on', 'require']).default('off'),
    /** Server certificate chain (PEM). */
    tlsCert: z.string().min(1).optional(),
    /** Private key (PEM) of the certificate. */
    tlsKey: z.string().min(1).optional(),
    /** CA (PEM) that client certificates must be signed by; clients without PSK must then present one. */
    tlsCa: z.string().min(1).optional(),
    /** psktool key file: PSK identities and keys. */
    tlsPsk: z.string().min(1).optional(),
    /** JSON file: which volumes each TLS identity may open, read-write or read-only. */
    nbdAccess: z.string().min(1).optional(),
    /** NBD connections in total. */
    nbdMaxConnections: z.coerce.number().int().min(1).max(65536).default(1024),
    /** NBD connections from one TCP peer address. */
    nbdMaxConnectionsPerPeer: z.coerce.number().int().min(1).max(65536).default(64),
    /** How long a client may take to choose an export, TLS handshake included. */
    nbdHandshakeTimeout: duration.default(10_000).refine((ms) => ms >= 100, 'the handshake timeout must be at least 100ms'),
    /** A connection with nothing in flight this long is closed; off keeps idle connections. */
    nbdIdleTimeout: durationOrOff.prefault('24h'),
    /** Request and reply data all NBD connections may hold together beyond 256 KiB each. */
    nbdBufferMemory: size('buffer size')
      .default(64 * 2 ** 20)
      .refine((n) => n >= 32 * 2 ** 20, 'the NBD buffer memory must be at least 32MiB (one maximal request)'),
    /** Where the embedded defaults put the local store and the journal. */
    dataDir: z.string().min(1).default('./data'),
    /** `file:///path`, a plain path, or `s3://bucket/prefix`; default: DATA_DIR/store. */
    store: z.string().min(1).optional(),
    s3Endpoint: z.url().optional(),
    s3Region: z.string().min(1).optional(),
    /** Default: DATA_DIR/journal. EFS in production. */
    journalDir: z.string().min(1).optional(),
    cacheSize: size('cache size').default(256 * 2 ** 20),
    /** Resident memory the gateway keeps under by shrinking the extent caches (to half at most). */
    memoryLimit: memoryLimit.prefault('off'),
    /** The disk cache tier's directory; with neither this nor diskCacheSize there is no disk cache. */
    cacheDir: z.string().min(1).optional(),
    /** The disk cache's bound (all volumes together); 0 turns it off. Default 10GiB once cacheDir is set. */
    diskCacheSize: size('disk cache size').optional(),
    journalLimit: size('journal limit').default(2 ** 30),
    segmentSize: size('segment size')
      .default(64 * 2 ** 20)
      .refine((n) => n >= 2 ** 20, 'segment size must be at least 1MiB'),
    uploadConcurrency: z.coerce.number().int().min(1).max(64).default(4),
    uploadDelay: duration.default(2000),
    retryMax: duration.default(1000),
    extentSize: size('extent size')
      .default(DEFAULT_EXTENT_SIZE)
      .refine(isValidExtentSize, 'extent size must be a power of two from 64KiB to 64MiB'),
    /** Volumes to serve; empty means every volume in the store. */
    volumes: z.array(z.string().regex(VOLUME_NAME, 'volume names are letters, digits, . _ - (max 63)')).default([]),
    createVolume: autoCreate.prefault('demo=1G'),
    readOnly: z.boolean().default(false),
    shutdownGrace: duration.default(25_000),
    /** How long a volume's lease lasts after each head write; renewed every third of it. */
    leaseTtl: duration.default(30_000).refine((n) => n >= 1000, 'the lease must last at least 1s'),
    /** Volumes to take even if another journal holds acknowledged writes for them (they are lost). */
    forceTakeover: z.array(z.string().regex(VOLUME_NAME, 'volume names are letters, digits, . _ - (max 63)')).default([]),
    /** Memory for a volume's delta index (run map and CRC tables); compaction keeps it below this. */
    indexMemory: size('index memory size').default(64 * 2 ** 20),
    /** Bytes of deltas a volume may have before the oldest are compacted; default max(1GiB, half the volume). */
    deltaBudget: size('delta budget').optional(),
    /** Unreferenced objects younger than this are kept by garbage collection. */
    gcGrace: duration.default(3_600_000),
    /** How often a gateway serving every volume looks for volumes created since; 0 for never. */
    volumePoll: duration.default(1_000),
    /** How often the gateway collects garbage in the background; 0 for never. */
    gcInterval: duration.default(900_000),
    /** How long guest I/O is held through a storage failure: off, forever, or a duration. */
    hangTimeout: HangTimeoutSchema.prefault('120s'),
    /** Per-class overrides of the hold/fail table, e.g. `denied=hold,no-space=fail`. */
    hangPolicy: classOverrides.prefault(''),
    /** Admin HTTP API (health, metrics, volume state, hang control). */
    admin: hostPort.prefault('127.0.0.1:10810'),
    /** When set, every admin request but /healthz needs `Authorization: Bearer TOKEN`. */
    adminToken: z.string().min(8, 'the admin token must be at least 8 characters').optional(),
    /** Names this gateway in events and metrics; default: the host name. */
    gatewayId: z.string().min(1).optional(),
    /** Where events go: `log` (one JSON object per line in the log), or `eventbridge:BUS` (and the log). */
    events: eventsTarget.prefault('log'),
    /** An EventBridge-compatible endpoint for `eventbridge:` (tests, LocalStack); unset means AWS. */
    eventsEndpoint: z.url().optional(),
    /** Keep events EventBridge has not accepted yet in the journal directory, so a restart sends them. */
    eventsSpill: z.boolean().default(false),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    logFormat: z.enum(['pretty', 'json', 'auto']).default('auto'),
  })
  .strict()
  .refine((c) => c.journalLimit >= 2 * c.segmentSize, {
    error: 'journal limit must be at least twice the segment size',
    path: ['journalLimit'],
  })
  .superRefine((c, ctx) => {
    const files = { tlsCert: c.tlsCert, tlsKey: c.tlsKey, tlsCa: c.tlsCa, tlsPsk: c.tlsPsk, nbdAccess: c.nbdAccess };
    if (c.tls === 'off') {
      for (const [setting, value] of Object.entries(files)) {
        if (value !== undefined) ctx.addIssue({ code: 'custom', path: [setting], message: 'needs --tls on or require' });
      }
      return;
    }
    if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: [c.tlsCert === undefined ? 'tlsKey' : 'tlsCert'],
        message: 'a certificate needs its key (--tls-cert with --tls-key)',
      });
    }
    if (c.tlsCert === undefined && c.tlsPsk === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['tls'],
        message: 'TLS needs a certificate and key (--tls-cert, --tls-key) or a PSK file (--tls-psk)',
      });
    }
    if (c.tlsCa !== undefined && c.tlsCert === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['tlsCa'],
        message: 'client certificates are checked only with a server certificate (--tls-cert, --tls-key)',
      });
    }
  });

export type GatewayConfigInput = z.input<typeof GatewayConfigSchema>;
export type GatewayConfig = z.output<typeof GatewayConfigSchema>;
