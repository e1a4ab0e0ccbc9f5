import type { Logger } from 'pino';
import { backoffMs } from '../util/backoff.js';
import { classifyError } from '../util/classify-error.js';
import { sleep } from '../util/sleep.js';
import type { ObjectInfo, ObjectStore, StoreCallOptions, VersionedObject } from './object-store.js';

export interface RetryOptions {
  /** Attempts per call, the first included. */
  readonly attempts: number;
  readonly initialMs: number;
  readonly maxMs: number;
  readonly logger?: Logger;
}

/**
 * An object store whose calls are tried again on transient failures (a refused or timed-out connection,
 * 5xx, throttling), with back-off: what a command-line tool wants, where there is no hang engine to hold
 * the request and a store briefly slow to answer should not end an hour-long export. Conditional writes
 * are sent once: their outcome after a failure is unknown, and the caller reads the object again instead.
 * Listings are retried only before their first key.
 */
export function retryingStore(store: ObjectStore, opts: RetryOptions): ObjectStore {
  const retry = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (err) {
        if (attempt >= opts.attempts || classifyError(err) !== 'transient') throw err;
        const delay = backoffMs(attempt - 1, opts.initialMs, opts.maxMs);
        opts.logger?.warn({ err, attempt, retryInMs: Math.round(delay) }, `${what} failed; trying again`);
        await sleep(delay).done;
      }
    }
  };
  return {
    location: store.location,
    get: (key, o) => retry(`get ${key}`, () => store.get(key, o)),
    getRange: (key, offset, length, o) => retry(`get ${key}`, () => store.getRange(key, offset, length, o)),
    put: (key, body, o) => retry(`put ${key}`, () => store.put(key, body, o)),
    delete: (key, o) => retry(`delete ${key}`, () => store.delete(key, o)),
    getVersioned: (key, o): Promise<VersionedObject | undefined> => retry(`get ${key}`, () => store.getVersioned(key, o)),
    putIfAbsent: (key, body, o) => store.putIfAbsent(key, body, o),
    putIfMatch: (key, body, etag, o) => store.putIfMatch(key, body, etag, o),
    probe: (o) => store.probe(o),
    close: () => store.close(),
    list: (prefix, o) => retryListing(() => store.list(prefix, o), retry, `list ${prefix}`),
    listDetailed: (prefix, o?: StoreCallOptions): AsyncIterable<ObjectInfo> =>
      retryListing(() => store.listDetailed(prefix, o), retry, `list ${prefix}`),
    listFolders: (prefix, o) => retryListing(() => store.listFolders(prefix, o), retry, `list ${prefix}`),
  };
}

async function* retryListing<T>(
  open: () => AsyncIterable<T>,
  retry: <R>(what: string, call: () => Promise<R>) => Promise<R>,
  what: string,
): AsyncIterable<T> {
  let iterator = open()[Symbol.asyncIterator]();
  // The first page is retried by opening the listing again; once keys were yielded, a failure ends it.
  let first = await retry(what, async () => {
    try {
      return await iterator.next();
    } catch (err) {
      iterator = open()[Symbol.asyncIterator]();
      throw err;
    }
  });
  while (first.done !== true) {
    yield first.value;
    first = await iterator.next();
  }
}
