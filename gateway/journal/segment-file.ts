import { open, unlink, type FileHandle } from 'node:fs/promises';

/**
 * The file operations the journal uses, behind an interface so that tests can make a sync or a
 * write fail the way a real disk does (EIO, ENOSPC) without needing a broken disk.
 */
export interface SegmentFileOps {
  open(path: string, flags: 'create' | 'read-write'): Promise<SegmentFile>;
  /** Deletes a retired segment (or a seal). */
  remove(path: string): Promise<void>;
}

export interface SegmentFile {
  /** Writes every buffer, in order, at `position`; short writes are continued, not reported. */
  writev(buffers: Buffer[], position: number): Promise<void>;
  datasync(): Promise<void>;
  read(into: Buffer, intoOffset: number, length: number, position: number): Promise<number>;
  /** Fills every buffer, in order, from `position` (preadv); returns the bytes read, fewer only at the end of the file. */
  readv(buffers: Buffer[], position: number): Promise<number>;
  /** The descriptor, for small reads on the event loop (util/loop-reads.ts); absent where reads must go through read(). */
  readonly fd?: number;
  size(): Promise<number>;
  close(): Promise<void>;
}

/** Linux caps one writev or readv at IOV_MAX (1024) buffers. */
const MAX_IOVECS = 1024;

class FsSegmentFile implements SegmentFile {
  constructor(private readonly fh: FileHandle) {}

  get fd(): number {
    return this.fh.fd;
  }

  async writev(buffers: Buffer[], position: number): Promise<void> {
    const expected = buffers.reduce((n, b) => n + b.length, 0);
    const written = await vectored(buffers, position, async (chunk, at) => (await this.fh.writev(chunk, at)).bytesWritten);
    if (written < expected) throw Object.assign(new Error(`short write: ${written} of ${expected} bytes`), { code: 'EIO' });
  }

  readv(buffers: Buffer[], position: number): Promise<number> {
    return vectored(buffers, position, async (chunk, at) => (await this.fh.readv(chunk, at)).bytesRead);
  }

  datasync(): Promise<void> {
    return this.fh.datasync();
  }

  async read(into: Buffer, intoOffset: number, length: number, position: number): Promise<number> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(into, intoOffset + done, length - done, position + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/**
 * Moves every buffer, in order, from `position` with a vectored call: IOV_MAX buffers at a time, a short
 * call continued where it stopped. Returns the bytes moved, fewer only when a call moves none (the end
 * of the file, for a read).
 */
async function vectored(buffers: Buffer[], position: number, move: (chunk: Buffer[], at: number) => Promise<number>): Promise<number> {
  let at = position;
  for (let i = 0; i < buffers.length; i += MAX_IOVECS) {
    let chunk = buffers.slice(i, i + MAX_IOVECS);
    for (;;) {
      const expected = chunk.reduce((n, b) => n + b.length, 0);
      const moved = await move(chunk, at);
      at += moved;
      if (moved >= expected) break;
      if (moved === 0) return at - position;
      chunk = dropDone(chunk, moved);
    }
  }
  return at - position;
}

/** What is left of `buffers` once the first `done` bytes have been written or read. */
function dropDone(buffers: Buffer[], done: number): Buffer[] {
  let skip = done;
  const rest: Buffer[] = [];
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    rest.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return rest;
}

export const fsSegmentFileOps: SegmentFileOps = {
  async open(path, flags) {
    // 'wx' so that a segment number is never reused over an existing file by mistake.
    return new FsSegmentFile(await open(path, flags === 'create' ? 'wx+' : 'r+'));
  },
  remove(path) {
    return unlink(path);
  },
};
