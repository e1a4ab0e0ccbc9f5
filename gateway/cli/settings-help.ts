import type { GatewayConfigInput } from '../../shared/config.js';

type Setting = keyof GatewayConfigInput;

/**
 * One line of help per gateway setting; the CLI builds its options from this table and the README
 * documents the same names, so flags, config file and environment never drift apart.
 */
export const SETTINGS_HELP: Record<Setting, { readonly arg?: string; readonly help: string; readonly list?: true }> = {
  listen: {
    arg: 'address...',
    help: 'NBD listen addresses: HOST:PORT or unix:/path, several allowed (default 127.0.0.1:10809)',
    list: true,
  },
  tls: { arg: 'mode', help: "NBD STARTTLS: off, on (client's choice) or require (nothing but STARTTLS before TLS) (default off)" },
  tlsCert: { arg: 'file', help: 'TLS server certificate chain (PEM); reread on SIGHUP' },
  tlsKey: { arg: 'file', help: 'private key (PEM) of --tls-cert; reread on SIGHUP' },
  tlsCa: { arg: 'file', help: 'CA certificates (PEM): clients without a PSK must present a certificate signed by it' },
  tlsPsk: { arg: 'file', help: 'TLS-PSK keys in psktool format (IDENTITY:HEXKEY per line); reread on SIGHUP' },
  nbdAccess: { arg: 'file', help: 'JSON {"IDENTITY": {"VOLUME or *": "rw" | "ro"}}: what each TLS identity may open; reread on SIGHUP' },
  nbdMaxConnections: { arg: 'n', help: 'NBD connections in total (default 1024)' },
  nbdMaxConnectionsPerPeer: { arg: 'n', help: 'NBD connections from one TCP client address (default 64)' },
  nbdHandshakeTimeout: { arg: 'duration', help: 'time a client has to choose an export, TLS handshake included (default 10s)' },
  nbdIdleTimeout: { arg: 'duration', help: 'close NBD connections with nothing in flight for this long, or off (default 24h)' },
  nbdBufferMemory: {
    arg: 'size',
    help: 'request and reply data all NBD clients may hold together beyond 256 KiB each; slow readers wait (default 64MiB)',
  },
  dataDir: { arg: 'dir', help: 'where the embedded defaults keep the store and the journal (default ./data)' },
  store: { arg: 'url', help: 'object store: s3://bucket/prefix, file:///path or a directory (default DATA_DIR/store)' },
  s3Endpoint: { arg: 'url', help: 'S3-compatible endpoint (path-style addressing), e.g. http://127.0.0.1:9000' },
  s3Region: { arg: 'region', help: 'S3 region (default from the AWS environment, us-east-1 with --s3-endpoint)' },
  journalDir: { arg: 'dir', help: 'write journal directory, EFS in production (default DATA_DIR/journal)' },
  cacheSize: { arg: 'size', help: 'extent memory per volume: cache plus extents being loaded or uploaded (default 256MiB)' },
  memoryLimit: {
    arg: 'size',
    help: "resident memory the gateway stays under by shrinking the extent caches, to half at most; auto: the volumes' --cache-size plus 150MiB; off for none (default off; the CDK stack sets 90% of the task's memory)",
  },
  cacheDir: {
    arg: 'dir',
    help: 'disk cache of store objects under the RAM cache, for all volumes; off unless this or --disk-cache-size is set (default DATA_DIR/cache)',
  },
  diskCacheSize: { arg: 'size', help: 'disk cache bound, all volumes together; 0 for none (default 10GiB once --cache-dir is set)' },
  journalLimit: { arg: 'size', help: 'journal bytes per volume before writes wait for uploads (default 1GiB)' },
  segmentSize: { arg: 'size', help: 'journal segment file size (default 64MiB)' },
  uploadConcurrency: { arg: 'n', help: 'delta PUTs in flight at once per volume, one more built ahead (default 4)' },
  uploadDelay: {
    arg: 'duration',
    help: 'how long a change waits so that later ones share its delta (default 2s; at once when 8MiB wait or the journal is half full)',
  },
  retryMax: { arg: 'duration', help: 'longest back-off between retries of a failed upload (default 1s)' },
  extentSize: { arg: 'size', help: 'extent size for volumes created by the gateway (default 4MiB)' },
  volumes: {
    arg: 'name,...',
    help: 'volumes to serve, comma-separated or the option repeated (default: every volume in the store)',
    list: true,
  },
  createVolume: { arg: 'name=size', help: 'volume created on first start if missing; "" for none (default demo=1G)' },
  readOnly: { help: 'serve every volume read-only' },
  shutdownGrace: { arg: 'duration', help: 'on SIGTERM, how long requests in flight may take (default 25s)' },
  leaseTtl: {
    arg: 'duration',
    help: "how long a volume's lease lasts after each head write; a gateway answers writes only while it holds it (default 30s)",
  },
  forceTakeover: {
    arg: 'name,...',
    help: "take these volumes even if another gateway's journal holds acknowledged writes for them (those writes are lost)",
    list: true,
  },
  indexMemory: {
    arg: 'size',
    help: "memory for a volume's delta index; compaction starts at 3/4 of it, new deltas wait at all of it (default 64MiB)",
  },
  deltaBudget: {
    arg: 'size',
    help: 'delta bytes a volume may keep before the oldest are compacted, paced; at twice this, uploads wait for compaction (default the larger of 1GiB and half the volume)',
  },
  gcGrace: {
    arg: 'duration',
    help: 'garbage collection keeps unreferenced objects younger than this, and deleted snapshots this long (default 1h)',
  },
  volumePoll: {
    arg: 'duration',
    help: 'without --volumes: how often the gateway looks for volumes created since it started; 0 for never (default 1s)',
  },
  gcInterval: { arg: 'duration', help: 'how often the gateway collects garbage in the store; 0 for never (default 15m)' },
  hangTimeout: { arg: 'timeout', help: 'how long guest I/O is held through a storage failure: off, forever or a duration (default 120s)' },
  hangPolicy: {
    arg: 'class=action,...',
    help: 'hold or fail per error class, e.g. denied=hold (default transient, io, no-space hold; denied, missing, invalid fail)',
  },
  admin: { arg: 'host:port', help: 'admin HTTP API: health, metrics, volume state, hang control (default 127.0.0.1:10810)' },
  adminToken: { arg: 'token', help: 'bearer token required by the admin API (except /healthz)' },
  gatewayId: { arg: 'id', help: 'names this gateway in events and metrics (default: the host name)' },
  events: { arg: 'sink', help: 'where events go: log (default) or eventbridge:BUS (a bus name or ARN; events are logged too)' },
  eventsEndpoint: { arg: 'url', help: 'EventBridge-compatible endpoint for --events eventbridge:BUS (default AWS)' },
  eventsSpill: { help: 'keep events EventBridge has not accepted in JOURNAL_DIR/.events-spill.jsonl and send them after a restart' },
  logLevel: { arg: 'level', help: 'fatal, error, warn, info, debug, trace or silent (default info)' },
  logFormat: { arg: 'format', help: 'pretty, json or auto (pretty on a terminal) (default auto)' },
};

/** Settings every command needs to find the volumes. */
export const STORE_SETTINGS: readonly Setting[] = ['dataDir', 'store', 's3Endpoint', 's3Region', 'journalDir', 'logLevel', 'logFormat'];
