import type { SegmentFileOps } from '../../gateway/journal/segment-file.js';
import { fsSegmentFileOps } from '../../gateway/journal/segment-file.js';
import type { ObjectStore } from '../../gateway/store/object-store.js';
import { HoldfastError } from '../../shared/errors.js';

/** Thrown by a failpoint armed to crash, inside a model test: the "process" dies at that step. */
export class SimulatedCrash extends HoldfastError {}

/**
 * What an in-process "crash" cuts off: once `dead`, every store request and journal file operation
 * of that volume instance hangs forever, so the abandoned instance can change nothing afterwards —
 * exactly what the disk and the store would see if the process had been killed at that instant.
 */
export class CrashSwitch {
  dead = false;

  private gate<T>(run: () => Promise<T>): Promise<T> {
    return this.dead ? new Promise<T>(() => undefined) : run().then((v) => (this.dead ? new Promise<T>(() => undefined) : v));
  }

  store(inner: ObjectStore): ObjectStore {
    const g = <T>(run: () => Promise<T>) => this.gate(run);
    const dead = () => this.dead;
    return {
      location: inner.location,
      get: (k, o) => g(() => inner.get(k, o)),
      getRange: (k, a, b, o) => g(() => inner.getRange(k, a, b, o)),
      put: (k, b, o) => g(() => inner.put(k, b, o)),
      delete: (k, o) => g(() => inner.delete(k, o)),
      getVersioned: (k, o) => g(() => inner.getVersioned(k, o)),
      putIfAbsent: (k, b, o) => g(() => inner.putIfAbsent(k, b, o)),
      putIfMatch: (k, b, e, o) => g(() => inner.putIfMatch(k, b, e, o)),
      probe: (o) => g(() => inner.probe(o)),
      close: () => inner.close(),
      async *list(prefix, o) {
        for await (const k of inner.list(prefix, o)) {
          if (dead()) await new Promise(() => undefined);
          yield k;
        }
      },
      async *listDetailed(prefix, o) {
        for await (const k of inner.listDetailed(prefix, o)) {
          if (dead()) await new Promise(() => undefined);
          yield k;
        }
      },
      async *listFolders(prefix, o) {
        for await (const k of inner.listFolders(prefix, o)) {
          if (dead()) await new Promise(() => undefined);
          yield k;
        }
      },
    };
  }

  fileOps(inner: SegmentFileOps = fsSegmentFileOps): SegmentFileOps {
    const g = <T>(run: () => Promise<T>) => this.gate(run);
    return {
      open: async (path, flags) => {
        const f = await g(() => inner.open(path, flags));
        return {
          writev: (b, p) => g(() => f.writev(b, p)),
          datasync: () => g(() => f.datasync()),
          read: (into, at, n, p) => g(() => f.read(into, at, n, p)),
          readv: (b, p) => g(() => f.readv(b, p)),
          size: () => g(() => f.size()),
          close: () => f.close(),
        };
      },
      remove: (path) => g(() => inner.remove(path)),
    };
  }
}
