import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli-process.js';
import { runToolOk } from '../helpers/run-tool.js';
import { bootGuest, type Guest, type GuestSetup, prepareGuest } from '../helpers/vm-guest.js';
import { type Rig, startRig, VOLUME } from '../helpers/vm-rig.js';

/**
 * A clone boots: a guest writes files on its volume and powers off; `holdfast volume clone` makes a
 * new volume of it as of then (through the gateway that serves it, without copying data); the
 * gateway offers the clone by itself (it serves every volume), and a second guest boots from it,
 * finds every file the first one wrote, and writes files of the same names with new content. The
 * parent, exported before and after, is unchanged byte for byte.
 */

const BOOT_TIMEOUT_MS = 120_000;
const ROUND_TIMEOUT_MS = 90_000;
const REPORT_TIMEOUT_MS = 120_000;
const SCENARIO_TIMEOUT_MS = 600_000;
const ROUNDS = 2;
const CLONE = 'guest-clone';
/** The gateway looks for new volumes every second; this allows a loaded machine. */
const OFFERED_WITHIN_MS = 30_000;

/** Runs the guest's workload for ROUNDS rounds and returns what it wrote and what it re-read after a remount. */
async function runWorkload(guest: Guest): Promise<{ written: Map<string, string>; sums: Map<string, string> }> {
  await guest.waitForLine(/@@hf WORKLOAD START/, BOOT_TIMEOUT_MS);
  await guest.waitForLine(new RegExp(`@@hf ITER ${ROUNDS} `), ROUND_TIMEOUT_MS * ROUNDS);
  guest.send('STOP');
  await guest.waitForLine(/@@hf WORKLOAD DONE/, REPORT_TIMEOUT_MS);
  await guest.exited;
  const texts = guest.lines.map((line) => line.text);
  const context = `\n${guest.transcript()}`;
  assert.deepEqual(
    texts.filter((text) => /@@hf (ERROR|FATAL)/.test(text)),
    [],
    `the guest saw errors${context}`,
  );
  assert.ok(
    texts.some((text) => /@@hf WORKLOAD DONE errors=0$/.test(text)),
    `the guest's workload saw errors${context}`,
  );
  const field = (tag: string): Map<string, string> =>
    new Map(
      texts.flatMap((text) => {
        const m = new RegExp(`@@hf ${tag} (\\S+) (\\S+)$`).exec(text);
        return m?.[1] === undefined || m[2] === undefined ? [] : [[m[1], m[2]] as [string, string]];
      }),
    );
  return { written: field('WROTE'), sums: field('SUM') };
}

async function sha256(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

describe('VM acceptance: a guest boots from a clone', () => {
  let setup: GuestSetup;
  before(async () => {
    setup = await prepareGuest();
  });

  it(
    'a clone of the volume a guest wrote boots, holds its files, and diverges without changing its parent',
    { timeout: SCENARIO_TIMEOUT_MS },
    async (t) => {
      const rig: Rig = await startRig({ setup, hangTimeout: '120s' });
      try {
        const cli = async (...args: string[]): Promise<string> => {
          const r = await runCli([...args, ...rig.store.args, '--journal-dir', path.join(rig.dir, 'cli-journal')], {
            cwd: rig.dir,
            env: rig.store.env,
          });
          assert.equal(r.code, 0, `holdfast ${args.join(' ')}: exit ${r.code}\n${r.stdout}${r.stderr}`);
          return r.stdout;
        };
        const exportParent = async (name: string): Promise<string> => {
          const file = path.join(rig.dir, name);
          await cli('export', VOLUME, file);
          const sum = await sha256(file);
          await rm(file);
          return sum;
        };

        const parent = await runWorkload(rig.guest);
        assert.ok(parent.written.size >= ROUNDS, `the first guest wrote only ${parent.written.size} files`);
        assert.deepEqual(parent.sums, new Map([...rig.seed, ...parent.written]), 'the first guest re-read what it wrote');
        const parentBefore = await exportParent('parent-before.img');

        await cli('volume', 'clone', VOLUME, CLONE);
        const created = performance.now();
        for (;;) {
          const listed = (await runToolOk('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${rig.gateway.port}`])).stdout;
          if (listed.includes(`"${CLONE}"`)) break;
          assert.ok(
            performance.now() - created < OFFERED_WITHIN_MS,
            `the clone was not offered within ${OFFERED_WITHIN_MS} ms:\n${listed}`,
          );
          await delay(100);
        }
        const offeredMs = Math.round(performance.now() - created);

        const guest = bootGuest({ setup, nbdPort: rig.gateway.port, exportName: CLONE });
        let clone;
        try {
          clone = await runWorkload(guest);
        } finally {
          await guest.kill();
        }
        // The second guest's files have the first one's names: the clone holds its own content for them.
        assert.deepEqual(
          clone.sums,
          new Map([...rig.seed, ...parent.written, ...clone.written]),
          "the clone holds the parent's files, then its own",
        );
        const overwritten = [...clone.written.keys()].filter((name) => parent.written.has(name));
        assert.ok(
          overwritten.length > 0 && overwritten.every((name) => parent.written.get(name) !== clone.written.get(name)),
          'the clone rewrote files of the parent',
        );

        assert.equal(await exportParent('parent-after.img'), parentBefore, 'the parent is unchanged by what its clone wrote');
        t.diagnostic(
          `guest on ${setup.accel}: parent ${parent.written.size} files written; clone offered ${offeredMs} ms after \`volume clone\`, ` +
            `found all ${rig.seed.size + parent.written.size} files, rewrote ${overwritten.length}; the parent's export is unchanged (sha256 ${parentBefore.slice(0, 12)}…)`,
        );
      } finally {
        await rig.dispose();
      }
    },
  );
});
