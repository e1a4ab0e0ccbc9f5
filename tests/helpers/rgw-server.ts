import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { CEPH_TOOLS, missingPackages } from '../../scripts/debian-tools.mjs';
import { type Daemon, DaemonStartError, findFreePort, spawnDaemon, waitUntil } from './daemon-process.js';
import { runTool } from './run-tool.js';
import { credentialsEnv, type S3Server, type S3ServerOptions } from './s3-server.js';

/**
 * Ceph's RADOS Gateway on a private one-node cluster: one monitor, one OSD keeping its objects in
 * memory (memstore; in a BlueStore file with `onDisk`), one radosgw with the beast frontend on
 * 127.0.0.1, all under one directory, on ports of their own, with authentication between them off. A user and a bucket are made at start.
 *
 * kill / freeze / restart act on radosgw only. The OSD is never SIGKILLed while the server is in
 * use: memstore keeps the objects in the OSD's memory, so they survive a radosgw crash, but not an
 * OSD crash.
 */
export interface RgwServer extends S3Server {
  readonly kind: 'rgw';
  /** Milliseconds from nothing to a working endpoint with its bucket. */
  readonly startMs: number;
  readonly dir: string;
}

export class RgwStartError extends DaemonStartError {}

const REGION = 'us-east-1';
const MON_NAME = 'a';
const OSD_ID = 0;
/**
 * The pools radosgw makes on its first requests, made up front (a stall on the first request
 * otherwise), 8 placement groups each: at the default 32 the seven pools would pass the 250 PGs
 * one OSD may hold.
 */
const RGW_POOLS = [
  '.rgw.root',
  'default.rgw.control',
  'default.rgw.meta',
  'default.rgw.log',
  'default.rgw.buckets.index',
  'default.rgw.buckets.data',
  'default.rgw.buckets.non-ec',
];
const PG_NUM = 8;
/** The capacity memstore reports (it allocates only what is stored): room for the bench's volumes. */
const MEMSTORE_BYTES = 16 * 2 ** 30;
const BLUESTORE_BYTES = 100 * 2 ** 30;
const OSD_MEMORY_TARGET = 2 ** 30;
const MEMSTORE = `osd objectstore = memstore
memstore device bytes = ${MEMSTORE_BYTES}`;
/**
 * A sparse file of this size holds the objects (it takes only what is written); the OSD's caches
 * are held to its smallest memory target.
 */
const BLUESTORE = `osd objectstore = bluestore
bluestore block create = true
bluestore block size = ${BLUESTORE_BYTES}
bluestore fsck on mkfs = false
osd memory target = ${OSD_MEMORY_TARGET}`;
/** Any single step of the start: far above its ~1 s, below the test's own time-out. */
const STEP_TIMEOUT_S = 60;
const READY_TIMEOUT_MS = STEP_TIMEOUT_S * 1000;

