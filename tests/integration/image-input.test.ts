/**
 * The importer's input: a regular file read at any position, or a stream (a FIFO here, as stdin in
 * a pipeline is) served in position order to concurrent readers, with the format check on both.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { StreamOrderError, openImageInput, type ImageInput } from '../../gateway/cli/image-input.js';
import { InvalidArgumentError } from '../../shared/errors.js';

let dir = '';
let n = 0;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-image-input-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A FIFO with `data` written into it in uneven chunks, as a pipe delivers it; resolves once written. */
function fifoWith(data: Buffer): { file: string; written: Promise<void> } {
  const file = path.join(dir, `fifo-${n++}`);
  execFileSync('mkfifo', [file]);
  const written = (async () => {
    const fh = await open(file, 'w');
    try {
      for (let at = 0; at < data.length;) {
        const len = Math.min(data.length - at, 1 + Math.floor(Math.random() * 100_000));
        await fh.write(data, at, len);
        at += len;
      }
    } catch (err) {
      // The reader may close early (the refusal tests); the writer then gets EPIPE.
      if ((err as NodeJS.ErrnoException).code !== 'EPIPE') throw err;
    } finally {
      await fh.close();
    }
  })();
  return { file, written };
}

/** The importer's loop: fill `buf` from `position`, short only at the end. */
async function readAt(input: ImageInput, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await input.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

test('a stream is read by concurrent readers of consecutive ranges, each getting its own bytes', async () => {
  const data = randomBytes(3 * 2 ** 20 + 12_345);
  const { file, written } = fifoWith(data);
  const input = await openImageInput(file, 'vm1');
  assert.equal(input.size, undefined);
  const chunk = 256 * 1024;
  const chunks = Math.ceil(data.length / chunk) + 2;
  // Every read is asked for at once, in order, as the importer's workers do.
  const results = await Promise.all(
    Array.from({ length: chunks }, async (_, i) => {
      const buf = Buffer.alloc(chunk);
      const got = await readAt(input, buf, i * chunk);
      return buf.subarray(0, got);
    }),
  );
  assert.ok(Buffer.concat(results).equals(data));
  assert.equal(results.at(-1)!.length, 0, 'past the end reads nothing');
  await input.expectEndBefore(data.length);
  await input.close();
  await written;
});

test('a stream longer than the volume is reported; one of exactly its length is not', async () => {
  const data = randomBytes(100_000);
  const long = fifoWith(data);
  const input = await openImageInput(long.file, 'vm1');
  await readAt(input, Buffer.alloc(60_000), 0);
  await assert.rejects(
    input.expectEndBefore(60_000),
    (err: unknown) => err instanceof InvalidArgumentError && /holds more than the volume's 60000 bytes/.test(err.message),
  );
  await input.close();
  await long.written;

  const exact = fifoWith(data);
  const input2 = await openImageInput(exact.file, 'vm1');
  await readAt(input2, Buffer.alloc(100_000), 0);
  await input2.expectEndBefore(100_000);
  await input2.close();
  await exact.written;
});

test('a stream refuses to go back', async () => {
  const { file, written } = fifoWith(randomBytes(100_000));
  const input = await openImageInput(file, 'vm1');
  await readAt(input, Buffer.alloc(50_000), 0);
  await assert.rejects(input.read(Buffer.alloc(10), 0, 10, 20_000), StreamOrderError);
  // The first bytes are kept for the format check, so they can be read again.
  assert.equal((await input.read(Buffer.alloc(10), 0, 10, 0)).bytesRead, 10);
  await input.close();
  await written;
});

test('a qcow2 image is refused from a stream and from a file, with the qemu-img command', async () => {
  const qcow2 = path.join(dir, 'disk.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '1G']);
  const refused = (err: unknown): boolean =>
    err instanceof InvalidArgumentError &&
    /is a qcow2 image, not a raw one/.test(err.message) &&
    /qemu-img convert -n -f qcow2 -O raw \S+ nbd:\/\/127\.0\.0\.1:10809\/vm1/.test(err.hint ?? '');
  await assert.rejects(openImageInput(qcow2, 'vm1'), refused);
  const { file, written } = fifoWith(await readFile(qcow2));
  await assert.rejects(openImageInput(file, 'vm1'), refused);
  await written;
});

test('a regular file has its size; a directory or a missing file is refused', async () => {
  const file = path.join(dir, 'raw.img');
  await writeFile(file, randomBytes(5000));
  const input = await openImageInput(file, 'vm1');
  assert.equal(input.size, 5000);
  assert.equal((await input.read(Buffer.alloc(100), 0, 100, 4950)).bytesRead, 50);
  await input.close();
  await assert.rejects(
    openImageInput(dir, 'vm1'),
    (err: unknown) => err instanceof InvalidArgumentError && /not a regular file or a stream/.test(err.message),
  );
  await assert.rejects(
    openImageInput(path.join(dir, 'nope.img'), 'vm1'),
    (err: unknown) => err instanceof InvalidArgumentError && /cannot open .*nope\.img: ENOENT/.test(err.message),
  );
});
