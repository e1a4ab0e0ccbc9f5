import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';
import { describeError, type ErrorFields } from '../shared/errors.js';
import { valueOf } from '../shared/checked.js';

const LOG_BUFFER_BYTES = 16 * 1024 * 1024;

export type LogFormat = 'pretty' | 'json' | 'auto';

/**
 * Logs go to stderr so that command output on stdout stays parseable. `auto` is readable in a
 * terminal and JSON (one object per line) everywhere else, as log shippers want.
 */
export function createLogger(level: string, format: LogFormat): Logger {
  const usePretty = format === 'pretty' || (format === 'auto' && process.stderr.isTTY);
  if (usePretty) {
    return pino(
      { level, serializers: { err: errorSerializer(level) } },
      pretty({
        destination: 2,
        // @types/node says boolean, but isTTY is undefined on a pipe, and pino-pretty would then guess colours.
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-boolean-literal-compare -- the type is wrong here
        colorize: process.stderr.isTTY === true,
        translateTime: 'SYS:HH:MM:ss.l',
        ignore: 'pid,hostname',
        sync: true,
      }),
    );
  }
  // Asynchronous so that a slow log reader does not stall the data path, but bounded: past
  // LOG_BUFFER_BYTES waiting to be written, lines are dropped rather than held in memory.
  return pino(
    { level, base: { pid: process.pid }, serializers: { err: errorSerializer(level) } },
    pino.destination({ dest: 2, sync: false, maxLength: LOG_BUFFER_BYTES }),
  );
}

/**
 * The convention for logging a failure, above all one that is retried: log the error under `err`
 * (`logger.warn({ err, attempt, retryInMs }, 'PutEvents failed; retrying')`), one line per failure.
 * Loggers from createLogger print it as its class, message, code and cause (when they add
 * something); the stack only at debug or trace, so a long outage costs one short line per retry.
 */
export function errorSerializer(level: string): (err: unknown) => ErrorFields {
  const withStack = (pino.levels.values[level] ?? Infinity) <= valueOf(pino.levels.values, 'debug');
  return (err) => describeError(err, withStack);
}
