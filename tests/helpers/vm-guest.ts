import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, closeSync, openSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { reapOnExit } from './child-reaper.js';

/**
 * A real Linux guest for the VM acceptance test: the Debian cloud kernel under qemu-system-x86_64,
 * booted from an initramfs made here of busybox-static, the virtio modules the kernel needs and
 * tests/vm/guest-init.sh as PID 1, with one virtio disk that is a Holdfast volume over NBD.
 * Everything comes from Debian packages on this machine; nothing is downloaded.
 */

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CACHE_DIR = path.join(REPO, '.cache', 'vm');
const INIT_SCRIPT = path.join(REPO, 'tests', 'vm', 'guest-init.sh');
/** What the guest needs of its kernel: the disk, and the filesystem on it. */
const NEEDED_MODULES = ['virtio_pci', 'virtio_blk', 'ext4', 'crc32c_generic'] as const;
/** The packages the VM suite needs, named in the errors so that a missing one says how to fix it. */
const PACKAGES = 'qemu-system-x86, linux-image-cloud-amd64, busybox-static, cpio, e2fsprogs (`npm run test:vm` installs them)';

/** What every guest of a run boots with. */
export interface GuestSetup {
  readonly kernel: string;
  readonly initrd: string;
  readonly kernelVersion: string;
  readonly accel: Accel;
  /** Why that accelerator, for the test's report. */
  readonly accelReason: string;
}

export type Accel = 'kvm' | 'tcg';
/** A guest under KVM reaches its init in about a second; TCG takes a few. */
const KVM_PROBE_TIMEOUT_MS = 15_000;

/** A tool, the kernel or a module the guest needs is not on this machine. */
export class VmPrerequisiteError extends Error {
  constructor(message: string) {
    super(`${message}; the VM suite needs ${PACKAGES}`);
    this.name = new.target.name;
  }
}

export function requireTool(cmd: string): string {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = path.join(dir, cmd);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      continue;
    }
  }
  throw new VmPrerequisiteError(`${cmd} is not installed`);
}

/** The newest Debian cloud kernel in /boot (a file, not a command, so no PATH lookup finds it). */
async function findKernel(): Promise<{ kernel: string; version: string }> {
  const versions = (await readdir('/boot'))
    .map((name) => /^vmlinuz-(.+-cloud-amd64)$/.exec(name)?.[1])
    .filter((v): v is string => v !== undefined)
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  if (version === undefined) throw new VmPrerequisiteError('no Debian cloud kernel: /boot/vmlinuz-*-cloud-amd64 is missing');
  return { kernel: path.join('/boot', `vmlinuz-${version}`), version };
}

/**
 * The initramfs has no dynamic loader, so a dynamically linked busybox (Debian's `busybox` package,
 * which replaces busybox-static) would leave the guest without init. Reads the ELF program headers
 * for a PT_INTERP entry.
 */
function isStaticElf(elf: Buffer): boolean {
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === PT_INTERP) return false;
  return true;
}

/**
 * The module files to load, dependencies first, for the modules in NEEDED_MODULES that this kernel
 * does not have built in (the cloud kernel builds ext4 in, virtio_blk not; another build may differ).
 * crc32c is only a soft dependency of ext4, which modules.dep does not list.
 */
async function modulesToLoad(version: string): Promise<string[]> {
  const root = path.join('/lib/modules', version);
  const nameOf = (file: string): string =>
    path
      .basename(file)
      .replace(/\.ko(\.\w+)?$/, '')
      .replaceAll('-', '_');
  const builtin = new Set((await readFile(path.join(root, 'modules.builtin'), 'utf8')).split('\n').filter(Boolean).map(nameOf));
  const deps = new Map<string, { file: string; deps: string[] }>();
  for (const line of (await readFile(path.join(root, 'modules.dep'), 'utf8')).split('\n')) {
    const [file, rest] = line.split(':');
    if (file === undefined || rest === undefined) continue;
    deps.set(nameOf(file), { file: path.join(root, file), deps: rest.trim().split(/\s+/).filter(Boolean).map(nameOf) });
  }
  const ordered: string[] = [];
  const visit = (name: string): void => {
    if (builtin.has(name)) return;
    const entry = deps.get(name);
    if (entry === undefined) throw new VmPrerequisiteError(`kernel ${version} has no module ${name} (neither in modules.dep nor built in)`);
    if (ordered.includes(entry.file)) return;
    for (const dep of entry.deps) visit(dep);
    ordered.push(entry.file);
  };
  for (const name of NEEDED_MODULES) visit(name);
  return ordered;
}

/**
 * Builds the initramfs, or finds it in .cache/vm/ from an earlier run: it is keyed by everything
 * that goes into it, so a new kernel, busybox or init script makes a new one.
 */
