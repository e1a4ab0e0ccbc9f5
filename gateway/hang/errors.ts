import type { ErrorClass } from '../../shared/events.js';
import { HoldfastError } from '../../shared/errors.js';

export type FailReason = 'policy' | 'timeout' | 'timed-out' | 'paused' | 'released' | 'corrupt';

/**
 * A guest request that needed failing storage is answered with an error (EIO on the wire).
 * `reason` says why it was not held or why holding stopped; `errorClass` and `cause` say what failed.
 */
export class StorageFailedError extends HoldfastError {
  constructor(
    readonly reason: FailReason,
    readonly errorClass: ErrorClass | null,
    options: { cause?: unknown } = {},
  ) {
    super(`${describe(reason)}${errorClass !== null ? ` (${errorClass} storage error)` : ''}`, options);
  }
}

function describe(reason: FailReason): string {
  switch (reason) {
    case 'policy':
      return 'storage failed and the hang policy fails this error class';
    case 'timeout':
      return 'hang timeout: storage did not recover in time';
    case 'timed-out':
      return 'volume is timed out: failing fast until storage answers again';
    case 'paused':
      return 'hang handling is paused: held request completed with its error';
    case 'released':
      return 'held request released by an operator';
    case 'corrupt':
      return 'stored data is corrupt: never held, waiting does not mend it';
  }
}
