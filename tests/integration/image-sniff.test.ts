/**
 * The image formats `holdfast import` refuses, recognised on headers qemu-img itself writes, and
 * raw data (whatever it holds) left alone.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { SNIFF_BYTES, convertHint, sniffImageFormat, type ImageFormatName } from '../../gateway/cli/image-format.js';
import { runTool } from '../helpers/run-tool.js';

let dir = '';
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-image-format-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function head(file: string): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

async function qemuImage(format: string, size: string, options: string[] = []): Promise<string> {
  const file = path.join(dir, `image-${format}-${options.join('-').replace(/\W/g, '')}`);
  const r = await runTool('qemu-img', ['create', '-q', '-f', format, ...options, file, size]);
  assert.equal(r.code, 0, `qemu-img create -f ${format} (qemu-utils is needed): ${r.stderr}`);
  return file;
}

const MiB = 2 ** 20;
const CASES: { qemu: string; options?: string[]; name: ImageFormatName; size?: number }[] = [
  { qemu: 'qcow2', name: 'qcow2', size: 100 * MiB },
  { qemu: 'qcow2', options: ['-o', 'compat=0.10'], name: 'qcow2', size: 100 * MiB },
  { qemu: 'qcow', name: 'qcow', size: 100 * MiB },
  { qemu: 'qed', name: 'qed', size: 100 * MiB },
  { qemu: 'vmdk', name: 'vmdk', size: 100 * MiB },
  { qemu: 'vmdk', options: ['-o', 'subformat=streamOptimized'], name: 'vmdk', size: 100 * MiB },
  { qemu: 'vmdk', options: ['-o', 'subformat=monolithicFlat'], name: 'vmdk' },
  { qemu: 'vhdx', name: 'vhdx' },
  { qemu: 'vpc', name: 'vpc' },
  { qemu: 'vdi', name: 'vdi' },
  { qemu: 'parallels', name: 'parallels' },
];

for (const c of CASES) {
  test(`a ${c.qemu} image${c.options ? ` (${c.options.join(' ')})` : ''} from qemu-img is recognised as ${c.name}`, async () => {
    const format = sniffImageFormat(await head(await qemuImage(c.qemu, '100M', c.options)));
    assert.equal(format?.name, c.name);
    if (c.size !== undefined) assert.equal(format.virtualSize, c.size);
  });
}

test('a dynamic VHD reports the size qemu-img gives it', async () => {
  const file = await qemuImage('vpc', '64M', ['-o', 'force_size=on']);
  assert.deepEqual(sniffImageFormat(await head(file)), { name: 'vpc', virtualSize: 64 * MiB });
});

test('raw data is not taken for an image: zeros, random bytes, a raw file from qemu-img, a short file', async () => {
  assert.equal(sniffImageFormat(Buffer.alloc(SNIFF_BYTES)), undefined);
  for (let i = 0; i < 200; i++) assert.equal(sniffImageFormat(randomBytes(SNIFF_BYTES)), undefined);
  assert.equal(sniffImageFormat(await head(await qemuImage('raw', '1M'))), undefined);
  assert.equal(sniffImageFormat(Buffer.from('QFI')), undefined, 'too short for a header');
  assert.equal(sniffImageFormat(Buffer.alloc(0)), undefined);
  const magicLater = Buffer.alloc(SNIFF_BYTES);
  magicLater.write('QFI\xfb', 1, 'latin1');
  assert.equal(sniffImageFormat(magicLater), undefined, 'a magic number counts only at its offset');
});

test('the hint is a qemu-img command line that writes the image into the volume over NBD', () => {
  const hint = convertHint({ name: 'qcow2', virtualSize: 10 * 2 ** 30 }, "/images/my disk's.qcow2", 'vm1');
  assert.match(hint, /holdfast volume create vm1 --size 10737418240\b/);
  assert.match(hint, /^ {2}qemu-img convert -n -f qcow2 -O raw '\/images\/my disk'\\''s\.qcow2' nbd:\/\/127\.0\.0\.1:10809\/vm1$/m);
  assert.match(
    convertHint({ name: 'vhdx' }, 'a.vhdx', 'vm2', '10.0.0.5:10809'),
    /--size SIZE \(qemu-img info shows its virtual size\).*\n {2}qemu-img convert -n -f vhdx -O raw a\.vhdx nbd:\/\/10\.0\.0\.5:10809\/vm2$/,
  );
});
