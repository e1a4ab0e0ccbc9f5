import { VolumeBusyError } from '../shared/errors.js';
import type { VolumeStorage } from './admin/storage-routes.js';
import { deleteSnapshot, listSnapshots, storeSnapshot } from './image/snapshots.js';
import type { ObjectStore } from './store/object-store.js';
import { VolumeCatalog } from './volume/catalog.js';
import { Volume } from './volume/volume.js';

/** What the storage operations need from the gateway that serves the volume. */
export interface ServingGateway {
  readonly store: ObjectStore;
  readonly journalRoot: string;
  /**
   * Stops offering the volume (lookups miss it, the watcher leaves its name alone until `forgotten`),
   * closes its connections after their requests in flight, and closes the volume; resolves with the
   * number of connections closed.
   */
  retire(volume: Volume): Promise<number>;
  /** The retired volume's name is free again (deleted, or the deletion failed). */
  forgotten(name: string): void;
  /** The volume's size changed: the record kept in its journal directory follows. */
  resized(volume: Volume): Promise<void>;
}

/**
 * What the admin API may do with a served volume's storage: snapshots, compaction, resize and delete.
 * These go through the gateway that holds the volume, so they include every acknowledged write and
 * its clients are told (see docs/volume-format-2.md, "Live volumes").
 */
export function servedVolumeStorage(volume: Volume, gateway: ServingGateway): VolumeStorage {
  const { store } = gateway;
  const name = volume.name;
  return {
    snapshot: async (snapshot) => storeSnapshot(store, await volume.committedHead(), snapshot),
    listSnapshots: () => listSnapshots(store, name),
    deleteSnapshot: (snapshot) => deleteSnapshot(store, name, snapshot),
    compact: async () => {
      await volume.compact();
      return volume.stats().deltas;
    },
    resize: async (size) => {
      await volume.resize(size);
      await gateway.resized(volume);
      return { size: volume.size };
    },
    delete: async (force) => {
      const clients = volume.clientCount;
      if (clients > 0 && !force)
        throw new VolumeBusyError(`volume ${name} has ${clients} client(s) attached; deleting it with --force disconnects them`);
      const disconnected = await gateway.retire(volume);
      try {
        const { snapshots } = await new VolumeCatalog(store).deleteWithJournal(name, Volume.journalDirFor(gateway.journalRoot, name));
        return { snapshots, disconnected };
      } finally {
        gateway.forgotten(name);
      }
    },
  };
}
