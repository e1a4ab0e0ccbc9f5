import { elementAt } from '../../shared/checked.js';

/** Bounded concurrency for the long-running commands (import, export, upgrade). */

/**
 * Runs `task` over `items` with `concurrency` workers, each built by `makeWorker` so that it can own
 * a reusable buffer. After the first failure no new item starts; the failure is thrown once every
 * worker has stopped, so no buffer is still in use when the caller moves on.
 */
export async function runPool(
  items: readonly number[],
  concurrency: number,
  signal: AbortSignal,
  makeWorker: () => (item: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { readonly err: unknown } | undefined;
  const work = async (task: (item: number) => Promise<void>): Promise<void> => {
    while (failure === undefined && !signal.aborted && next < items.length) {
      try {
        await task(elementAt(items, next++));
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, () => work(makeWorker())));
  if (failure !== undefined) throw failure.err;
  signal.throwIfAborted();
}

/** Fetches up to `concurrency` items ahead but consumes them strictly in order. */
export async function runInOrder(
  items: readonly number[],
  concurrency: number,
  signal: AbortSignal,
  fetch: (item: number) => Promise<Buffer>,
  consume: (data: Buffer) => Promise<void>,
): Promise<void> {
  const ahead: Promise<Buffer>[] = [];
  const start = (item: number): void => {
    const p = fetch(item);
    // Awaited in turn below; until then a failure must not count as unhandled.
    p.catch(() => undefined);
    ahead.push(p);
  };
  let next = 0;
  while (next < items.length && ahead.length < concurrency) start(elementAt(items, next++));
  for (let head = ahead.shift(); head !== undefined; head = ahead.shift()) {
    signal.throwIfAborted();
    const data = await head;
    if (next < items.length) start(elementAt(items, next++));
    await consume(data);
  }
}

export function* range(n: number): Generator<number> {
  for (let i = 0; i < n; i++) yield i;
}
