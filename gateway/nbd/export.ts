/**
 * What the NBD server needs from a block device. The server knows nothing of journals or object
 * stores; the volume layer implements this. Errors thrown by these methods are mapped to NBD error
 * numbers by `errnoFor` in ./errors.ts (ReadOnlyError → EPERM, InvalidArgumentError → EINVAL,
 * a full disk anywhere in the cause chain → ENOSPC, anything else → EIO). A method that throws RequestDroppedError gets no answer:
 * the server closes the connection, so that a reconnecting client resends the request.
 */
export interface RequestContext {
  /** Aborted when the client's connection closes: a request still held must then be dropped. */
  readonly signal: AbortSignal;
}

export interface ZeroOptions {
  /** NBD_CMD_FLAG_FUA: durable when the reply leaves. */
  readonly fua: boolean;
  /** NBD_CMD_FLAG_NO_HOLE: the range must stay allocated (not deallocated). */
  readonly noHole: boolean;
}

/** One run of bytes with the same allocation state, as NBD's base:allocation context reports it. */
export interface AllocationExtent {
  /** Bytes, at least 1. */
  readonly length: number;
  /** Not backed by stored data (NBD_STATE_HOLE). */
  readonly hole: boolean;
  /** Known to read as zeros (NBD_STATE_ZERO). */
  readonly zero: boolean;
}

export interface NbdExport {
  /** The export name; the server describes the export to clients by this name and its size only. */
  readonly name: string;
  /** Size in bytes (a multiple of `minimumBlockSize`). */
  readonly size: number;
  readonly readOnly: boolean;
  /** True when a FLUSH on one connection makes writes acknowledged on every connection durable. */
  readonly canMultiConn: boolean;
  /** NBD_INFO_BLOCK_SIZE: minimum, preferred and maximum payload sizes. */
  readonly minimumBlockSize: number;
  readonly preferredBlockSize: number;

  /**
   * Reads `length` bytes at `offset`. The caller must not modify the returned buffer and should use
   * it at once: it may be a view of the export's cache, which later writes change in place (a reply
   * is sent from it without a copy).
   */
  read(offset: number, length: number, ctx: RequestContext): Promise<Buffer>;
  /**
   * Called once with what `read` returned, when its reply has been handed to the kernel or dropped:
   * an export that returned a view of memory it reuses may reuse it from then on.
   */
  readDone?(data: Buffer): void;
  /**
   * Writes `data` at `offset`; on return the data is durable. The export may keep a reference to
   * `data` until then (it is queued for the journal without a copy), not after: once a write has
   * succeeded the server uses its buffer again. After a failure it does not (the journal may still
   * hold it).
   */
  write(offset: number, data: Buffer, fua: boolean, ctx: RequestContext): Promise<void>;
  /** Every write acknowledged before this call is durable on return. */
  flush(ctx: RequestContext): Promise<void>;
  /** The range reads as zeros afterwards (Holdfast never returns stale data after TRIM). */
  trim(offset: number, length: number, fua: boolean, ctx: RequestContext): Promise<void>;
  writeZeroes(offset: number, length: number, options: ZeroOptions, ctx: RequestContext): Promise<void>;
  /**
   * The allocation of `length` bytes at `offset` as consecutive extents starting at `offset`. They
   * may cover less than the range (at least one byte; the client asks again for the rest) but never
   * more. A region the export knows nothing about is reported as data that is not zero.
   */
  allocation(offset: number, length: number, ctx: RequestContext): Promise<readonly AllocationExtent[]>;
  /**
   * NBD_CMD_CACHE: the client will soon access the range, so bring it close (into the extent
   * cache). Only a hint: success promises nothing about later speed, and the contents never change.
   */
  prefetch(offset: number, length: number, ctx: RequestContext): Promise<void>;
  /**
   * Called once per connection that selects this export and once when it goes away, so that the
   * volume can count its clients.
   */
  attach(): void;
  detach(): void;
}

/** The set of exports a server offers, chosen by export name. */
export interface ExportRegistry {
  /** The export for `name`; the empty name selects the default export, if one is configured. */
  lookup(name: string): NbdExport | undefined;
  list(): readonly NbdExport[];
}
