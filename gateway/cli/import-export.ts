import { fstatSync, type Stats } from 'node:fs';
import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { HoldfastError, InvalidArgumentError, VolumeExistsError, errorMessage } from '../../shared/errors.js';
import { formatSize } from '../../shared/units.js';
import { VOLUME_NAME, isValidExtentSize, type VolumeManifest } from '../../shared/volume-manifest.js';
import type { ResolvedConfig } from '../config/load-config.js';
import { volumeOptions } from '../config/volume-options.js';
import { createLogger } from '../logger.js';
import type { ObjectStore } from '../store/object-store.js';
import { openStore } from '../store/open-store.js';
import { VolumeCatalog } from '../volume/catalog.js';
import { VolumeCorruptError } from '../volume/errors.js';
import { extentIndexFromKey, extentKey, extentsPrefix } from '../volume/layout.js';
import { Volume } from '../volume/volume.js';
import { withVolumeLock } from '../volume/volume-lock.js';
import { type ImageInput, openImageInput } from './image-input.js';
import { exportOutputPath } from './image-output.js';
import { addSettingOptions, configFrom } from './options.js';
import { STORE_SETTINGS } from './settings-help.js';
import { sizeArgument } from './volume-commands.js';

const DEFAULT_CONCURRENCY = 8;
const MAX_CONCURRENCY = 256;
const PROGRESS_LINE_EVERY_MS = 5000;
const MiB = 2 ** 20;

/** The operation was stopped by SIGINT or SIGTERM; whatever was written so far stays written. */
class InterruptedError extends HoldfastError {}

interface ImportOptions {
  readonly size?: string;
  readonly extentSize?: string;
  readonly concurrency: string;
  readonly force?: boolean;
}

interface ExportOptions {
  readonly concurrency: string;
  readonly force?: boolean;
}

/** What a command works with: its settings, the store, a logger, and the signal that says the user interrupted it. */
interface Session {
  readonly config: ResolvedConfig;
  readonly store: ObjectStore;
  readonly logger: Logger;
  readonly signal: AbortSignal;
}

export function registerImportExport(program: Command): void {
  addSettingOptions(
    program
      .command('import <file> <name>')
      .description('copy a raw disk image (a file, or - for stdin) into a volume, creating the volume if it does not exist')
      .option('--size <size>', 'size of a new volume (default: the file size rounded up to 512 bytes)')
      .option('--extent-size <size>', 'extent size of a new volume, a power of two from 64KiB to 64MiB (default 4MiB)')
      .option('--concurrency <n>', 'extent uploads in flight', String(DEFAULT_CONCURRENCY))
      .option('--force', 'overwrite the contents of an existing volume')
      .addHelpText(
        'after',
        '\nAll-zero extents are not uploaded. Over an existing volume (--force) the whole volume is replaced: what lies\n' +
          'past the end of FILE reads as zeros afterwards. A failed or interrupted import leaves the volume partly\n' +
          'written; run it again with --force. The volume must not be served by a gateway meanwhile.\n' +
          'FILE may be - (stdin) or another pipe: it fills a volume of --size (or the existing one), and must not be\n' +
          'longer. Images that are not raw (qcow2, VMDK, VHDX, VDI, VHD) are refused with the qemu-img command to use.',
      ),
    STORE_SETTINGS,
  ).action(async (file: string, name: string, opts: ImportOptions, cmd: Command) => {
    await importCommand(file, name, opts, cmd);
  });

  addSettingOptions(
    program
      .command('export <name> <file>')
      .description('copy a volume into a raw disk image (sparse where the volume has no data)')
      .option('--concurrency <n>', 'extent downloads in flight', String(DEFAULT_CONCURRENCY))
      .option('--force', 'overwrite FILE if it exists (a regular file or a block device)')
      .addHelpText('after', '\nFILE may also be - (stdout), a pipe or /dev/stdout; then every byte is written in order, zeros included.'),
    STORE_SETTINGS,
  ).action(async (name: string, file: string, opts: ExportOptions, cmd: Command) => {
    await exportCommand(name, file, opts, cmd);
  });
}