async function buildInitrd(): Promise<{ kernel: string; initrd: string; kernelVersion: string }> {
  requireTool('qemu-system-x86_64');
  requireTool('cpio');
  const { kernel, version } = await findKernel();
  const busyboxPath = requireTool('busybox');
  const busybox = await readFile(busyboxPath);
  if (!isStaticElf(busybox))
    throw new VmPrerequisiteError(`${busyboxPath} is not statically linked (the busybox package instead of busybox-static)`);
  const modules = await modulesToLoad(version);
  const init = await readFile(INIT_SCRIPT);

  const key = createHash('sha256').update(version).update(busybox).update(init);
  for (const m of modules) key.update(m).update(await readFile(m));
  const initrd = path.join(CACHE_DIR, `initrd-${key.digest('hex').slice(0, 16)}.img`);
  if (
    await stat(initrd).then(
      () => true,
      () => false,
    )
  )
    return { kernel, initrd, kernelVersion: version };

  await mkdir(CACHE_DIR, { recursive: true });
  const staging = await mkdtemp(path.join(CACHE_DIR, 'staging-'));
  try {
    for (const dir of ['bin', 'dev', 'proc', 'sys', 'tmp', 'mnt', 'lib/modules']) await mkdir(path.join(staging, dir), { recursive: true });
    await writeFile(path.join(staging, 'bin', 'busybox'), busybox, { mode: 0o755 });
    await writeFile(path.join(staging, 'init'), init, { mode: 0o755 });
    for (const m of modules) await copyFile(m, path.join(staging, 'lib', 'modules', path.basename(m)));
    await writeFile(path.join(staging, 'lib', 'modules', 'load-order'), modules.map((m) => `${path.basename(m)}\n`).join(''));
    const files = (await readdir(staging, { recursive: true })).map(String).sort();
    const cpio = spawnSync('cpio', ['--quiet', '-o', '-H', 'newc', '-R', '0:0'], {
      cwd: staging,
      input: `${files.join('\n')}\n`,
      maxBuffer: 256 * 1024 * 1024,
    });
    if (cpio.status !== 0) throw new Error(`cpio failed (${cpio.status ?? cpio.signal}): ${cpio.stderr.toString()}`);
    const tmp = `${initrd}.${process.pid}.tmp`;
    await writeFile(tmp, gzipSync(cpio.stdout));
    await rename(tmp, initrd);
    // One initramfs in the cache, so that the README's `.cache/vm/initrd-*.img` names it.
    for (const old of await readdir(CACHE_DIR))
      if (/^initrd-.*\.img$/.test(old) && old !== path.basename(initrd)) await rm(path.join(CACHE_DIR, old), { force: true });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return { kernel, initrd, kernelVersion: version };
}

/**
 * The initramfs and kernel, and the accelerator: KVM only when it really runs this guest (a
 * /dev/kvm that opens may still fail, e.g. nested in another VM whose KVM cannot set up the CPU),
 * TCG otherwise. HOLDFAST_VM_ACCEL=tcg skips the probe and forces emulation, to time the suite as
 * a machine without KVM runs it.
 */
export async function prepareGuest(): Promise<GuestSetup> {
  const images = await buildInitrd();
  const forced = process.env.HOLDFAST_VM_ACCEL;
  if (forced === 'tcg' || forced === 'kvm') return { ...images, accel: forced, accelReason: 'HOLDFAST_VM_ACCEL' };
  if (forced !== undefined) throw new Error(`HOLDFAST_VM_ACCEL=${forced}: expected tcg or kvm`);
  try {
    closeSync(openSync('/dev/kvm', 'r+'));
  } catch (err) {
    return { ...images, accel: 'tcg', accelReason: `no usable /dev/kvm (${(err as NodeJS.ErrnoException).code})` };
  }
  const probe = startQemu({ ...images, accel: 'kvm' }, { append: 'hf.probe', drive: undefined });
  try {
    await probe.waitForLine(/@@hf ALIVE/, KVM_PROBE_TIMEOUT_MS);
    return { ...images, accel: 'kvm', accelReason: 'KVM boots the guest' };
  } catch {
    const qemuSaid = probe.transcript().split('--- qemu stderr ---\n')[1]?.trim().split('\n').at(-1) ?? '';
    return {
      ...images,
      accel: 'tcg',
      accelReason: `/dev/kvm opens, but a KVM guest did not reach its init within ${KVM_PROBE_TIMEOUT_MS} ms${qemuSaid === '' ? '' : ` (${qemuSaid})`}`,
    };
  } finally {
    await probe.kill();
  }
}

/** One line the guest printed on its serial console, stamped with the host's clock when it arrived. */
export interface ConsoleLine {
  /** Date.now() on arrival, comparable with the gateway's event times. */
  readonly at: number;
  readonly text: string;
  /** Its position in Guest.lines, to wait for lines after it. */
  readonly index: number;
}

/** QEMU TLS credentials for the NBD disk: a `tls-creds-*` object definition and its id. */
export interface GuestTls {
  readonly object: string;
  readonly id: string;
}

export interface GuestOptions {
  readonly setup: GuestSetup;
  readonly nbdPort: number;
  readonly exportName: string;
  /** Connect with NBD_OPT_STARTTLS using these credentials. */
  readonly tls?: GuestTls | undefined;
}

export interface Guest {
  readonly lines: readonly ConsoleLine[];
  /** The first line from index `from` on that matches, waiting up to `timeoutMs` for it. */
  waitForLine(pattern: RegExp, timeoutMs: number, from?: number): Promise<ConsoleLine>;
  /** Types a line on the guest's console. */
  send(line: string): void;
  /** Resolves when QEMU has exited (the guest powered off, or it was killed). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(): Promise<void>;
  /** The console and QEMU's own messages, for failure reports. */
  transcript(): string;
}

/** Boots the guest with the Holdfast volume as its virtio disk. */
export function bootGuest(opts: GuestOptions): Guest {
  const drive = [
    'driver=raw',
    'file.driver=nbd',
    'file.server.type=inet',
    'file.server.host=127.0.0.1',
    `file.server.port=${opts.nbdPort}`,
    `file.export=${opts.exportName}`,
    // QEMU's NBD client reconnects and resends unanswered requests after a gateway restart.
    'file.reconnect-delay=60',
    ...(opts.tls === undefined ? [] : [`file.tls-creds=${opts.tls.id}`]),
    'if=virtio',
  ].join(',');
  return startQemu(opts.setup, { append: '', drive, objects: opts.tls === undefined ? [] : [opts.tls.object] });
}

function startQemu(
  setup: Pick<GuestSetup, 'kernel' | 'initrd' | 'accel'>,
  opts: { readonly append: string; readonly drive: string | undefined; readonly objects?: readonly string[] },
): Guest {
  const args = [
    '-accel',
    setup.accel,
    '-smp',
    '1',
    '-m',
    '256',
    // No default VGA, NIC or option ROMs: less to emulate, and no firmware files to need.
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    setup.kernel,
    '-initrd',
    setup.initrd,
    '-append',
    `console=ttyS0 quiet panic=-1 ${opts.append}`.trim(),
    ...(opts.objects ?? []).flatMap((object) => ['-object', object]),
    ...(opts.drive === undefined ? [] : ['-drive', opts.drive]),
  ];
  const child = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const untrack = reapOnExit(child);

  const lines: ConsoleLine[] = [];
  const qemuStderr: string[] = [];
  const waiters = new Set<() => void>();
  let partial = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const at = Date.now();
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    for (const part of parts) lines.push({ at, text: part.replace(/\r$/, ''), index: lines.length });
    for (const wake of waiters) wake();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => qemuStderr.push(chunk));
  child.stdin.on('error', () => undefined);

  let spawnError: Error | undefined;
  let running = true;
  const exitedRaw = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      spawnError = err.code === 'ENOENT' ? new VmPrerequisiteError('qemu-system-x86_64 is not installed') : err;
      running = false;
      untrack();
      for (const wake of waiters) wake();
      resolve({ code: null, signal: null });
    });
    // 'close', not 'exit': the console has been read to its end by then.
    child.once('close', (code, signal) => {
      running = false;
      untrack();
      if (partial !== '') lines.push({ at: Date.now(), text: partial, index: lines.length });
      partial = '';
      for (const wake of waiters) wake();
      resolve({ code, signal });
    });
  });
  // Only the test's own waits hold the event loop; a forgotten guest is killed by the exit hook.
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) if (stream instanceof Socket) stream.unref();
  const holdAlive = (): void => {
    child.ref();
    for (const stream of [child.stdin, child.stdout, child.stderr]) if (stream instanceof Socket) stream.ref();
  };

  const transcript = (): string =>
    `--- guest console (${setup.accel}) ---\n${lines.map((l) => l.text).join('\n')}${partial}\n--- qemu stderr ---\n${qemuStderr.join('')}`;

  const waitForLine = (pattern: RegExp, timeoutMs: number, from = 0): Promise<ConsoleLine> =>
    new Promise((resolve, reject) => {
      let next = from;
      const timer = setTimeout(() => {
        finish(new Error(`no guest console line matching ${pattern} within ${timeoutMs} ms\n${transcript()}`));
      }, timeoutMs);
      const check = (): void => {
        for (; next < lines.length; next++) {
          const line = lines[next]!;
          if (pattern.test(line.text)) {
            finish(undefined, line);
            return;
          }
        }
        if (spawnError !== undefined) {
          finish(spawnError);
          return;
        }
        if (!running) finish(new Error(`the guest exited before printing a line matching ${pattern}\n${transcript()}`));
      };
      const finish = (err: Error | undefined, line?: ConsoleLine): void => {
        clearTimeout(timer);
        waiters.delete(check);
        if (err !== undefined) reject(err);
        else resolve(line!);
      };
      waiters.add(check);
      check();
    });

  return {
    lines,
    waitForLine,
    send: (line) => void child.stdin.write(`${line}\n`),
    get exited() {
      holdAlive();
      return exitedRaw;
    },
    async kill() {
      holdAlive();
      if (running) child.kill('SIGKILL');
      await exitedRaw;
    },
    transcript,
  };
}
