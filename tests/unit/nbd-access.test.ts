import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IdentityAccess, OPEN_ACCESS } from '../../gateway/nbd/access.js';
import { looksLikeJson, looksLikePem, looksLikePskKeys } from '../../gateway/nbd/material-source.js';
import { parsePskFile } from '../../gateway/nbd/psk-file.js';
import { FileSecurity } from '../../gateway/nbd/security.js';
import { ConfigError } from '../../shared/errors.js';

const KEY = 'a'.repeat(64);

describe('PSK key files', () => {
  it('reads psktool lines, identities with colons included', () => {
    const keys = parsePskFile(`alice:${KEY}\n\nhost:vm1:${'0f'.repeat(16)}\r\n`, 'keys.psk');
    assert.deepEqual([...keys.keys()], ['alice', 'host:vm1']);
    assert.deepEqual(keys.get('alice'), Buffer.from(KEY, 'hex'));
    assert.equal(keys.get('host:vm1')?.length, 16);
  });

  it('refuses malformed lines, short keys, duplicates and empty files, naming the line', () => {
    const refuses = (text: string, pattern: RegExp): void => {
      assert.throws(
        () => parsePskFile(text, 'keys.psk'),
        (e: unknown) => e instanceof ConfigError && pattern.test(e.message),
        text,
      );
    };
    refuses(`alice ${KEY}`, /keys\.psk line 1: expected IDENTITY:HEXKEY/);
    refuses(`:${KEY}`, /line 1: expected IDENTITY:HEXKEY/);
    refuses(`alice:${KEY}\nbob:xyz`, /line 2: .* not hexadecimal/);
    refuses(`alice:abc`, /not hexadecimal/);
    refuses(`alice:${'ab'.repeat(8)}`, /8 bytes, at least 16/);
    refuses(`alice:${KEY}\nalice:${KEY}`, /line 2: identity "alice" appears twice/);
    refuses('\n\n', /holds no keys/);
  });
});

describe('access files', () => {
  const access = IdentityAccess.parse(
    JSON.stringify({ alice: { a: 'rw', b: 'ro' }, backup: { '*': 'ro' }, ops: { '*': 'rw', archive: 'ro' } }),
    'access.json',
  );

  it('grants per identity and volume, a named volume before the wildcard', () => {
    assert.equal(access.grant('alice', 'a'), 'rw');
    assert.equal(access.grant('alice', 'b'), 'ro');
    assert.equal(access.grant('alice', 'c'), undefined);
    assert.equal(access.grant('backup', 'anything'), 'ro');
    assert.equal(access.grant('ops', 'vm1'), 'rw');
    assert.equal(access.grant('ops', 'archive'), 'ro');
    assert.equal(access.grant('mallory', 'a'), undefined);
    assert.equal(access.grant(undefined, 'a'), undefined, 'no identity, no access');
    assert.equal(access.needsIdentity, true);
    assert.equal(OPEN_ACCESS.grant(undefined, 'a'), 'rw');
    assert.equal(OPEN_ACCESS.needsIdentity, false);
  });

  it('refuses files that are not identity → volume → rw|ro, saying where', () => {
    const refuses = (text: string, pattern: RegExp): void => {
      assert.throws(
        () => IdentityAccess.parse(text, 'access.json'),
        (e: unknown) => e instanceof ConfigError && e.message.includes('access.json') && pattern.test(e.message),
        text,
      );
    };
    refuses('{ nope', /not valid JSON/);
    refuses('[]', /IDENTITY/);
    refuses(JSON.stringify({ alice: { a: 'write' } }), /alice\.a: access must be "rw" or "ro"/);
    refuses(JSON.stringify({ alice: { 'bad name!': 'rw' } }), /alice\.bad name!: a volume name or "\*"/);
    refuses(JSON.stringify({ alice: ['a'] }), /alice/);
  });
});

describe('TLS and access settings given as content', () => {
  it('tells content (as ECS secrets arrive) from file paths', () => {
    assert.ok(looksLikePem('-----BEGIN CERTIFICATE-----\nMIIB...\n'));
    assert.ok(!looksLikePem('/etc/holdfast/cert.pem'));
    assert.ok(looksLikePskKeys(`alice:${KEY}`));
    assert.ok(looksLikePskKeys(`alice:${KEY}\nbob:${KEY}\n`));
    assert.ok(!looksLikePskKeys('/etc/holdfast/keys.psk'));
    assert.ok(!looksLikePskKeys('keys.psk'));
    assert.ok(looksLikeJson(' {"alice": {"vm1": "rw"}}'));
    assert.ok(!looksLikeJson('/etc/holdfast/access.json'));
  });

  it('loads PSK keys and access rules given inline, and names no secret in errors', async () => {
    const security = await FileSecurity.load({ tls: 'require', files: { psk: `alice:${KEY}` }, accessFile: '{"alice": {"vm1": "rw"}}' });
    assert.equal(security.access().grant('alice', 'vm1'), 'rw');
    assert.ok(security.credentials() !== undefined);
    await assert.rejects(
      FileSecurity.load({ tls: 'require', files: { psk: `alice:${'ab'.repeat(8)}` } }),
      (e: unknown) => e instanceof ConfigError && e.message.includes('(inline content)') && !e.message.includes('abab'),
    );
    await assert.rejects(
      FileSecurity.load({ tls: 'off', files: {}, accessFile: '{}' }),
      (e: unknown) => e instanceof ConfigError && /needs TLS/.test(e.message),
    );
    await assert.rejects(
      FileSecurity.load({ tls: 'on', files: { psk: '/nonexistent/keys.psk' } }),
      (e: unknown) => e instanceof ConfigError && /cannot read the TLS PSK file \/nonexistent\/keys\.psk/.test(e.message),
    );
  });
});
