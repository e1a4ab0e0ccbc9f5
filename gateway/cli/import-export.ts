import { fstatSync, type Stats } from 'node:fs';
import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import type { Command } from 'commander';
import { InvalidArgumentError, VolumeExistsError, errorMessage } from '../../shared/errors.js';
import { formatSize } from '../../shared/units.js';
import { buildBaseExtent, isAllZero } from '../image/base-extent.js';
import type { Head } from '../image/head.js';
import type { BaseRef } from '../image/index-page.js';
import { baseExtentKey } from '../image/layout.js';
import { VolumeImage } from '../image/volume-image.js';
import { VolumeCatalog } from '../volume/catalog.js';
import { addSettingOptions } from './options.js';
import { range, runInOrder, runPool } from './pool.js';
import { rateText, startProgress } from './progress.js';
import { checkVolumeName, cliOwner, parseVolumeRef, type Session, withSession, withTakenVolume } from './session.js';
import { type ImageInput, openImageInput } from './image-input.js';
import { exportOutputPath } from './image-output.js';
import { STORE_SETTINGS } from './settings-help.js';
import { readHeadOrSnapshot, temporarySnapshot } from './snapshot-commands.js';
import { concurrencyArgument, extentSizeArgument, volumeSizeArgument } from './arguments.js';

const DEFAULT_CONCURRENCY = 8;

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

export function registerImportExport(program: Command): void {
  addSettingOptions(
    program
      .command('import <file> <name>')
      .description('copy a raw disk image into a volume, creating the volume if it does not exist')
      .option('--size <size>', 'size of a new volume (default: the file size rounded up to 512 bytes)')
      .option('--extent-size <size>', 'extent size of a new volume, a power of two from 64KiB to 64MiB (default 4MiB)')
      .option('--concurrency <n>', 'extent uploads in flight', String(DEFAULT_CONCURRENCY))
      .option('--force', 'replace the contents of an existing volume')
      .addHelpText(
        'after',
        '\nAll-zero 4 KiB blocks are not stored. Over an existing volume (--force) the whole volume is replaced in one\n' +
          'step, when everything is uploaded: an interrupted import leaves the volume as it was. Snapshots keep the\n' +
          'old contents. The volume must not be served by a gateway meanwhile.\n' +
          'FILE may be - (stdin) or another pipe: it fills a volume of --size (or the existing one), and must not be\n' +
          'longer. Images that are not raw (qcow2, VMDK, VHDX, VDI, VHD) are refused with the qemu-img command to use.',
      ),
    STORE_SETTINGS,
  ).action(async (file: string, name: string, opts: ImportOptions, cmd: Command) => {
    await importCommand(file, name, opts, cmd);
  });

  addSettingOptions(
    program
      .command('export <volume[@snapshot]> <file>')
      .description('copy a volume or one of its snapshots into a raw disk image (sparse where it has no data)')
      .option('--concurrency <n>', 'extent downloads in flight', String(DEFAULT_CONCURRENCY))
      .option('--force', 'overwrite FILE if it exists (a regular file or a block device)')
      .addHelpText(
        'after',
        '\nA volume (no @snapshot) is exported as of one instant: a temporary snapshot is taken — through the gateway\n' +
          'serving it, if any — and deleted afterwards. FILE may also be - (stdout), a pipe or /dev/stdout; then every byte is\n' +
          'written in order, zeros included.',
      ),
    STORE_SETTINGS,
  ).action(async (ref: string, file: string, opts: ExportOptions, cmd: Command) => {
    await exportCommand(ref, file, opts, cmd);
  });
}

// ---------------------------------------------------------------- import

async function importCommand(file: string, name: string, opts: ImportOptions, cmd: Command): Promise<void> {
  checkVolumeName(name);
  const concurrency = concurrencyArgument(opts.concurrency);
  const size = opts.size === undefined ? undefined : volumeSizeArgument(opts.size);
  const extentSize = opts.extentSize === undefined ? undefined : extentSizeArgument(opts.extentSize);
  const fh = await openImageInput(file, name);
  try {
    // A stream's length is known only at its end: it fills the volume, of --size or the existing one's.
    if (fh.size === undefined && size === undefined && opts.force !== true)
      throw new InvalidArgumentError(`${fh.label} is a stream: give --size for the new volume`);
    const fileSize = fh.size ?? size ?? 0;
    await withSession(cmd, async (session) => {
      await importTarget(session, { file, name, fileSize, size, extentSize, force: opts.force === true });
      await withTakenVolume(session, name, async (volume) => {
        const started = Date.now();
        const head = volume.head;
        const bases = new Map<number, BaseRef>();
        let bytesRead = 0;
        const length = fh.size ?? head.size;
        const progress = startProgress('import', length);
        try {
          await runPool([...range(Math.ceil(length / head.extentSize))], concurrency, session.signal, () => {
            const buf = Buffer.allocUnsafe(head.extentSize);
            return async (index) => {
              const extent = buf.subarray(0, Math.min(head.extentSize, head.size - index * head.extentSize));
              const n = await readAt(fh, extent, index * head.extentSize);
              bytesRead += n;
              if (!isAllZero(extent)) {
                const key = baseExtentKey(name, index, head.epoch, volume.committedSeq);
                const { body, bodyCrc, ref } = buildBaseExtent(extent, index * head.extentSize, key, head.epoch, volume.committedSeq);
                await session.store.put(key, body, { crc32c: bodyCrc });
                bases.set(index, ref);
              }
              progress.advance(n);
            };
          });
        } finally {
          progress.stop();
        }
        await fh.expectEndBefore(head.size);
        await volume.replaceContents(bases);
        const extents = Math.ceil(head.size / head.extentSize);
        process.stdout.write(
          `imported ${file} into volume ${name}: ${formatSize(bytesRead)} read, ${bases.size} extents uploaded, ${extents - bases.size} zero extents skipped, ${rateText(bytesRead, Date.now() - started)}\n`,
        );
      });
    });
  } finally {
    await fh.close();
  }
}

