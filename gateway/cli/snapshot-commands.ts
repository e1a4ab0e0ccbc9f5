import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { formatSize } from '../../shared/units.js';
import type { Head } from '../image/head.js';
import { checkSnapshotName, deleteSnapshot, listSnapshots, readSnapshot, type SnapshotInfo, storeSnapshot } from '../image/snapshots.js';
import type { ObjectStore } from '../store/object-store.js';
import { VolumeCatalog } from '../volume/catalog.js';
import { addSettingOptions } from './options.js';
import { askOwner, checkVolumeName, type Session, withSession, withTakenVolume } from './session.js';
import { STORE_SETTINGS } from './settings-help.js';
import { printTable } from './table.js';

export function registerSnapshotCommands(program: Command): void {
  const snapshot = program.command('snapshot').description('point-in-time copies of a volume (no data is copied)');

  addSettingOptions(
    snapshot
      .command('create <volume> <name>')
      .description('snapshot the volume as of now: every write acknowledged before the command is in it')
      .addHelpText(
        'after',
        '\nA volume served by a gateway is snapshotted by that gateway (it holds the acknowledged writes not yet\nin the store); freeze the guest filesystem first (fsfreeze) for an application-consistent snapshot.',
      ),
    [...STORE_SETTINGS, 'adminToken'],
  ).action(async (volume: string, name: string, _opts: unknown, cmd: Command) => {
    checkVolumeName(volume);
    checkSnapshotName(name);
    await withSession(cmd, async (session) => {
      const info = await createSnapshot(session, volume, name);
      process.stdout.write(`created snapshot ${volume}@${info.name}: ${formatSize(info.size)} as of write ${info.seq}\n`);
    });
  });

  addSettingOptions(
    snapshot.command('list <volume>').description("list a volume's snapshots").option('--json', 'machine-readable output'),
    STORE_SETTINGS,
  ).action(async (volume: string, opts: { json?: boolean }, cmd: Command) => {
    checkVolumeName(volume);
    await withSession(cmd, async (session) => {
      await new VolumeCatalog(session.store).get(volume);
      const list = await listSnapshots(session.store, volume);
      if (opts.json === true) process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
      else if (list.length === 0) process.stdout.write(`volume ${volume} has no snapshots\n`);
      else
        printTable(
          ['NAME', 'CREATED', 'SEQ', 'SIZE'],
          list.map((s) => [s.name, s.createdAt, String(s.seq), formatSize(s.size)]),
        );
    });
  });

  addSettingOptions(
    snapshot
      .command('delete <volume> <name>')
      .description('delete a snapshot (its data goes once no clone uses it, at the next garbage collection)'),
    STORE_SETTINGS,
  ).action(async (volume: string, name: string, _opts: unknown, cmd: Command) => {
    checkVolumeName(volume);
    await withSession(cmd, async (session) => {
      await deleteSnapshot(session.store, volume, name);
      process.stdout.write(`deleted snapshot ${volume}@${name}\n`);
    });
  });
}

/**
 * Snapshots a volume: through the gateway that serves it, if one does (only it has the acknowledged
 * writes not yet in the store); straight from the head if nobody owns it (a released head holds
 * everything); else by taking the volume, which uploads what this journal directory holds for it.
 */
export async function createSnapshot(session: Session, volume: string, name: string): Promise<SnapshotInfo> {
  const head = await new VolumeCatalog(session.store).get(volume);
  if (head.owner === null) return storeSnapshot(session.store, head, name);
  const answer = await askOwner(session, head, `/v1/volumes/${encodeURIComponent(volume)}/snapshots`, 'POST', { name });
  if (answer !== undefined) return answer as SnapshotInfo;
  return withTakenVolume(session, volume, async (v) => storeSnapshot(session.store, await v.committedHead(), name));
}

export function readHeadOrSnapshot(store: ObjectStore, volume: string, snapshot: string | undefined): Promise<Head> {
  return snapshot === undefined ? new VolumeCatalog(store).get(volume) : readSnapshot(store, volume, snapshot);
}

/** Runs `fn` on a snapshot of the volume taken now, deleted afterwards (export and clone of a live volume). */
export async function temporarySnapshot<T>(session: Session, volume: string, purpose: string, fn: (head: Head) => Promise<T>): Promise<T> {
  const name = `${purpose}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  await createSnapshot(session, volume, name);
  try {
    return await fn(await readSnapshot(session.store, volume, name));
  } finally {
    await deleteSnapshot(session.store, volume, name);
  }
}
