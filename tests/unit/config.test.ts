import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError } from '../../shared/errors.js';
import { parseDuration, parseSize } from '../../shared/units.js';
import { envName, flagName, loadConfig } from '../../gateway/config/load-config.js';

test('sizes and durations parse as operators write them', () => {
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('10G'), 10 * 2 ** 30);
  assert.equal(parseSize('256MiB'), 256 * 2 ** 20);
  assert.equal(parseSize('64k'), 65536);
  assert.equal(parseSize('1.5G'), 1.5 * 2 ** 30);
  assert.equal(parseSize('12X'), undefined);
  assert.equal(parseSize(''), undefined);
  assert.equal(parseDuration('25s'), 25_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('3'), 3000);
  assert.equal(parseDuration('soon'), undefined);
});

test('the memory limit: off by default, auto, or a size, and nothing else', () => {
  assert.equal(loadConfig({ flags: {}, env: {} }).memoryLimit, 0);
  assert.equal(loadConfig({ flags: {}, env: { HOLDFAST_MEMORY_LIMIT: 'auto' } }).memoryLimit, 'auto');
  assert.equal(loadConfig({ flags: {}, env: { HOLDFAST_MEMORY_LIMIT: 'off' } }).memoryLimit, 0);
  assert.equal(loadConfig({ flags: { memoryLimit: '1843MiB' }, env: {} }).memoryLimit, 1843 * 2 ** 20);
  assert.throws(
    () => loadConfig({ flags: { memoryLimit: 'lots' }, env: {} }),
    (e: unknown) => e instanceof ConfigError && e.message.includes('--memory-limit') && e.message.includes('auto, or off'),
  );
});

test('names map between flags, environment and file', () => {
  assert.equal(flagName('cacheSize'), '--cache-size');
  assert.equal(envName('cacheSize'), 'HOLDFAST_CACHE_SIZE');
  assert.equal(envName('s3Endpoint'), 'HOLDFAST_S3_ENDPOINT');
});

test('defaults give the embedded setup', () => {
  const c = loadConfig({ flags: {}, env: {} });
  assert.deepEqual(c.listen, [{ kind: 'tcp', host: '127.0.0.1', port: 10809 }]);
  assert.equal(c.tls, 'off');
  assert.equal(c.nbdIdleTimeout, 24 * 3_600_000);
  assert.match(c.storeUrl, /^file:\/\/.*\/data\/store$/);
  assert.match(c.journalRoot, /\/data\/journal$/);
  assert.deepEqual(c.createVolume, { name: 'demo', size: 2 ** 30 });
  assert.equal(c.extentSize, 4 * 2 ** 20);
  assert.equal(c.shutdownGrace, 25_000);
});

test('flags override the environment, which overrides the file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'hf-config-'));
  try {
    const file = join(dir, 'holdfast.json');
    await writeFile(file, JSON.stringify({ cacheSize: '1G', journalLimit: '4G', uploadConcurrency: 3, volumes: ['a', 'b'] }));
    const c = loadConfig({ flags: { cacheSize: '64M' }, env: { HOLDFAST_JOURNAL_LIMIT: '2G', HOLDFAST_VOLUMES: 'x, y' }, file });
    assert.equal(c.cacheSize, 64 * 2 ** 20);
    assert.equal(c.journalLimit, 2 * 2 ** 30);
    assert.equal(c.uploadConcurrency, 3);
    assert.deepEqual(c.volumes, ['x', 'y']);
  } finally {
    await rm(dir, { recursive: true });
  }
});

test('HOLDFAST_CREATE_VOLUME="" creates no volume; other empty variables count as unset', () => {
  const c = loadConfig({ flags: {}, env: { HOLDFAST_CREATE_VOLUME: '', HOLDFAST_CACHE_SIZE: '' } });
  assert.equal(c.createVolume, undefined);
  assert.equal(c.cacheSize, 256 * 2 ** 20);
});

