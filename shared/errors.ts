/**
 * Base class of every error Holdfast raises on purpose. Policy code (the hang engine, the CLI's exit
 * codes, the NBD error mapping) switches on the class, never on message text, so each failure that
 * needs a different answer gets its own subclass.
 */
export class HoldfastError extends Error {
  /** What the reader can do about it (a command to run, a setting to give), shown under the message. */
  readonly hint: string | undefined;

  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options);
    this.name = new.target.name;
    this.hint = options?.hint;
  }
}

/** A setting is wrong: which one and why is in the message. */
export class ConfigError extends HoldfastError {}

/** The caller asked for something that cannot be done with these arguments (bad size, bad name). */
export class InvalidArgumentError extends HoldfastError {}

/** A named volume does not exist in the store. */
export class VolumeNotFoundError extends HoldfastError {}

/** A volume with that name already exists. */
export class VolumeExistsError extends HoldfastError {}

/** Something in the store is not what a Holdfast volume looks like (a bad head, manifest or index). */
export class VolumeCorruptError extends HoldfastError {}

/** Another gateway holds the volume (same journal directory or same store). */
export class VolumeLockedError extends HoldfastError {}

/** Clients are attached to the volume and the change would pull it from under them (delete, shrink) unless forced. */
export class VolumeBusyError extends VolumeLockedError {}

/** The volume is read-only and the request would change it. */
export class ReadOnlyError extends HoldfastError {}

/** A journal segment holds a record that fails its checksum and is not a torn tail. */
export class JournalCorruptError extends HoldfastError {}

/** Writing or syncing the journal failed (EIO, ENOSPC ...); `cause` is the system error. */
export class JournalIoError extends HoldfastError {}

/** The request was abandoned because its client went away or the gateway is stopping. */
export class RequestAbortedError extends HoldfastError {}

/**
 * The request must not be answered at all: the server closes the connection instead, so that a
 * client with reconnect (QEMU's reconnect-delay) resends it to the next gateway. Used for requests
 * still held when the gateway shuts down — an EIO would reach the guest, a resend does not.
 */
export class RequestDroppedError extends HoldfastError {}

/**
 * Stored bytes fail their CRC32C, or an object is not what the volume's head says it is. Never held
 * (waiting does not mend it), never retried as transient: the request fails and the volume reports it.
 */
export class DataCorruptError extends HoldfastError {}

/**
 * Another gateway took the volume (its head has a newer writer epoch). The deposed gateway stops
 * acknowledging, drops the volume's clients so they reconnect to the new owner, and never writes it again.
 */
export class VolumeDeposedError extends HoldfastError {}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** How a failure appears in a log line: `{"err": {"class": …, "message": …, "cause": {…}}}`. */
export interface ErrorFields {
  readonly class: string;
  readonly message: string;
  readonly code?: string;
  readonly cause?: ErrorFields;
  readonly stack?: string;
}

const MAX_CAUSES = 3;

/**
 * An error as a log line shows it (the gateway's pino serializer, the functions' logger): class,
 * message, code, and its cause when the message does not already quote it; the stack only when asked
 * for (at debug), so that a retried failure costs one short line per attempt.
 */
export function describeError(err: unknown, withStack: boolean, depth = 0): ErrorFields {
  if (!(err instanceof Error))
    return { class: typeof err, message: typeof err === 'object' && err !== null ? JSON.stringify(err) : String(err) };
  const code = (err as { code?: unknown }).code;
  const cause = depth < MAX_CAUSES && err.cause !== undefined ? describeError(err.cause, withStack, depth + 1) : undefined;
  return {
    class: err.name,
    message: err.message,
    ...(typeof code === 'string' ? { code } : {}),
    // A wrapper whose message already quotes its cause's (StoreError: "… failed: ECONNREFUSED …") does not repeat it.
    ...(cause !== undefined && !err.message.includes(cause.message) ? { cause } : {}),
    ...(withStack && err.stack !== undefined ? { stack: err.stack } : {}),
  };
}