/** The volume to import into: the existing one if --force allows it, else a new one sized for the file. */
async function importTarget(
  session: Session,
  req: { file: string; name: string; fileSize: number; size: number | undefined; extentSize: number | undefined; force: boolean },
): Promise<void> {
  const catalog = new VolumeCatalog(session.store);
  if (await catalog.exists(req.name)) {
    const m = await catalog.get(req.name);
    if (!req.force) throw new VolumeExistsError(`volume ${req.name} already exists; use --force to replace its contents with ${req.file}`);
    if (m.size < req.fileSize)
      throw new InvalidArgumentError(`${req.file} (${req.fileSize} bytes) does not fit in volume ${req.name} (${m.size} bytes)`);
    if (req.size !== undefined && req.size !== m.size)
      throw new InvalidArgumentError(`--size cannot resize existing volume ${req.name} (${m.size} bytes)`);
    if (req.extentSize !== undefined && req.extentSize !== m.extentSize) {
      throw new InvalidArgumentError(
        `--extent-size cannot change the extent size of existing volume ${req.name} (${formatSize(m.extentSize)})`,
      );
    }
    return;
  }
  const size = req.size ?? Math.ceil(req.fileSize / 512) * 512;
  if (size === 0) throw new InvalidArgumentError(`${req.file} is empty; give --size to create an empty volume`);
  if (size < req.fileSize) throw new InvalidArgumentError(`--size ${size} is smaller than ${req.file} (${req.fileSize} bytes)`);
  // Created as this command's: a gateway serving every volume leaves it alone until the import is done.
  await catalog.create({ name: req.name, size, extentSize: req.extentSize ?? session.config.extentSize, owner: await cliOwner(session) });
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

async function exportCommand(refText: string, fileArg: string, opts: ExportOptions, cmd: Command): Promise<void> {
  const ref = parseVolumeRef(refText);
  const file = exportOutputPath(fileArg);
  const concurrency = concurrencyArgument(opts.concurrency);
  const target = await checkOutput(file, opts.force === true);
  await withSession(cmd, async (session) => {
    const run = async (head: Head, label: string): Promise<void> => {
      const image = await VolumeImage.load(session.store, head);
      const out = { ...target, fh: await openOutput(file, target.flags) };
      const started = Date.now();
      const downloaded = await exportToOutput(session, image, out, file, concurrency);
      const extents = Math.ceil(head.size / head.extentSize);
      (out.isStdout ? process.stderr : process.stdout).write(
        `exported ${label} to ${file}: ${formatSize(head.size)}, ${downloaded} extents with data, ${extents - downloaded} empty extents ${out.kind === 'sparse' ? 'left as holes' : 'written as zeros'}, ${rateText(head.size, Date.now() - started)}\n`,
      );
    };
    if (ref.snapshot !== undefined)
      await run(await readHeadOrSnapshot(session.store, ref.volume, ref.snapshot), `volume ${ref.volume} snapshot ${ref.snapshot}`);
    else await temporarySnapshot(session, ref.volume, 'export', (head) => run(head, `volume ${ref.volume}`));
  });
}

/** Writes the image into `out`, closing it; a regular file left incomplete is removed, as it would look whole. */
async function exportToOutput(session: Session, image: VolumeImage, out: Output, file: string, concurrency: number): Promise<number> {
  const size = image.shape.size;
  let downloaded = 0;
  const progress = startProgress('export', size);
  try {
    if (out.kind === 'sparse') await out.fh.truncate(size);
    const load = async (index: number): Promise<Buffer | null> => {
      const data = await image.materialize(index, session.signal);
      if (data !== null) downloaded++;
      return data;
    };
    const extents = [...range(image.extentCount)];
    if (out.kind === 'stream') {
      await runInOrder(
        extents,
        concurrency,
        session.signal,
        async (i) => (await load(i)) ?? Buffer.alloc(image.extentLength(i)),
        async (data) => {
          await writeFully(out.fh, data, null);
          progress.advance(data.length);
        },
      );
    } else {
      await runPool(extents, concurrency, session.signal, () => async (index) => {
        const data = await load(index);
        const length = image.extentLength(index);
        // A sparse file already reads as zeros where nothing is written.
        if (data !== null && !(out.kind === 'sparse' && isAllZero(data))) await writeFully(out.fh, data, index * image.shape.extentSize);
        else if (out.kind === 'device') await writeFully(out.fh, Buffer.alloc(length), index * image.shape.extentSize);
        progress.advance(length);
      });
    }
    if (out.kind !== 'stream') await out.fh.sync();
    await out.fh.close();
    return downloaded;
  } catch (err) {
    await out.fh.close().catch(() => undefined);
    // Never our own stdout: when it is a file, the path is /dev/stdout.
    if (out.kind === 'sparse' && !out.isStdout) await unlink(file).catch(() => undefined);
    throw err;
  } finally {
    progress.stop();
  }
}

/** Decides how to write FILE, refusing to overwrite one without --force, before anything is taken or changed. */
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

/** `position` null appends at the current offset (pipes cannot seek). */
async function writeFully(fh: FileHandle, data: Buffer, position: number | null): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position === null ? null : position + done);
    done += bytesWritten;
  }
}
