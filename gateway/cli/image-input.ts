import { elementAt } from '../../shared/checked.js';
import { open, type FileHandle } from 'node:fs/promises';
import { HoldfastError, InvalidArgumentError, errorMessage } from '../../shared/errors.js';
import { SNIFF_BYTES, convertHint, sniffImageFormat } from './image-format.js';

/** A stream was asked for bytes it had already passed: streams are read once, front to back. */
export class StreamOrderError extends HoldfastError {}

/**
 * The raw image `holdfast import` reads: a regular file, or a stream (`-` for stdin, a pipe, a
 * FIFO). Reads name their position either way; a stream serves them in position order, each range
 * once, so concurrent readers that ask for consecutive ranges (as the importer's workers do) work
 * on both.
 */
export interface ImageInput {
  /** How messages name it: the path, or "stdin". */
  readonly label: string;
  /** Its length, or undefined for a stream (known only at its end). */
  readonly size: number | undefined;
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  /** Fails when a stream holds bytes at or past `limit`, which the import would have left out. */
  expectEndBefore(limit: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Opens FILE (`-`: stdin) and refuses it unless it looks raw: a qcow2, VMDK, VHDX … image would be
 * imported as its container bytes, a disk no guest can boot. The refusal carries the qemu-img
 * command that converts it into `volume`.
 */
export async function openImageInput(file: string, volume: string): Promise<ImageInput> {
  const stdin = file === '-';
  const label = stdin ? 'stdin' : file;
  if (stdin && process.stdin.isTTY)
    throw new InvalidArgumentError('stdin is a terminal, not an image', {
      hint: 'Pipe or redirect the image into holdfast import - NAME, or give its file name.',
    });
  const fh = await open(stdin ? '/dev/stdin' : file, 'r').catch((cause: unknown) => {
    throw new InvalidArgumentError(`cannot open ${label}: ${errorMessage(cause)}`, { cause });
  });
  let input: ImageInput;
  try {
    const st = await fh.stat();
    if (st.isFile()) input = new FileInput(fh, label, st.size);
    else if (st.isFIFO() || st.isCharacterDevice() || st.isSocket()) input = await StreamInput.open(fh, label);
    else throw new InvalidArgumentError(`${label} is not a regular file or a stream (import reads raw images)`);
    const head = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await input.read(head, 0, head.length, 0);
    const format = sniffImageFormat(head.subarray(0, bytesRead));
    if (format !== undefined) {
      throw new InvalidArgumentError(`${label} is a ${format.name} image, not a raw one: import copies its bytes as they are`, {
        hint: convertHint(format, stdin ? 'IMAGE' : file, volume),
      });
    }
  } catch (err) {
    await fh.close();
    throw err;
  }
  return input;
}

class FileInput implements ImageInput {
  constructor(
    private readonly fh: FileHandle,
    readonly label: string,
    readonly size: number,
  ) {}

  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    return this.fh.read(buffer, offset, length, position);
  }

  async expectEndBefore(): Promise<void> {
    // The importer sizes the volume from the file, or refuses a file larger than the volume.
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

interface PendingRead {
  readonly buffer: Buffer;
  readonly offset: number;
  readonly length: number;
  readonly position: number;
  resolve(result: { bytesRead: number }): void;
  reject(err: unknown): void;
}

/**
 * A stream read in order. The first SNIFF_BYTES are kept so that the format check can look at them
 * and the importer still reads them; every later byte is read from the stream straight into the
 * buffer of the read waiting at that position.
 */
class StreamInput implements ImageInput {
  readonly size = undefined;
  private consumed = 0;
  private ended = false;
  private readonly waiting: PendingRead[] = [];
  private pumping = false;

  private constructor(
    private readonly fh: FileHandle,
    readonly label: string,
    private readonly head: Buffer,
  ) {
    this.consumed = head.length;
    this.ended = head.length < SNIFF_BYTES;
  }

  static async open(fh: FileHandle, label: string): Promise<StreamInput> {
    const head = Buffer.alloc(SNIFF_BYTES);
    let filled = 0;
    while (filled < head.length) {
      const { bytesRead } = await fh.read(head, filled, head.length - filled, null);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return new StreamInput(fh, label, head.subarray(0, filled));
  }

  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    if (position < this.head.length) {
      const n = this.head.copy(buffer, offset, position, Math.min(this.head.length, position + length));
      return Promise.resolve({ bytesRead: n });
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ buffer, offset, length, position, resolve, reject });
      void this.pump();
    });
  }

  /** Serves waiting reads while one of them can go: the one at the stream's position, or any at its end. */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        const i = this.waiting.findIndex((r) => this.ended || r.position <= this.consumed);
        if (i < 0) return;
        const r = elementAt(this.waiting, i);
        this.waiting.splice(i, 1);
        if (r.position < this.consumed) {
          r.reject(new StreamOrderError(`${this.label} is a stream: byte ${r.position} was read already`));
        } else if (this.ended) {
          r.resolve({ bytesRead: 0 });
        } else {
          try {
            const { bytesRead } = await this.fh.read(r.buffer, r.offset, r.length, null);
            this.consumed += bytesRead;
            if (bytesRead === 0) this.ended = true;
            r.resolve({ bytesRead });
          } catch (err) {
            r.reject(new InvalidArgumentError(`cannot read ${this.label}: ${errorMessage(err)}`, { cause: err }));
          }
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  async expectEndBefore(limit: number): Promise<void> {
    const probe = Buffer.alloc(1);
    const { bytesRead } = await this.read(probe, 0, 1, Math.max(limit, this.consumed));
    if (bytesRead > 0 || this.consumed > limit) {
      throw new InvalidArgumentError(`${this.label} holds more than the volume's ${limit} bytes; only the first ${limit} were imported`);
    }
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}