// ---------------------------------------------------------------- import

interface ImportTotals {
  bytesRead: number;
  uploaded: number;
  /** Extents of the volume left without an object, inside the file or past its end. */
  zeroExtents: number;
  staleDeleted: number;
}

async function importCommand(file: string, name: string, opts: ImportOptions, cmd: Command): Promise<void> {
  checkVolumeName(name);
  const concurrency = concurrencyArgument(opts.concurrency);
  const size = opts.size === undefined ? undefined : volumeSizeArgument(opts.size);
  const extentSize = opts.extentSize === undefined ? undefined : extentSizeArgument(opts.extentSize);
  const fh = await openImageInput(file, name);
  try {
    // A stream's length is known only at its end: it fills the volume, of --size or the existing one's.
    if (fh.size === undefined && size === undefined && opts.force !== true) throw new InvalidArgumentError(`${fh.label} is a stream: give --size for the new volume`);
    const fileSize = fh.size ?? size ?? 0;
    await withSession(cmd, (session) =>
      lockVolume(session, name, async () => {
        const manifest = await importTarget(session, { file, name, fileSize, size, extentSize, force: opts.force === true });
        await drainJournalBacklog(session, manifest);
        const started = Date.now();
        const totals = await importExtents(session, manifest, fh, fh.size ?? manifest.size, concurrency);
        await fh.expectEndBefore(manifest.size);
        process.stdout.write(`${importSummary(file, name, totals, Date.now() - started)}\n`);
      }),
    );
  } finally {
    await fh.close();
  }
}

/** The volume to import into: the existing one if --force allows it, else a new one sized for the file. */
async function importTarget(
  session: Session,
  req: { file: string; name: string; fileSize: number; size: number | undefined; extentSize: number | undefined; force: boolean },
): Promise<VolumeManifest> {
  const catalog = new VolumeCatalog(session.store);
  if (await catalog.exists(req.name)) {
    const m = await catalog.get(req.name);
    if (!req.force) throw new VolumeExistsError(`volume ${req.name} already exists; use --force to replace its contents with ${req.file}`);
    if (m.size < req.fileSize) throw new InvalidArgumentError(`${req.file} (${req.fileSize} bytes) does not fit in volume ${req.name} (${m.size} bytes)`);
    if (req.size !== undefined && req.size !== m.size) throw new InvalidArgumentError(`--size cannot resize existing volume ${req.name} (${m.size} bytes)`);
    if (req.extentSize !== undefined && req.extentSize !== m.extentSize) {
      throw new InvalidArgumentError(`--extent-size cannot change the extent size of existing volume ${req.name} (${formatSize(m.extentSize)})`);
    }
    return m;
  }
  const size = req.size ?? Math.ceil(req.fileSize / 512) * 512;
  if (size === 0) throw new InvalidArgumentError(`${req.file} is empty; give --size to create an empty volume`);
  if (size < req.fileSize) throw new InvalidArgumentError(`--size ${size} is smaller than ${req.file} (${req.fileSize} bytes)`);
  return catalog.create({ name: req.name, size, extentSize: req.extentSize ?? session.config.extentSize });
}

/**
 * Every extent that holds part of the file, and every stored extent past its end: the imported
 * volume must read exactly as the file padded with zeros, so stale extents are deleted.
 */
