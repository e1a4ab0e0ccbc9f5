import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTlsMaterial, type TlsMaterial } from '../helpers/tls-material.js';
import { type GuestSetup, prepareGuest } from '../helpers/vm-guest.js';
import { startRig } from '../helpers/vm-rig.js';

/**
 * A Linux guest whose disk is served only over TLS: the gateway requires STARTTLS and opens the
 * volume to one client certificate, and QEMU connects with tls-creds-x509. The guest boots, runs
 * its write/fsync/read loop, and re-reads everything after a remount.
 */

const BOOT_TIMEOUT_MS = 120_000;
const ROUND_TIMEOUT_MS = 90_000;
const REPORT_TIMEOUT_MS = 120_000;
const SCENARIO_TIMEOUT_MS = 300_000;
const ROUNDS = 3;
const KERNEL_ERROR = /I\/O error|EXT4-fs error|Remounting filesystem read-only|Aborting journal/;

describe('VM acceptance over TLS', () => {
  let setup: GuestSetup;
  let dir = '';
  let material: TlsMaterial;
  let accessFile = '';

  before(async () => {
    setup = await prepareGuest();
    dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-vm-tls-'));
    material = await makeTlsMaterial(dir, { clients: ['guest-host'], pskIdentities: ['someone-else'] });
    accessFile = path.join(dir, 'access.json');
    await writeFile(accessFile, JSON.stringify({ 'guest-host': { guest: 'rw' } }));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it(
    'a guest boots from a volume served only over TLS (X.509), writes, fsyncs and re-reads its files',
    { timeout: SCENARIO_TIMEOUT_MS },
    async (t) => {
      const clientDir = material.clientDirs.get('guest-host') ?? assert.fail('no client certificate');
      const rig = await startRig({
        setup,
        hangTimeout: '120s',
        tls: {
          gatewayArgs: [
            '--tls',
            'require',
            '--tls-cert',
            material.serverCert,
            '--tls-key',
            material.serverKey,
            '--tls-ca',
            material.caCert,
            '--tls-psk',
            material.pskFile,
            '--nbd-access',
            accessFile,
          ],
          guest: { id: 'tls0', object: `tls-creds-x509,id=tls0,endpoint=client,dir=${clientDir}` },
        },
      });
      try {
        const { guest } = rig;
        await guest.waitForLine(/@@hf WORKLOAD START/, BOOT_TIMEOUT_MS);
        await guest.waitForLine(new RegExp(`@@hf ITER ${ROUNDS} `), ROUND_TIMEOUT_MS * ROUNDS);
        guest.send('STOP');
        await guest.waitForLine(/@@hf WORKLOAD DONE/, REPORT_TIMEOUT_MS);
        await guest.exited;
        const context = `\n${guest.transcript()}`;
        const texts = guest.lines.map((line) => line.text);
        assert.deepEqual(
          texts.filter((text) => /@@hf (ERROR|FATAL)/.test(text)),
          [],
          `the guest saw errors${context}`,
        );
        assert.deepEqual(
          texts.filter((text) => KERNEL_ERROR.test(text)),
          [],
          `the guest kernel saw I/O errors${context}`,
        );
        assert.ok(
          texts.some((text) => /@@hf MOUNT rw$/.test(text)),
          `the filesystem is not read-write${context}`,
        );
        assert.ok(
          texts.some((text) => /@@hf WRITABLE yes$/.test(text)),
          `the filesystem refuses writes${context}`,
        );
        const field = (tag: string): Map<string, string> =>
          new Map(
            texts.flatMap((text) => {
              const m = new RegExp(`@@hf ${tag} (\\S+) (\\S+)$`).exec(text);
              return m === null ? [] : [[m[1]!, m[2]!] as [string, string]];
            }),
          );
        const written = field('WROTE');
        assert.ok(written.size >= ROUNDS, `the guest wrote only ${written.size} files${context}`);
        assert.deepEqual(field('SUM'), new Map([...rig.seed, ...written]), `files re-read after the remount differ${context}`);
        // Only TLS could have carried it: the gateway answers plain clients with NBD_REP_ERR_TLS_REQD.
        assert.equal(rig.gateway.logs.filter((line) => /access refused/.test(line.msg)).length, 0);
        t.diagnostic(
          `guest on TLS (X.509 client certificate, kernel ${setup.kernelVersion} under ${setup.accel}): ${written.size} files written, ${rig.seed.size + written.size} re-read intact`,
        );
      } finally {
        await rig.dispose();
      }
    },
  );
});
