import { setTimeout as delay } from 'node:timers/promises';
import type { AllocationExtent, ExportRegistry, NbdExport, RequestContext, ZeroOptions } from '../../gateway/nbd/export.js';
import { RequestAbortedError } from '../../shared/errors.js';

export type OperationKind = 'read' | 'write' | 'flush' | 'trim' | 'writeZeroes' | 'prefetch' | 'allocation';

export interface Operation {
  readonly kind: OperationKind;
  readonly offset: number;
  readonly length: number;
  readonly fua: boolean;
  readonly noHole: boolean;
}

/** What to do with an operation instead of performing it. */
export interface Failure {
  readonly error: unknown;
  /** Throw from the method itself rather than return a rejected promise. */
  readonly synchronous?: boolean;
}

export interface MemoryExportOptions {
  readonly name: string;
  readonly size: number;
  readonly readOnly?: boolean;
  readonly canMultiConn?: boolean;
  readonly preferredBlockSize?: number;
  /** Every operation waits this long before running. */
  readonly latencyMs?: number;
  /** Granularity of allocation: TRIM and WRITE_ZEROES free whole blocks of this size only. */
  readonly allocationBlockSize?: number;
}

interface HeldOperation {
  readonly operation: Operation;
  readonly release: () => void;
}

/**
 * A Buffer-backed NbdExport for tests. Operations can be delayed (`latencyMs`), held until
 * released (`holdWhen`), or made to fail (`failWhen`); every started operation is logged.
 * Allocation is tracked per block like a sparse file: writes allocate, TRIM and WRITE_ZEROES
 * without NO_HOLE free the whole blocks they cover. A block whose bytes are not all zero is data
 * whatever the bookkeeping says, so tests may fill `disk` directly.
 */
export class MemoryExport implements NbdExport {
  readonly name: string;
  readonly size: number;
  readonly readOnly: boolean;
  readonly canMultiConn: boolean;
  readonly minimumBlockSize = 1;
  readonly preferredBlockSize: number;
  readonly disk: Buffer;
  readonly allocationBlockSize: number;
  /** One flag per allocation block: 1 when allocated. */
  private readonly allocated: Uint8Array;
  /** Compared against, so that finding zero blocks is a memcmp rather than a loop over bytes. */
  private readonly zeroBlock: Buffer;
  readonly operations: Operation[] = [];
  latencyMs: number;
  holdWhen: ((operation: Operation) => boolean) | undefined;
  failWhen: ((operation: Operation) => Failure | undefined) | undefined;
  attachCount = 0;
  detachCount = 0;
  /** Operations rejected because their connection went away while held. */
  abandoned = 0;
  /** Most operations ever running at once. */
  peakConcurrency = 0;
  flushes = 0;
  private running = 0;
  private readonly held: HeldOperation[] = [];
  private readonly heldWaiters: Array<{ count: number; resolve: () => void }> = [];

  constructor(options: MemoryExportOptions) {
    this.name = options.name;
    this.size = options.size;
    this.readOnly = options.readOnly ?? false;
    this.canMultiConn = options.canMultiConn ?? true;
    this.preferredBlockSize = options.preferredBlockSize ?? 4096;
    this.latencyMs = options.latencyMs ?? 0;
    this.disk = Buffer.alloc(options.size);
    this.allocationBlockSize = options.allocationBlockSize ?? 64 * 1024;
    this.allocated = new Uint8Array(Math.ceil(options.size / this.allocationBlockSize));
    this.zeroBlock = Buffer.alloc(this.allocationBlockSize);
  }

  get attached(): number {
    return this.attachCount - this.detachCount;
  }

  get heldCount(): number {
    return this.held.length;
  }

  /** Resolves once at least `count` operations are held. */
  waitForHeld(count: number): Promise<void> {
    if (this.held.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.heldWaiters.push({ count, resolve }));
  }

  /** Lets the oldest held operation (or all of them) continue. */
  release(all = true): void {
    const released = all ? this.held.splice(0) : this.held.splice(0, 1);
    for (const entry of released) entry.release();
  }

  attach(): void {
    this.attachCount++;
  }

  detach(): void {
    this.detachCount++;
  }

  read(offset: number, length: number, ctx: RequestContext): Promise<Buffer> {
    return this.perform({ kind: 'read', offset, length, fua: false, noHole: false }, ctx, () =>
      Buffer.from(this.disk.subarray(offset, offset + length)),
    );
  }

  write(offset: number, data: Buffer, fua: boolean, ctx: RequestContext): Promise<void> {
    return this.perform({ kind: 'write', offset, length: data.length, fua, noHole: false }, ctx, () => {
      data.copy(this.disk, offset);
      this.markAllocated(offset, data.length);
    });
  }