async function importExtents(session: Session, m: VolumeManifest, fh: ImageInput, fileSize: number, concurrency: number): Promise<ImportTotals> {
  const stored = await storedExtents(session.store, m.name);
  const fileExtents = Math.ceil(fileSize / m.extentSize);
  const work = [...range(fileExtents), ...[...stored].filter((i) => i >= fileExtents)];
  const totals: ImportTotals = { bytesRead: 0, uploaded: 0, zeroExtents: 0, staleDeleted: 0 };
  const zeros = Buffer.alloc(m.extentSize);
  const progress = startProgress('import', fileSize);
  try {
    await runPool(work, concurrency, session.signal, () => {
      const buf = Buffer.allocUnsafe(m.extentSize);
      return async (index) => {
        const extent = buf.subarray(0, extentLength(m, index));
        const n = await readAt(fh, extent, index * m.extentSize);
        totals.bytesRead += n;
        await storeExtent(session.store, m.name, index, extent, { zeros, stored, totals });
        progress.advance(n);
      };
    });
  } finally {
    progress.stop();
  }
  totals.zeroExtents = Math.ceil(m.size / m.extentSize) - totals.uploaded;
  return totals;
}

async function storeExtent(
  store: ObjectStore,
  name: string,
  index: number,
  extent: Buffer,
  ctx: { zeros: Buffer; stored: ReadonlySet<number>; totals: ImportTotals },
): Promise<void> {
  if (!extent.equals(ctx.zeros.subarray(0, extent.length))) {
    await store.put(extentKey(name, index), extent);
    ctx.totals.uploaded++;
    return;
  }
  if (ctx.stored.has(index)) {
    await store.delete(extentKey(name, index));
    ctx.totals.staleDeleted++;
  }
}

/** Fills `buf` from `position`, zero-filling what lies past the end of the file; returns the bytes read. */
async function readAt(fh: ImageInput, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  buf.fill(0, done);
  return done;
}

function importSummary(file: string, name: string, t: ImportTotals, elapsedMs: number): string {
  const stale = t.staleDeleted > 0 ? ` (${t.staleDeleted} stale ones deleted)` : '';
  return (
    `imported ${file} into volume ${name}: ${formatSize(t.bytesRead)} read, ${t.uploaded} extents uploaded, ` +
    `${t.zeroExtents} zero extents skipped${stale}, ${rateText(t.bytesRead, elapsedMs)}`
  );
}

// ---------------------------------------------------------------- export

/** `sparse`: a regular file we truncated; `device`: positional writes of every byte; `stream`: in order. */
type OutputKind = 'sparse' | 'device' | 'stream';

interface OutputTarget {
  readonly kind: OutputKind;
  /** The output is our own stdout, so the summary goes to stderr. */
  readonly isStdout: boolean;
  readonly flags: string;
}

interface Output extends OutputTarget {
  readonly fh: FileHandle;
}

interface ExportTotals {
  downloaded: number;
  holes: number;
}

async function exportCommand(name: string, fileArg: string, opts: ExportOptions, cmd: Command): Promise<void> {
  checkVolumeName(name);
  const file = exportOutputPath(fileArg);
  const concurrency = concurrencyArgument(opts.concurrency);
  const target = await checkOutput(file, opts.force === true);
  await withSession(cmd, async (session) => {
    const manifest = await new VolumeCatalog(session.store).get(name);
    await lockVolume(session, name, async () => {
      await drainJournalBacklog(session, manifest);
      const out = { ...target, fh: await openOutput(file, target.flags) };
      const started = Date.now();
      const totals = await exportToOutput(session, manifest, out, file, concurrency);
      (out.isStdout ? process.stderr : process.stdout).write(`${exportSummary(manifest, file, out.kind, totals, Date.now() - started)}\n`);
    });
  });
}

/** Writes the volume into `out`, closing it; a regular file left incomplete is removed, as it would look whole. */
async function exportToOutput(session: Session, m: VolumeManifest, out: Output, file: string, concurrency: number): Promise<ExportTotals> {
  try {
    if (out.kind === 'sparse') await out.fh.truncate(m.size);
    const totals = await exportExtents(session, m, out, concurrency);
    if (out.kind !== 'stream') await out.fh.sync();
    await out.fh.close();
    return totals;
  } catch (err) {
    await out.fh.close().catch(() => undefined);
    // Never our own stdout: when it is a file, the path is /dev/stdout.
    if (out.kind === 'sparse' && !out.isStdout) await unlink(file).catch(() => undefined);
    throw err;
  }
}

