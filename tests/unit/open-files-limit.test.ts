import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openFilesBudget, openFilesLimit } from '../../gateway/util/open-files-limit.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max processes             96044                96044                processes
Max open files            20000                65536                files
Max locked memory         8388608              8388608              bytes
`;

describe('open-files limit', () => {
  it("reads the soft limit from /proc/self/limits' format, and gives a share of it within bounds", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hf-limits-'));
    try {
      const file = join(dir, 'limits');
      await writeFile(file, LIMITS);
      assert.equal(openFilesLimit(file), 20_000);
      await writeFile(file, LIMITS.replace('20000                65536', 'unlimited            unlimited'));
      assert.equal(openFilesLimit(file), Number.MAX_SAFE_INTEGER);
      assert.equal(openFilesLimit(join(dir, 'missing')), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    assert.equal(openFilesBudget(0.5, 256, 32_768, 1024, 20_000), 10_000);
    assert.equal(openFilesBudget(0.5, 256, 32_768, 1024, 256), 256);
    assert.equal(openFilesBudget(0.5, 256, 32_768, 1024, Number.MAX_SAFE_INTEGER), 32_768);
    assert.equal(openFilesBudget(0.5, 256, 32_768, 1024, undefined), 1024);
  });

  it('finds this process its limit', () => {
    const limit = openFilesLimit();
    assert.ok(limit !== undefined && limit >= 1024, `limit ${limit}`);
  });
});