test('a bad setting is reported under the name it was given', async () => {
  assert.throws(
    () => loadConfig({ flags: { cacheSize: '12X' }, env: {} }),
    (e: unknown) => e instanceof ConfigError && e.message.includes('--cache-size') && e.message.includes('"12X"'),
  );
  assert.throws(
    () => loadConfig({ flags: {}, env: { HOLDFAST_LISTEN: 'nope' } }),
    (e: unknown) => e instanceof ConfigError && e.message.includes('HOLDFAST_LISTEN (environment)'),
  );
  assert.throws(
    () => loadConfig({ flags: { extentSize: '3M' }, env: {} }),
    (e: unknown) => e instanceof ConfigError && /power of two/.test(e.message),
  );
  assert.throws(
    () => loadConfig({ flags: { createVolume: 'demo=100' }, env: {} }),
    (e: unknown) => e instanceof ConfigError && /multiple of 512/.test(e.message),
  );
  assert.throws(
    () => loadConfig({ flags: { journalLimit: '64M', segmentSize: '64M' }, env: {} }),
    (e: unknown) => e instanceof ConfigError && /twice the segment size/.test(e.message),
  );
  const dir = await mkdtemp(join(tmpdir(), 'hf-config-'));
  try {
    const file = join(dir, 'c.json');
    await writeFile(file, JSON.stringify({ cacheSise: '1G' }));
    assert.throws(
      () => loadConfig({ flags: {}, env: {}, file }),
      (e: unknown) => e instanceof ConfigError && e.message.includes('cacheSise'),
    );
    await writeFile(file, '{ not json');
    assert.throws(
      () => loadConfig({ flags: {}, env: {}, file }),
      (e: unknown) => e instanceof ConfigError && /not valid JSON/.test(e.message),
    );
    assert.throws(
      () => loadConfig({ flags: {}, env: {}, file: join(dir, 'missing.json') }),
      (e: unknown) => e instanceof ConfigError && /cannot read config file/.test(e.message),
    );
  } finally {
    await rm(dir, { recursive: true });
  }
});

test('NBD listen addresses: several, TCP and Unix, from a flag list or a comma-separated variable', () => {
  const fromFlags = loadConfig({ flags: { listen: ['0.0.0.0:10809', 'unix:/run/holdfast/nbd.sock'] }, env: {} });
  assert.deepEqual(fromFlags.listen, [
    { kind: 'tcp', host: '0.0.0.0', port: 10809 },
    { kind: 'unix', path: '/run/holdfast/nbd.sock' },
  ]);
  const fromEnv = loadConfig({ flags: {}, env: { HOLDFAST_LISTEN: '[::1]:10809, unix:/tmp/nbd.sock' } });
  assert.deepEqual(fromEnv.listen, [
    { kind: 'tcp', host: '::1', port: 10809 },
    { kind: 'unix', path: '/tmp/nbd.sock' },
  ]);
  assert.throws(
    () => loadConfig({ flags: { listen: ['unix:relative.sock'] }, env: {} }),
    (e: unknown) => e instanceof ConfigError && e.message.includes('--listen') && /absolute/.test(e.message),
  );
  assert.throws(
    () => loadConfig({ flags: { listen: [''] }, env: {} }),
    (e: unknown) => e instanceof ConfigError && /at least one address/.test(e.message),
  );
});

test('TLS settings are checked together: files need TLS on, TLS needs a certificate or PSK keys', () => {
  const c = loadConfig({
    flags: { tls: 'require', tlsPsk: '/etc/holdfast/keys.psk', nbdAccess: '/etc/holdfast/access.json', nbdIdleTimeout: 'off' },
    env: {},
  });
  assert.equal(c.tls, 'require');
  assert.equal(c.tlsPsk, '/etc/holdfast/keys.psk');
  assert.equal(c.nbdIdleTimeout, 0);
  const invalid = (flags: Record<string, unknown>, pattern: RegExp, name: string): void => {
    assert.throws(
      () => loadConfig({ flags, env: {} }),
      (e: unknown) => e instanceof ConfigError && e.message.includes(name) && pattern.test(e.message),
      JSON.stringify(flags),
    );
  };
  invalid({ tlsCert: '/c.pem', tlsKey: '/k.pem' }, /needs --tls on or require/, '--tls-cert');
  invalid({ nbdAccess: '/a.json' }, /needs --tls on or require/, '--nbd-access');
  invalid({ tls: 'on' }, /certificate and key .* or a PSK file/, '--tls');
  invalid({ tls: 'on', tlsCert: '/c.pem' }, /needs its key/, '--tls-key');
  invalid({ tls: 'on', tlsPsk: '/k.psk', tlsCa: '/ca.pem' }, /only with a server certificate/, '--tls-ca');
  invalid({ tls: 'maybe' }, /off|on|require/, '--tls');
  invalid({ nbdIdleTimeout: 'a while' }, /or off/, '--nbd-idle-timeout');
});