/** Decides how to write FILE, refusing to overwrite one without --force, before anything is locked or changed. */
async function checkOutput(file: string, force: boolean): Promise<OutputTarget> {
  const existing = await stat(file).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new InvalidArgumentError(`cannot use ${file}: ${errorMessage(err)}`, { cause: err });
  });
  if (existing === undefined) return { kind: 'sparse', isStdout: false, flags: 'wx' };
  if (existing.isDirectory()) throw new InvalidArgumentError(`${file} is a directory`);
  // Redirected stdout was chosen by the user on purpose, so it needs no --force.
  const isStdout = sameFile(existing, 1);
  if ((existing.isFile() || existing.isBlockDevice()) && !force && !isStdout) {
    throw new InvalidArgumentError(`${file} exists; use --force to overwrite it`);
  }
  if (existing.isFile()) return { kind: 'sparse', isStdout, flags: 'w' };
  if (existing.isBlockDevice()) return { kind: 'device', isStdout, flags: 'r+' };
  return { kind: 'stream', isStdout, flags: 'w' };
}

async function openOutput(file: string, flags: string): Promise<FileHandle> {
  try {
    return await open(file, flags);
  } catch (cause) {
    throw new InvalidArgumentError(`cannot open ${file} for writing: ${errorMessage(cause)}`, { cause });
  }
}

function sameFile(st: Stats, fd: number): boolean {
  try {
    const other = fstatSync(fd);
    return other.dev === st.dev && other.ino === st.ino;
  } catch {
    return false;
  }
}

function exportSummary(m: VolumeManifest, file: string, kind: OutputKind, t: ExportTotals, elapsedMs: number): string {
  return (
    `exported volume ${m.name} to ${file}: ${formatSize(m.size)}, ${t.downloaded} extents downloaded, ` +
    `${t.holes} empty extents ${kind === 'sparse' ? 'left as holes' : 'written as zeros'}, ${rateText(m.size, elapsedMs)}`
  );
}

interface ExportJob {
  readonly m: VolumeManifest;
  readonly out: Output;
  readonly stored: ReadonlySet<number>;
  readonly zeros: Buffer;
  readonly progress: Progress;
  /** The extent's bytes: its object, or zeros when it has none. */
  readonly load: (index: number) => Promise<Buffer>;
}

async function exportExtents(session: Session, m: VolumeManifest, out: Output, concurrency: number): Promise<ExportTotals> {
  const stored = await storedExtents(session.store, m.name);
  const zeros = Buffer.alloc(m.extentSize);
  const extentCount = Math.ceil(m.size / m.extentSize);
  let downloaded = 0;
  const load = async (index: number): Promise<Buffer> => {
    const body = stored.has(index) ? await fetchExtent(session.store, m, index) : undefined;
    if (body !== undefined) downloaded++;
    return body ?? zeros.subarray(0, extentLength(m, index));
  };
  const progress = startProgress('export', m.size);
  try {
    const job: ExportJob = { m, out, stored, zeros, progress, load };
    if (out.kind === 'stream') await exportInOrder(job, concurrency, session.signal);
    else await exportAtOffsets(job, concurrency, session.signal);
  } finally {
    progress.stop();
  }
  return { downloaded, holes: extentCount - downloaded };
}

async function exportInOrder(job: ExportJob, concurrency: number, signal: AbortSignal): Promise<void> {
  await runInOrder([...range(Math.ceil(job.m.size / job.m.extentSize))], concurrency, signal, job.load, async (data) => {
    await writeFully(job.out.fh, data, null);
    job.progress.advance(data.length);
  });
}

