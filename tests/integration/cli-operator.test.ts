/**
 * The CLI as an operator meets it, in child processes: --version, usage errors (one line, a hint,
 * exit 2), --volumes with commas, `status` (its interval, a closed pipe, its columns and colours on a
 * real terminal), an S3 store without a region, and `-` for import and export, with images that are
 * not raw refused with the qemu-img command that works. Build first: `npm run build`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stripVTControlCharacters } from 'node:util';
import { NODE_MAJOR } from '../../shared/node-runtime.js';
import { setHangPolicy, volumeStatus } from '../helpers/admin-api.js';
import { reapOnExit } from '../helpers/child-reaper.js';
import { HOLDFAST_BIN, type CliResult, cleanEnv, runCli } from '../helpers/cli-process.js';
import { type GatewayProcess, startGateway } from '../helpers/gateway-process.js';
import { runTool } from '../helpers/run-tool.js';
import { startS3FaultProxy, type S3FaultProxy } from '../helpers/s3-fault-proxy.js';
import { type S3Server, startS3Server } from '../helpers/s3-server.js';

const MiB = 2 ** 20;
/** Bounds a wait so that a broken run fails instead of hanging; not a timing assertion. */
const WAIT_MS = 60_000;

function assertExit(r: CliResult, code: number, what: string): void {
  assert.equal(r.code, code, `${what}: exit ${r.code}, expected ${code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
}

/** A usage error: exit 2, nothing on stdout, the message and a hint on stderr, never the help page. */
function assertUsageError(
  r: CliResult,
  what: string,
  message: RegExp,
  hint: RegExp = /^Try 'holdfast[\w -]* --help' for more information\.$/,
): void {
  assertExit(r, 2, what);
  assert.equal(r.stdout, '', `${what}: stdout`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.match(lines[0]!, message, `${what}: the message`);
  assert.match(lines.slice(1).join('\n'), hint, `${what}: the hint`);
  assert.ok(!/Usage:|Options:/.test(r.stderr), `${what}: no help page\n${r.stderr}`);
}

/** Runs a bash pipeline with $HF set to the holdfast command; `$?`s are the script's business. */
function bash(script: string, cwd: string, env: Record<string, string> = {}): Promise<CliResult> {
  const child = spawn('bash', ['-c', script], {
    cwd,
    env: cleanEnv({ ...env, HF: `${process.execPath} ${HOLDFAST_BIN}` }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const untrack = reapOnExit(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve) =>
    child.once('close', (code, signal) => {
      untrack();
      resolve({ code, signal, stdout, stderr });
    }),
  );
}

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('holdfast CLI, as an operator meets it', () => {
  let tmp = '';
  const local = (): string[] => ['--store', path.join(tmp, 'store'), '--journal-dir', path.join(tmp, 'journal')];
  const hf = (...args: string[]): Promise<CliResult> => runCli(args, { cwd: tmp });

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'holdfast-cli-operator-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('prints its version and the Node it runs on', async () => {
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await hf(flag);
      assertExit(r, 0, flag);
      assert.match(r.stdout, new RegExp(`^holdfast ${pkg.version.replaceAll('.', '\\.')} \\(Node v${NODE_MAJOR}\\.\\d+\\.\\d+\\)\\n$`));
    }
  });

  it('reports every usage error in one line with a hint and exit code 2', async () => {
    const cases: [string[], RegExp][] = [
      [
        ['volume', 'create', 'v1', '--size', '1G', '--sise', '1G'],
        /^holdfast volume create: unknown option '--sise' \(did you mean --size\?\)$/,
      ],
      [['volume', 'create', 'v1'], /^holdfast volume create: required option '--size <size>' not specified$/],
      [['volume'], /^holdfast volume: missing command \(commands: create, list, inspect, delete\b[\w, -]*\)$/],
      [['volume', 'frob'], /^holdfast volume: unknown command 'frob'/],
      [['frob'], /^holdfast: unknown command 'frob' \(commands: serve, volume, import, export\b[\w, -]*\bstatus\b[\w, -]*\)$/],
      [['import'], /^holdfast import: missing required argument 'file'$/],
      [['export', 'v1'], /^holdfast export: missing required argument 'file'$/],
      [['import', 'a.img', 'v1', 'extra'], /^holdfast import: too many arguments/],
      [['status', '--jsn'], /^holdfast status: unknown option '--jsn' \(did you mean --json\?\)$/],
      [['status', '--admin'], /^holdfast status: option '--admin <host:port>' argument missing$/],
      [['status', '--watch', '5x'], /^holdfast: --watch "5x" is not an interval/],
      [['status', '--watch', '0s'], /^holdfast: --watch "0s" is not an interval/],
      [['serve', '--cache-size', '12X', ...local()], /^holdfast: invalid configuration: --cache-size: "12X" is not a cache size/],
      [['volume', 'create', 'v1', '--size', '12X', ...local()], /^holdfast: --size "12X" is not a size/],
      [['volume', 'list', '--store', 'ftp://x/y'], /^holdfast: --store ftp:\/\/x\/y: unsupported scheme/],
    ];
    for (const [args, message] of cases) assertUsageError(await hf(...args), `holdfast ${args.join(' ')}`, message);
    // Help asked for is not an error.
    const help = await hf('volume', 'create', '--help');
    assertExit(help, 0, 'volume create --help');
    assert.match(help.stdout, /^Usage: holdfast volume create \[options\] <name>/);
  });

  it('refuses an S3 store no region is known for, saying how to give one', async () => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HOLDFAST_') && !k.startsWith('AWS_')) env[k] = v;
    const r = await new Promise<CliResult>((resolve) => {
      const child = spawn(process.execPath, [HOLDFAST_BIN, 'volume', 'list', '--store', 's3://holdfast-bucket/vols/'], {
        cwd: tmp,
        env: {
          ...env,
          HOME: tmp,
          AWS_CONFIG_FILE: path.join(tmp, 'no-aws-config'),
          AWS_SHARED_CREDENTIALS_FILE: path.join(tmp, 'no-aws-credentials'),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      child.once('close', (code, signal) => {
        resolve({ code, signal, stdout, stderr });
      });
    });
    assertUsageError(
      r,
      'an S3 store without a region',
      /^holdfast: no AWS region for the store s3:\/\/holdfast-bucket\/vols\/$/,
      /^Give the bucket's region with --s3-region REGION/,
    );
  });

  it('imports from stdin and exports to stdout, through pipes', async () => {
    const img = randomBytes(5 * MiB + 4096);
    img.fill(0, MiB, 3 * MiB);
    await writeFile(path.join(tmp, 'in.img'), img);
    const s = local().join(' ');
    const imported = await bash(`cat in.img | $HF import - piped --size 8M --extent-size 1M ${s}`, tmp);
    assertExit(imported, 0, 'import - from a pipe');
    assert.match(imported.stdout, /\b4 extents uploaded, 4 zero extents skipped/);
    const exported = await bash(`$HF export piped - ${s} | cat > out.img; echo "exit \${PIPESTATUS[0]}"`, tmp);
    assert.match(exported.stdout, /^exit 0$/m, exported.stderr);
    assert.match(exported.stderr, /exported volume piped to /, 'the summary goes to stderr when the image goes to stdout');
    const out = await readFile(path.join(tmp, 'out.img'));
    assert.equal(out.length, 8 * MiB);
    assert.ok(
      out.subarray(0, img.length).equals(img) && out.subarray(img.length).every((b) => b === 0),
      'exported bytes are the imported ones, then zeros',
    );

    const redirected = await bash(`$HF export piped - ${s} > redirected.img`, tmp);
    assertExit(redirected, 0, 'export - into a redirected file');
    assert.ok((await readFile(path.join(tmp, 'redirected.img'))).equals(out));

    assertUsageError(
      await bash(`cat in.img | $HF import - newvol ${s}`, tmp),
      'import - with no --size for a new volume',
      /^holdfast: stdin is a stream: give --size for the new volume$/,
    );
    const tooLong = await bash(`cat in.img in.img | $HF import - piped --force ${s}`, tmp);
    assertUsageError(tooLong, 'a stream longer than the volume', /^holdfast: stdin holds more than the volume's 8388608 bytes/);
  });

  it('refuses a qcow2 image with the qemu-img command, and that command writes it into a served volume', async () => {
    const qcow2 = path.join(tmp, 'guest disk.qcow2');
    for (const [cmd, args] of [
      ['qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '8M']],
      ['qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 1M 1M', '-c', 'write -P 0x5c 6M 64k', qcow2]],
      ['qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', qcow2, path.join(tmp, 'expected.raw')]],
    ] as const) {
      const r = await runTool(cmd, args);
      assert.equal(r.code, 0, `${cmd} ${args.join(' ')} (qemu-utils is needed): ${r.stderr}`);
    }
    const refused = await hf('import', qcow2, 'guest', ...local());
    assertUsageError(
      refused,
      'import of a qcow2 image',
      /^holdfast: .*guest disk\.qcow2 is a qcow2 image, not a raw one/,
      /^Convert it through a gateway instead: holdfast volume create guest --size 8388608, serve it, then\n {2}qemu-img convert /,
    );
    const fromStdin = await bash(`$HF import - guest --size 8M ${local().join(' ')} < '${qcow2}'`, tmp);
    assertUsageError(
      fromStdin,
      'a qcow2 image on stdin',
      /^holdfast: stdin is a qcow2 image/,
      /qemu-img convert -n -f qcow2 -O raw IMAGE nbd:/,
    );
    assert.equal((await hf('volume', 'inspect', 'guest', ...local())).code, 4, 'nothing was created');

    // Follow the hint: create the volume, serve it, run the printed command against the gateway's port.
    assertExit(await hf('volume', 'create', 'guest', '--size', '8388608', '--extent-size', '1M', ...local()), 0, 'volume create');
    const command = /qemu-img convert .*$/m.exec(refused.stderr)![0];
    const gw = await startGateway({
      store: { kind: 'local', args: ['--store', path.join(tmp, 'store')], env: {} },
      journalDir: path.join(tmp, 'journal'),
      createVolume: '',
      args: ['--volumes', 'guest'],
    });
    try {
      const converted = await bash(command.replace('nbd://127.0.0.1:10809/', `nbd://127.0.0.1:${gw.port}/`), tmp);
      assertExit(converted, 0, command);
    } finally {
      assert.equal(await gw.stop(), 0);
    }
    assertExit(await hf('export', 'guest', path.join(tmp, 'guest.raw'), ...local()), 0, 'export guest');
    assert.ok(
      (await readFile(path.join(tmp, 'guest.raw'))).equals(await readFile(path.join(tmp, 'expected.raw'))),
      'the volume holds the disk qemu-img reads from the qcow2 image',
    );
  });

  it('serves the volumes --volumes names with commas', async () => {
    for (const v of ['c1', 'c2', 'c3']) assertExit(await hf('volume', 'create', v, '--size', '1M', ...local()), 0, `create ${v}`);
    const gw = await startGateway({
      store: { kind: 'local', args: ['--store', path.join(tmp, 'store')], env: {} },
      journalDir: path.join(tmp, 'journal'),
      createVolume: '',
      args: ['--volumes', 'c1,c3', '--volumes', 'piped'],
    });
    try {
      const r = await hf('status', '--json', '--admin', new URL(gw.adminUrl).host);
      assertExit(r, 0, 'status --json');
      assert.deepEqual((JSON.parse(r.stdout) as { volumes: { name: string }[] }).volumes.map((v) => v.name).sort(), ['c1', 'c3', 'piped']);
    } finally {
      assert.equal(await gw.stop(), 0);
    }
  });

  describe('status against a gateway whose store denies every request', () => {
    let s3: S3Server;
    let proxy: S3FaultProxy;
    let gw: GatewayProcess;
    const readers: ReturnType<typeof spawn>[] = [];
    const admin = (): string => new URL(gw.adminUrl).host;

    before(async () => {
      s3 = await startS3Server();
      proxy = await startS3FaultProxy({ host: '127.0.0.1', port: s3.port });
      const store = ['--store', `s3://${s3.bucket}/status`, '--s3-endpoint', proxy.endpoint];
      const journal = path.join(tmp, 'status-journal');
      await writeFile(path.join(tmp, 'status.img'), randomBytes(4 * MiB));
      for (const v of ['held-volume', 'out']) {
        assertExit(
          await runCli(['import', path.join(tmp, 'status.img'), v, '--extent-size', '1M', ...store, '--journal-dir', journal], {
            cwd: tmp,
            env: s3.env,
          }),
          0,
          `import ${v}`,
        );
      }
      gw = await startGateway({
        store: { kind: 's3', args: store, env: s3.env },
        journalDir: journal,
        createVolume: '',
        args: ['--hang-policy', 'denied=hold', '--hang-timeout', 'forever', '--cache-size', '2MiB'],
      });
    });
    after(async () => {
      for (const r of readers) r.kill('SIGKILL');
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
      await gw?.kill('SIGKILL');
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
      await proxy?.close();
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
      await s3?.close();
    });

    /** A cold read that the gateway holds: qemu-io waits for it until killed. */
    function heldRead(volume: string): void {
      const child = spawn('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', `nbd://127.0.0.1:${gw.port}/${volume}`], { stdio: 'ignore' });
      reapOnExit(child);
      readers.push(child);
    }

    it('shows a timed-out and a hung volume, coloured on a terminal, aligned, plain in a pipe', async () => {
      // One volume times out at once; the other holds its read until the end of the test.
      await setHangPolicy(gw.adminUrl, 'out', { timeout: '1s' });
      proxy.setMode({ kind: 'deny' });
      heldRead('out');
      await waitFor('volume out timed out', async () => (await volumeStatus(gw.adminUrl, 'out')).state === 'timed-out');
      heldRead('held-volume');
      await waitFor('volume held-volume hangs', async () => (await volumeStatus(gw.adminUrl, 'held-volume')).state === 'hang');

      // `script` gives the command a real terminal.
      // Without CI in the environment: Node turns colours off on CI machines (CI=true), terminal or not.
      const tty = await bash(`env -u CI script -qec "$HF status --admin ${admin()}" /dev/null`, tmp, { TERM: 'xterm', COLUMNS: '250' });
      assertExit(tty, 0, 'status on a terminal');
      const rows = tty.stdout.replaceAll('\r', '').trimEnd().split('\n');
      const held = rows.find((l) => l.startsWith('held-volume'))!;
      const out = rows.find((l) => l.startsWith('out'))!;
      // eslint-disable-next-line no-control-regex -- the colour escape sequences are what is under test
      assert.match(held, /\x1b\[[\d;]*m+hang\x1b\[[\d;]*m/, `hang is coloured: ${JSON.stringify(held)}`);
      // eslint-disable-next-line no-control-regex -- the colour escape sequences are what is under test
      assert.match(out, /\x1b\[[\d;]*m+timed-out\x1b\[[\d;]*m/, `timed-out is coloured: ${JSON.stringify(out)}`);
      const plainRows = rows.map(stripVTControlCharacters);
      const header = plainRows.find((l) => l.startsWith('VOLUME'))!;
      for (const column of ['STATE', 'STORAGE', 'HELD', 'CLIENTS', 'LAST ERROR']) {
        const at = header.indexOf(column);
        for (const row of plainRows.filter((l) => l.startsWith('held-volume') || l.startsWith('out'))) {
          assert.equal(row[at - 1], ' ', `${column} column in ${row}`);
          assert.notEqual(row[at], ' ', `${column} column in ${row}`);
        }
      }
      assert.match(
        plainRows.find((l) => l.startsWith('out'))!,
        /^out +timed-out +down [\d.]+s +/,
      );

      const piped = await hf('status', '--admin', admin());
      assertExit(piped, 0, 'status in a pipe');
      assert.ok(!piped.stdout.includes('\x1b'), 'no escape sequences when stdout is not a terminal');
      assert.match(piped.stdout, /^held-volume +hang +down [\d.]+s +1 +4 KiB +[\d.]+s +forever +/m);
    });

    it('ends quietly when the reader of --watch goes away', async () => {
      const r = await bash(`$HF status --watch 100ms --json --admin ${admin()} | head -n 3; echo "exit \${PIPESTATUS[0]}"`, tmp);
      assert.match(r.stdout, /^\{\n {2}"gateway": "[^"]+",\n {2}"volumes": \[\nexit 0\n$/);
      assert.equal(r.stderr, '', 'no EPIPE error or stack');
    });
  });
});