export async function startRgwServer(opts: S3ServerOptions = {}): Promise<RgwServer> {
  const missing = missingPackages(CEPH_TOOLS);
  if (missing.length > 0) {
    throw new RgwStartError(
      `Ceph is not installed (missing Debian packages: ${missing.join(' ')}); \`npm test\` installs them, or apt-get install --no-install-recommends ${missing.join(' ')}`,
    );
  }
  const started = performance.now();
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'holdfast-rgw-')));
  const bucket = opts.bucket ?? 'holdfast-test';
  const credentials = {
    accessKeyId: randomBytes(10).toString('hex').toUpperCase(),
    secretAccessKey: randomBytes(20).toString('base64url'),
  };
  const [monPort, port] = [await findFreePort(), await findFreePort()];
  const conf = path.join(dir, 'ceph.conf');
  const endpoint = `http://127.0.0.1:${port}`;
  const guard = new OrphanGuard();
  const daemons: Daemon[] = [];
  const spawnCeph = (name: string, cmd: string, args: readonly string[]): Daemon => {
    const daemon = spawnDaemon(name, cmd, ['-c', conf, '-d', ...args], {
      onSpawn: (pid) => {
        guard.watch(pid);
      },
    });
    daemons.push(daemon);
    return daemon;
  };
  const startRadosgw = async (): Promise<Daemon> => {
    const rgw = spawnCeph('radosgw', 'radosgw', ['-n', 'client.rgw']);
    await waitUntil(`radosgw answering on ${endpoint}`, () => answers(endpoint), READY_TIMEOUT_MS, rgw);
    return rgw;
  };
  const stopAll = async (): Promise<void> => {
    // The cluster's objects go with it, so nothing needs a clean shutdown (SIGTERM takes the OSD
    // and radosgw seconds).
    await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
    guard.close();
  };

  let radosgw: Daemon;
  try {
    for (const sub of ['mon', 'run', path.join('osd', `osd.${OSD_ID}`)]) await mkdir(path.join(dir, sub), { recursive: true });
    const fsid = randomUUID();
    await writeFile(conf, cephConf({ fsid, dir, monPort, port, onDisk: opts.onDisk === true }));
    const monmap = path.join(dir, 'monmap');
    await tool('monmaptool', ['--create', '--addv', MON_NAME, `[v2:127.0.0.1:${monPort}]`, '--fsid', fsid, monmap]);
    await tool('ceph-mon', ['-c', conf, '--mkfs', '-i', MON_NAME, '--monmap', monmap]);
    const mon = spawnCeph('ceph-mon', 'ceph-mon', ['-i', MON_NAME]);
    const osdUuid = randomUUID();
    // One `ceph` process for every command: each start of the Python CLI costs about half a second.
    const commands = [`osd new ${osdUuid} ${OSD_ID}`, ...RGW_POOLS.map((pool) => `osd pool create ${pool} ${PG_NUM} ${PG_NUM}`)];
    const made = await tool('ceph', ['-c', conf, '--connect-timeout', String(STEP_TIMEOUT_S)], commands.join('\n'), mon);
    const created = made.match(/^pool '.*' created$/gm)?.length ?? 0;
    if (created !== RGW_POOLS.length) throw new RgwStartError(`ceph made ${created} of ${RGW_POOLS.length} pools:\n${made}`);
    await tool('ceph-osd', ['-c', conf, '-i', String(OSD_ID), '--mkfs', '--osd-uuid', osdUuid]);
    spawnCeph('ceph-osd', 'ceph-osd', ['-i', String(OSD_ID)]);
    // Waits for the OSD to serve, and makes the default zone before radosgw would race to make it too.
    await tool('radosgw-admin', [
      '-c',
      conf,
      'user',
      'create',
      '--uid=holdfast',
      '--display-name=holdfast',
      `--access-key=${credentials.accessKeyId}`,
      `--secret-key=${credentials.secretAccessKey}`,
    ]);
    radosgw = await startRadosgw();
    await createBucket(endpoint, bucket, credentials);
  } catch (err) {
    await stopAll();
    if (opts.dir === undefined) await rm(dir, { recursive: true, force: true });
    throw err instanceof DaemonStartError ? err : new RgwStartError(`Ceph RADOS Gateway did not start: ${String(err)}`, { cause: err });
  }

  return {
    kind: 'rgw',
    endpoint,
    port,
    bucket,
    region: REGION,
    credentials,
    env: credentialsEnv(credentials, REGION),
    startMs: performance.now() - started,
    dir,
    get pid(): number {
      return radosgw.pid;
    },
    kill: () => radosgw.stop('SIGKILL'),
    freeze: () => {
      radosgw.signal('SIGSTOP');
    },
    thaw: () => {
      radosgw.signal('SIGCONT');
    },
    async restart(): Promise<void> {
      await radosgw.stop('SIGKILL');
      daemons.splice(daemons.indexOf(radosgw), 1);
      guard.forget(radosgw.pid);
      radosgw = await startRadosgw();
    },
    async close(): Promise<void> {
      await stopAll();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function cephConf(c: { fsid: string; dir: string; monPort: number; port: number; onDisk: boolean }): string {
  return `[global]
fsid = ${c.fsid}
mon host = v2:127.0.0.1:${c.monPort}
public addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
admin socket =
run dir = ${c.dir}/run
crash dir = ${c.dir}/crash
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg num = ${PG_NUM}
osd pool default pgp num = ${PG_NUM}
osd pool default pg autoscale mode = off
# The start commits a dozen monitor map changes one after the other, each held back up to this
# long (1 s by default): about 4 s from nothing to a bucket instead of about 20.
paxos propose interval = 0.05
# A shared machine's disk may be fuller than a monitor likes; this one keeps almost nothing there.
mon data avail warn = 1
mon data avail crit = 0
client mount timeout = ${STEP_TIMEOUT_S}
rados mon op timeout = ${STEP_TIMEOUT_S}
# Requests sent before the OSD is up are re-checked on this tick (5 s by default): the start waits on it.
objecter tick interval = 0.2

[mon]
mon data = ${c.dir}/mon/$name

[osd]
osd data = ${c.dir}/osd/$name
${c.onDisk ? BLUESTORE : MEMSTORE}

[client.rgw]
# Without it radosgw loops on "get_initial_auth_request returned -13" with authentication off.
ms mon client mode = crc
rgw frontends = beast endpoint=127.0.0.1:${c.port}
rgw data = ${c.dir}/rgw
# Request lines would cost CPU on every request; errors are still logged.
debug rgw = 0/5
`;
}

/** Runs one Ceph tool to its end; its output (stdout and stderr), or an RgwStartError with it (and `daemon`'s). */
async function tool(cmd: string, args: readonly string[], input?: string, daemon?: Daemon): Promise<string> {
  const r = await runTool(cmd, args, input === undefined ? {} : { input });
  if (r.code !== 0) {
    throw new RgwStartError(
      `${cmd} ${args.join(' ')} exited with ${r.code}:\n${r.stdout}${r.stderr}${daemon === undefined ? '' : `\n${daemon.name}'s output:\n${daemon.output()}`}`,
    );
  }
  return r.stdout + r.stderr;
}

/** An anonymous GET / answered 200 (an empty bucket list): radosgw serves requests. */
async function answers(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

/**
 * Bounded in time: on a loaded machine a BlueStore RGW once never answered this request, and the
 * caller hung instead of failing. Each try (the SDK's own retries of errors included) is cut off after a
 * third of STEP_TIMEOUT_S and sent again, so the whole fails within it.
 */
async function createBucket(endpoint: string, bucket: string, credentials: S3Server['credentials']): Promise<void> {
  const tries = 3;
  const client = new S3Client({ endpoint, region: REGION, forcePathStyle: true, credentials });
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        await client.send(new CreateBucketCommand({ Bucket: bucket }), { abortSignal: AbortSignal.timeout(READY_TIMEOUT_MS / tries) });
        return;
      } catch (err) {
        if (attempt >= tries || !(err instanceof Error && err.name === 'AbortError'))
          throw new RgwStartError(`RGW did not create bucket ${bucket} (try ${attempt} of ${tries}, ${READY_TIMEOUT_MS / tries} ms each)`, {
            cause: err,
          });
      }
    }
  } finally {
    client.destroy();
  }
}

/**
 * Kills the cluster's daemons if the test process dies without its exit hook running (SIGKILL, a
 * runner's time-out): a shell that reads the pids to watch from a pipe of ours, and SIGKILLs them
 * when the pipe closes. Closed normally, it kills nothing.
 */
class OrphanGuard {
  private readonly child: ChildProcess;

  constructor() {
    const script =
      'pids=" "; while read -r op pid; do if [ "$op" = add ]; then pids="$pids$pid "; else pids=$(echo "$pids" | sed "s/ $pid / /"); fi; done; kill -KILL $pids 2>/dev/null';
    this.child = spawn('sh', ['-c', script], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    this.child.stdin?.on('error', () => undefined);
    this.child.unref();
    (this.child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  }

  watch(pid: number): void {
    this.child.stdin?.write(`add ${pid}\n`);
  }

  forget(pid: number): void {
    this.child.stdin?.write(`del ${pid}\n`);
  }

  /** Ends the guard without killing: the daemons have been stopped. */
  close(): void {
    this.child.kill('SIGKILL');
  }
}