/** A device gets every extent; a sparse file only the stored ones, as it already reads as zeros elsewhere. */
async function exportAtOffsets(job: ExportJob, concurrency: number, signal: AbortSignal): Promise<void> {
  const { m, out, zeros, progress } = job;
  const sparse = out.kind === 'sparse';
  const work = sparse ? [...job.stored].sort((a, b) => a - b) : [...range(Math.ceil(m.size / m.extentSize))];
  if (sparse) progress.advance(m.size - work.reduce((sum, i) => sum + extentLength(m, i), 0));
  await runPool(work, concurrency, signal, () => async (index) => {
    const data = await job.load(index);
    if (!sparse || !data.equals(zeros.subarray(0, data.length))) await writeFully(out.fh, data, index * m.extentSize);
    progress.advance(data.length);
  });
}

async function fetchExtent(store: ObjectStore, m: VolumeManifest, index: number): Promise<Buffer | undefined> {
  const body = await store.get(extentKey(m.name, index));
  const expected = extentLength(m, index);
  if (body !== undefined && body.length !== expected) {
    throw new VolumeCorruptError(`extent ${index} of volume ${m.name} has ${body.length} bytes, expected ${expected}`);
  }
  return body;
}

/** `position` null appends at the current offset (pipes cannot seek). */
async function writeFully(fh: FileHandle, data: Buffer, position: number | null): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position === null ? null : position + done);
    done += bytesWritten;
  }
}

// ---------------------------------------------------------------- volume access

