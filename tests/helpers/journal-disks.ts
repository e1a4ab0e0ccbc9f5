import { type ChildProcess, spawn } from 'node:child_process';
import { access, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runTool } from './run-tool.js';

/**
 * Real disks for the journal that fail the way disks do: a small tmpfs that fills up (ENOSPC), and
 * an ext4 filesystem whose block device answers EIO while a trigger file exists. Both need root
 * (mount, losetup) and say so loudly when the machine refuses, rather than letting a test skip.
 */

async function mustRun(cmd: string, args: readonly string[], why: string): Promise<string> {
  const r = await runTool(cmd, args);
  if (r.code !== 0) throw new Error(`${why}: \`${cmd} ${args.join(' ')}\` failed (${r.code ?? 'not run'}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Undoes a mount; safe to call once. */
export type Unmount = () => Promise<void>;

/** Mounts a tmpfs of `bytes` on `dir` (created). */
export async function mountTmpfs(dir: string, bytes: number): Promise<Unmount> {
  await mkdir(dir, { recursive: true });
  await mustRun(
    'mount',
    ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir],
    `a ${bytes}-byte tmpfs for the journal needs mount privileges (root or CAP_SYS_ADMIN)`,
  );
  return async () => {
    await mustRun('umount', [dir], `unmounting the tmpfs on ${dir}`);
  };
}

export interface FailingDisk {
  /** From now on every read and write of the block device fails with EIO, or none does. */
  setFailing(failing: boolean): Promise<void>;
  unmount: Unmount;
}

const FAILING_DISK_BYTES = 64 * 1024 * 1024;

/**
 * An ext4 filesystem on `dir` whose every block I/O fails with EIO while failing is set: nbdkit's
 * memory plugin behind its error filter (triggered by a file), exposed as a file by nbdfuse, and
 * attached as a loop device with direct I/O so that errors reach the filesystem synchronously.
 * No ext4 journal and errors=continue, so that the filesystem keeps going once the device
 * recovers, as a disk behind a flaky path would. `work` holds the FUSE mount and the trigger.
 */
export async function mountFailingDisk(dir: string, work: string): Promise<FailingDisk> {
  const fuseDir = path.join(work, 'fuse');
  const trigger = path.join(work, 'fail-now');
  const image = path.join(fuseDir, 'disk');
  await mkdir(fuseDir, { recursive: true });
  await mkdir(dir, { recursive: true });
  const steps: Unmount[] = [];
  const undo = async (): Promise<void> => {
    const errors: unknown[] = [];
    for (const step of steps.reverse()) await step().catch((err: unknown) => errors.push(err));
    steps.length = 0;
    if (errors.length > 0) throw errors[0];
  };
  try {
    const nbdfuse: ChildProcess = spawn(
      'nbdfuse',
      [
        image,
        '--command',
        'nbdkit',
        '-s',
        '--filter=error',
        'memory',
        String(FAILING_DISK_BYTES),
        'error=EIO',
        'error-rate=100%',
        `error-file=${trigger}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let nbdfuseErr = '';
    nbdfuse.stderr?.setEncoding('utf8').on('data', (chunk: string) => (nbdfuseErr = (nbdfuseErr + chunk).slice(-2000)));
    const exited = new Promise<void>((resolve) =>
      nbdfuse.once('close', () => {
        resolve();
      }),
    );
    const spawnFailed = new Promise<Error>((resolve) => nbdfuse.once('error', resolve));
    steps.push(async () => {
      // Unmounting the FUSE file system ends nbdfuse; the kill is for a mount that never came up.
      await runTool('umount', [fuseDir]);
      nbdfuse.kill('SIGTERM');
      await exited;
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const ready = await access(image).then(
        () => true,
        () => false,
      );
      if (ready) break;
      const failed = await Promise.race([
        spawnFailed,
        new Promise<undefined>((resolve) =>
          setTimeout(() => {
            resolve(undefined);
          }, 50),
        ),
      ]);
      if (failed !== undefined) throw new Error(`a failing journal disk needs nbdfuse (libnbd-bin) and nbdkit: ${failed.message}`);
      if (nbdfuse.exitCode !== null || Date.now() > deadline)
        throw new Error(`nbdfuse did not expose ${image} (it needs /dev/fuse): ${nbdfuseErr}`);
    }
    const loop = (
      await mustRun('losetup', ['--find', '--show', '--direct-io=on', image], 'a failing journal disk needs a loop device')
    ).trim();
    steps.push(async () => {
      await mustRun('losetup', ['--detach', loop], `detaching ${loop}`);
    });
    await mustRun('mkfs.ext4', ['-q', '-F', '-O', '^has_journal', loop], 'formatting the failing journal disk');
    await mustRun('mount', ['-o', 'errors=continue', loop, dir], 'mounting the failing journal disk');
    steps.push(async () => {
      await mustRun('umount', [dir], `unmounting the failing journal disk on ${dir}`);
    });
  } catch (err) {
    await undo().catch(() => undefined);
    throw err;
  }
  return {
    async setFailing(failing: boolean): Promise<void> {
      if (failing) await writeFile(trigger, '');
      else await rm(trigger, { force: true });
    },
    unmount: undo,
  };
}