  flush(ctx: RequestContext): Promise<void> {
    return this.perform({ kind: 'flush', offset: 0, length: 0, fua: false, noHole: false }, ctx, () => {
      this.flushes++;
    });
  }

  trim(offset: number, length: number, fua: boolean, ctx: RequestContext): Promise<void> {
    return this.perform({ kind: 'trim', offset, length, fua, noHole: false }, ctx, () => {
      this.disk.fill(0, offset, offset + length);
      this.punchHole(offset, length);
    });
  }

  writeZeroes(offset: number, length: number, options: ZeroOptions, ctx: RequestContext): Promise<void> {
    return this.perform({ kind: 'writeZeroes', offset, length, fua: options.fua, noHole: options.noHole }, ctx, () => {
      this.disk.fill(0, offset, offset + length);
      if (options.noHole) this.markAllocated(offset, length);
      else this.punchHole(offset, length);
    });
  }

  allocation(offset: number, length: number, ctx: RequestContext): Promise<readonly AllocationExtent[]> {
    return this.perform({ kind: 'allocation', offset, length, fua: false, noHole: false }, ctx, () => this.extents(offset, length));
  }

  prefetch(offset: number, length: number, ctx: RequestContext): Promise<void> {
    return this.perform({ kind: 'prefetch', offset, length, fua: false, noHole: false }, ctx, () => undefined);
  }

  /** The allocation of a range, one extent per run of blocks in the same state. */
  extents(offset: number, length: number): AllocationExtent[] {
    const out: { length: number; hole: boolean; zero: boolean }[] = [];
    const end = offset + length;
    for (let at = offset; at < end;) {
      const block = Math.floor(at / this.allocationBlockSize);
      const next = Math.min(end, (block + 1) * this.allocationBlockSize);
      const zero = this.disk.subarray(at, next).equals(this.zeroBlock.subarray(0, next - at));
      const hole = zero && this.allocated[block] === 0;
      const last = out.at(-1);
      if (last !== undefined && last.hole === hole && last.zero === zero) last.length += next - at;
      else out.push({ length: next - at, hole, zero });
      at = next;
    }
    return out;
  }

  private markAllocated(offset: number, length: number): void {
    const first = Math.floor(offset / this.allocationBlockSize);
    const last = Math.ceil((offset + length) / this.allocationBlockSize);
    this.allocated.fill(1, first, last);
  }

  /** Frees the blocks wholly inside the range; partly covered ones stay allocated (and now zero there). */
  private punchHole(offset: number, length: number): void {
    const first = Math.ceil(offset / this.allocationBlockSize);
    const end = offset + length === this.size ? this.allocated.length : Math.floor((offset + length) / this.allocationBlockSize);
    if (end > first) this.allocated.fill(0, first, end);
  }

  private perform<T>(operation: Operation, ctx: RequestContext, apply: () => T): Promise<T> {
    this.operations.push(operation);
    const failure = this.failWhen?.(operation);
    if (failure?.synchronous === true) throw failure.error;
    return this.run(operation, ctx, failure, apply);
  }

  private async run<T>(operation: Operation, ctx: RequestContext, failure: Failure | undefined, apply: () => T): Promise<T> {
    this.running++;
    this.peakConcurrency = Math.max(this.peakConcurrency, this.running);
    try {
      if (this.latencyMs > 0) await delay(this.latencyMs);
      if (this.holdWhen?.(operation) === true) await this.hold(operation, ctx.signal);
      if (failure !== undefined) throw failure.error;
      return apply();
    } finally {
      this.running--;
    }
  }

  private hold(operation: Operation, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const index = this.held.indexOf(entry);
        if (index >= 0) this.held.splice(index, 1);
        this.abandoned++;
        reject(new RequestAbortedError('held operation abandoned', { cause: signal.reason }));
      };
      const entry: HeldOperation = {
        operation,
        release: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      this.held.push(entry);
      for (const waiter of this.heldWaiters.splice(0)) {
        if (this.held.length >= waiter.count) waiter.resolve();
        else this.heldWaiters.push(waiter);
      }
    });
  }
}

/** A fixed set of memory exports; the empty name selects `defaultName` when given. */
export class MemoryRegistry implements ExportRegistry {
  constructor(
    readonly exports: readonly MemoryExport[],
    private readonly defaultName?: string,
  ) {}

  lookup(name: string): MemoryExport | undefined {
    const wanted = name === '' ? this.defaultName : name;
    return this.exports.find((exp) => exp.name === wanted);
  }

  list(): readonly MemoryExport[] {
    return this.exports;
  }

  get(name: string): MemoryExport {
    const exp = this.lookup(name);
    if (exp === undefined) throw new Error(`no memory export ${name}`);
    return exp;
  }
}