async function withSession<T>(cmd: Command, fn: (session: Session) => Promise<T>): Promise<T> {
  const config = configFrom(cmd);
  const logger = createLogger(config.logLevel, config.logFormat);
  const store = openStore(config);
  const interrupt = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    // A second signal means the user will not wait for the in-flight requests and the lock release.
    if (interrupt.signal.aborted) process.exit(130);
    interrupt.abort(new InterruptedError(`interrupted by ${signal}; the volume lock was released`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn({ config, store, logger, signal: interrupt.signal });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await store.close();
    logger.flush();
  }
}

function lockVolume<T>(session: Session, name: string, fn: () => Promise<T>): Promise<T> {
  return withVolumeLock({ name, journalRoot: session.config.journalRoot, store: session.store, logger: session.logger }, fn);
}

/**
 * Uploads what a stopped gateway left in the volume's journal. Left there, those records would be
 * replayed over an import by the next gateway, and an export would miss acknowledged writes.
 */
async function drainJournalBacklog(session: Session, manifest: VolumeManifest): Promise<void> {
  const volume = await Volume.open(volumeOptions(session.config, manifest, session.store, session.logger));
  try {
    const records = volume.stats().pendingEntries;
    if (records === 0) return;
    process.stderr.write(`volume ${manifest.name}: uploading ${records} journal record(s) left by a gateway first\n`);
    await untilAborted(volume.drain(), session.signal);
  } finally {
    await volume.close();
  }
}

async function storedExtents(store: ObjectStore, name: string): Promise<Set<number>> {
  const out = new Set<number>();
  for await (const key of store.list(extentsPrefix(name))) {
    const index = extentIndexFromKey(name, key);
    if (index !== undefined) out.add(index);
  }
  return out;
}

function extentLength(m: VolumeManifest, index: number): number {
  return Math.min(m.extentSize, m.size - index * m.extentSize);
}

// ---------------------------------------------------------------- concurrency

/**
 * Runs `task` over `items` with `concurrency` workers, each built by `makeWorker` so that it can own
 * a reusable buffer. After the first failure no new item starts; the failure is thrown once every
 * worker has stopped, so no buffer is still in use when the caller moves on.
 */
async function runPool(
  items: readonly number[],
  concurrency: number,
  signal: AbortSignal,
  makeWorker: () => (item: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { readonly err: unknown } | undefined;
  const work = async (task: (item: number) => Promise<void>): Promise<void> => {
    while (failure === undefined && !signal.aborted && next < items.length) {
      try {
        await task(items[next++]!);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, () => work(makeWorker())));
  if (failure !== undefined) throw failure.err;
  signal.throwIfAborted();
}

/** Fetches up to `concurrency` items ahead but consumes them strictly in order. */
async function runInOrder(
  items: readonly number[],
  concurrency: number,
  signal: AbortSignal,
  fetch: (item: number) => Promise<Buffer>,
  consume: (data: Buffer) => Promise<void>,
): Promise<void> {
  const ahead: Promise<Buffer>[] = [];
  const start = (item: number): void => {
    const p = fetch(item);
    // Awaited in turn below; until then a failure must not count as unhandled.
    p.catch(() => undefined);
    ahead.push(p);
  };
  let next = 0;
  while (next < items.length && ahead.length < concurrency) start(items[next++]!);
  while (ahead.length > 0) {
    signal.throwIfAborted();
    const data = await ahead.shift()!;
    if (next < items.length) start(items[next++]!);
    await consume(data);
  }
}

function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function* range(n: number): Generator<number> {
  for (let i = 0; i < n; i++) yield i;
}

// ---------------------------------------------------------------- progress

interface Progress {
  advance(bytes: number): void;
  stop(): void;
}

/** A bar on a terminal; elsewhere (logs, CI) a plain line every few seconds. */
function startProgress(label: string, total: number): Progress {
  return process.stderr.isTTY === true ? barProgress(label, total) : lineProgress(label, total);
}

function barProgress(label: string, total: number): Progress {
  const started = Date.now();
  const bar = new SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% | {doneText} / {totalText} | {rateText} | ETA {eta_formatted}`,
    hideCursor: true,
    // Our own signal handler releases the volume lock; the bar is stopped in a finally.
    gracefulExit: false,
    etaBuffer: 50,
  });
  const payload = (done: number) => ({ doneText: formatSize(done), totalText: formatSize(total), rateText: `${mibPerSecond(done, Date.now() - started)} MiB/s` });
  let done = 0;
  bar.start(total, 0, payload(0));
  return {
    advance(bytes) {
      done += bytes;
      bar.update(done, payload(done));
    },
    stop: () => bar.stop(),
  };
}

function lineProgress(label: string, total: number): Progress {
  const started = Date.now();
  let done = 0;
  const timer = setInterval(() => {
    const elapsed = Date.now() - started;
    const rate = done / Math.max(elapsed, 1);
    const eta = rate > 0 ? `, ETA ${Math.ceil((total - done) / rate / 1000)} s` : '';
    process.stderr.write(`${label}: ${formatSize(done)} of ${formatSize(total)} (${Math.floor((done / Math.max(total, 1)) * 100)}%), ${mibPerSecond(done, elapsed)} MiB/s${eta}\n`);
  }, PROGRESS_LINE_EVERY_MS);
  timer.unref();
  return {
    advance(bytes) {
      done += bytes;
    },
    stop: () => clearInterval(timer),
  };
}

function rateText(bytes: number, elapsedMs: number): string {
  return `in ${(elapsedMs / 1000).toFixed(2)} s (${mibPerSecond(bytes, elapsedMs)} MiB/s)`;
}

function mibPerSecond(bytes: number, elapsedMs: number): string {
  return (bytes / MiB / (Math.max(elapsedMs, 1) / 1000)).toFixed(1);
}

// ---------------------------------------------------------------- arguments

function checkVolumeName(name: string): void {
  if (!VOLUME_NAME.test(name)) throw new InvalidArgumentError(`"${name}" is not a valid volume name (letters, digits, . _ -; at most 63)`);
}

function concurrencyArgument(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > MAX_CONCURRENCY) throw new InvalidArgumentError(`--concurrency "${text}" must be a whole number from 1 to ${MAX_CONCURRENCY}`);
  return n;
}

function volumeSizeArgument(text: string): number {
  const n = sizeArgument(text, '--size');
  if (n <= 0 || n % 512 !== 0) throw new InvalidArgumentError(`--size ${text} must be a positive multiple of 512 bytes`);
  return n;
}

function extentSizeArgument(text: string): number {
  const n = sizeArgument(text, '--extent-size');
  if (!isValidExtentSize(n)) throw new InvalidArgumentError(`--extent-size ${text} must be a power of two from 64KiB to 64MiB`);
  return n;
}
