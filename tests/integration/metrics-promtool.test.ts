/**
 * A live gateway's /metrics, after NBD traffic of every command, passes Prometheus' own linter
 * (`promtool check metrics`, Debian's prometheus package) and names things as Prometheus does.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { type GatewayProcess, type Stores, startGateway, startStores } from '../helpers/gateway-process.js';
import { runTool } from '../helpers/run-tool.js';

let stores: Stores;
let gw: GatewayProcess;
before(async () => {
  stores = await startStores('local');
  gw = await startGateway({ store: await stores.fresh(), journalDir: await stores.tempDir('journal'), createVolume: 'metrics-vol=64MiB' });
});
after(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
  await gw?.stop();
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
  await stores?.dispose();
});

function promtool(text: string): Promise<{ code: number | null; output: string }> {
  const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stdin.end(text);
  return new Promise((resolve) => {
    child.once('error', (err) => {
      resolve({ code: null, output: `promtool could not run (npm test installs Debian's prometheus package): ${err.message}` });
    });
    child.once('close', (code) => {
      resolve({ code, output });
    });
  });
}

test('promtool check metrics passes on /metrics after traffic of every NBD command', async () => {
  const io = await runTool('qemu-io', [
    '-f',
    'raw',
    '-c',
    'write 0 64k',
    '-c',
    'read 0 64k',
    '-c',
    'write -z 1M 64k',
    '-c',
    'discard 2M 64k',
    '-c',
    'flush',
    gw.uri('metrics-vol'),
  ]);
  assert.equal(io.code, 0, io.stderr);
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const lint = await promtool(text);
  assert.equal(lint.code, 0, lint.output);
  assert.equal(lint.output, '', 'no finding');

  assert.match(text, /^holdfast_process_cpu_user_seconds_total /m, "Node's process metrics under holdfast_process_");
  assert.doesNotMatch(text, /holdfast_process_process_|holdfast_process_nodejs_/, 'no doubled prefix');
  for (const m of text.matchAll(/command="([^"]*)"/g)) assert.match(m[1]!, /^[a-z_]+$/, `label value ${m[1]}`);
  assert.match(
    text,
    /^holdfast_nbd_request_duration_seconds_count\{volume="metrics-vol",command="write_zeroes"\} 1$/m,
    'latency per volume and command',
  );
  assert.match(text, /^holdfast_nbd_requests_total\{command="write_zeroes"\} 1$/m);
});
