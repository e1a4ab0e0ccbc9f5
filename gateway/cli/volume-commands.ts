import type { Command } from 'commander';
import { z } from 'zod';
import { formatSize } from '../../shared/units.js';
import { cachedBytes } from '../disk-cache/cache-directory.js';
import { parsePage } from '../image/index-page.js';
import { isDataObjectKey, volumePrefix } from '../image/layout.js';
import { cloneFromSnapshot, listSnapshots, readSnapshot } from '../image/snapshots.js';
import { VolumeCatalog } from '../volume/catalog.js';
import { upgradeVolume } from '../volume/upgrade.js';
import { journalIdentity } from '../volume/journal-identity.js';
import { processFailpoints } from '../failpoints.js';
import { Volume } from '../volume/volume.js';
import { concurrencyArgument, sizeArgument } from './arguments.js';
import { addSettingOptions } from './options.js';
import { runPool } from './pool.js';
import { startProgress } from './progress.js';
import { askOwner, checkVolumeName, parseVolumeRef, withSession, withTakenVolume } from './session.js';
import { STORE_SETTINGS } from './settings-help.js';
import { temporarySnapshot } from './snapshot-commands.js';
import { printTable } from './table.js';
import { registerResizeCommand } from './resize-command.js';

const DeleteAnswer = z.object({ snapshots: z.number(), disconnected: z.number() });

export function registerVolumeCommands(program: Command): void {
  const volume = program.command('volume').description('create, list, inspect, resize, clone, upgrade and delete volumes in the store');

  addSettingOptions(
    volume
      .command('create <name>')
      .description('create an empty volume')
      .requiredOption('--size <size>', 'volume size, e.g. 10G (a multiple of 512 bytes)')
      .option('--extent-size <size>', 'extent size, a power of two from 64KiB to 64MiB', '4MiB')
      .option('--read-only', 'serve the volume read-only'),
    STORE_SETTINGS,
  ).action(async (name: string, opts: { size: string; extentSize: string; readOnly?: boolean }, cmd: Command) => {
    const size = sizeArgument(opts.size, '--size');
    const extentSize = sizeArgument(opts.extentSize, '--extent-size');
    await withSession(cmd, async (session) => {
      const m = await new VolumeCatalog(session.store).create({ name, size, extentSize, readOnly: opts.readOnly === true });
      process.stdout.write(
        `created volume ${m.name}: ${formatSize(m.size)}, extents of ${formatSize(m.extentSize)}${m.readOnly ? ', read-only' : ''}\n`,
      );
    });
  });

  addSettingOptions(
    volume.command('list').description('list the volumes in the store').option('--json', 'machine-readable output'),
    STORE_SETTINGS,
  ).action(async (opts: { json?: boolean }, cmd: Command) => {
    await withSession(cmd, async (session) => {
      const volumes = await new VolumeCatalog(session.store).list();
      if (opts.json === true) {
        process.stdout.write(
          `${JSON.stringify(
            volumes.map((v) => ({
              format: v.format,
              ...v.shape,
              ...(v.format === 2 ? { epoch: v.head.epoch, served: v.head.owner !== null, origin: v.head.origin ?? null } : {}),
            })),
            null,
            2,
          )}\n`,
        );
        return;
      }
      if (volumes.length === 0) {
        process.stdout.write('no volumes\n');
        return;
      }
      const rows = volumes.map((v) => [
        v.shape.name,
        formatSize(v.shape.size),
        formatSize(v.shape.extentSize),
        v.shape.readOnly ? 'ro' : 'rw',
        v.format === 1 ? '1 (upgrade)' : '2',
        v.shape.createdAt,
      ]);
      printTable(['NAME', 'SIZE', 'EXTENT', 'MODE', 'FORMAT', 'CREATED'], rows);
    });
  });

  addSettingOptions(
    volume
      .command('inspect <name>')
      .description('show a volume: its head, owner, deltas, snapshots, bytes stored, bytes in the disk cache')
      .option('--json', 'machine-readable output'),
    [...STORE_SETTINGS, 'cacheDir', 'diskCacheSize'],
  ).action(async (name: string, opts: { json?: boolean }, cmd: Command) => {
    checkVolumeName(name);
    await withSession(cmd, async (session) => {
      const head = await new VolumeCatalog(session.store).get(name);
      const snapshots = await listSnapshots(session.store, name);
      let storedBytes = 0;
      let storedObjects = 0;
      for await (const info of session.store.listDetailed(volumePrefix(name))) {
        if (!isDataObjectKey(info.key)) continue;
        storedBytes += info.size;
        storedObjects++;
      }
      const deltaBytes = head.deltas.reduce((n, d) => n + d.size, 0);
      let baseExtents = 0;
      const objects = new Map<string, number>(head.deltas.map((d) => [d.key, d.size]));
      for (const p of head.pages) {
        const body = await session.store.get(p.key);
        if (body === undefined) continue;
        const bases = parsePage(body, p.crc, p.page, p.key);
        baseExtents += bases.size;
        for (const b of bases.values()) objects.set(b.key, b.size);
      }
      const diskCache =
        session.config.diskCache === undefined ? null : await diskCacheShare(session.config.diskCache.dir, session.store.location, objects);
      const info = {
        name,
        location: `${session.store.location}${volumePrefix(name)}`,
        size: head.size,
        extentSize: head.extentSize,
        readOnly: head.readOnly,
        createdAt: head.createdAt,
        origin: head.origin ?? null,
        epoch: head.epoch,
        owner: head.owner,
        seq: head.seq,
        ackedSeq: head.ackedSeq,
        deltas: head.deltas.length,
        deltaBytes,
        indexPages: head.pages.length,
        baseExtents,
        released: head.released.length,
        snapshots: snapshots.map((s) => ({ name: s.name, createdAt: s.createdAt, seq: s.seq })),
        storedObjects,
        storedBytes,
        diskCache,
      };
      if (opts.json === true) {
        process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
        return;
      }
      const o = head.owner;
      const lines = [
        `volume:        ${name}${head.origin ? ` (clone of ${head.origin.volume}@${head.origin.snapshot})` : ''}`,
        `location:      ${info.location}`,
        `size:          ${formatSize(head.size)} (${head.size} bytes), extents of ${formatSize(head.extentSize)}, ${head.readOnly ? 'read-only' : 'read-write'}`,
        `created:       ${head.createdAt}`,
        `epoch:         ${head.epoch}`,
        `owner:         ${o === null ? 'none (not served)' : `gateway ${o.gateway} on ${o.host}, pid ${o.pid}${o.admin ? `, admin ${o.admin}` : ''}`}`,
        `head sequence: ${head.seq} (acknowledged by its owner: ${head.ackedSeq})`,
        `deltas:        ${head.deltas.length} (${formatSize(deltaBytes)})`,
        `base extents:  ${baseExtents} (in ${head.pages.length} index page${head.pages.length === 1 ? '' : 's'})`,
        `snapshots:     ${snapshots.length === 0 ? 'none' : snapshots.map((s) => s.name).join(', ')}`,
        `stored:        ${storedObjects} objects, ${formatSize(storedBytes)} under this volume (holdfast gc frees what nothing refers to)`,
        ...(diskCache === null
          ? []
          : [
              `disk cache:    ${diskCache.dir}: ${
                diskCache.indexed
                  ? `${formatSize(diskCache.bytes)} of the ${formatSize(diskCache.objectBytes)} the head names (${diskCache.objects} of ${objects.size} objects), as of its index`
                  : 'no index yet (a gateway writes it every 30 s and when it stops)'
              }`,
            ]),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
  });

  addSettingOptions(
    volume
      .command('delete <name>')
      .description('delete a volume and its snapshots (data no clone uses is freed by the next garbage collection)')
      .option('--force', 'delete it even while clients are attached (they are disconnected) or a gateway that does not answer holds it'),
    [...STORE_SETTINGS, 'adminToken'],
  ).action(async (name: string, opts: { force?: boolean }, cmd: Command) => {
    checkVolumeName(name);
    await withSession(cmd, async (session) => {
      const catalog = new VolumeCatalog(session.store);
      const head = await catalog.get(name);
      // The gateway serving it deletes it: it refuses while clients are attached, or disconnects them with --force.
      const answer = await askOwner(
        session,
        head,
        `/v1/volumes/${encodeURIComponent(name)}${opts.force === true ? '?force=true' : ''}`,
        'DELETE',
      );
      if (answer !== undefined) {
        const { snapshots, disconnected } = DeleteAnswer.parse(answer);
        process.stdout.write(
          `deleted volume ${name}${snapshots > 0 ? ` and ${snapshots} snapshot(s)` : ''}; gateway ${head.owner?.gateway} stopped serving it${disconnected > 0 ? ` and disconnected ${disconnected} client(s)` : ''}; its data is freed by the next garbage collection\n`,
        );
        return;
      }
      // Taking it first refuses a volume a live gateway serves, as that gateway's lease says.
      if (head.owner !== null && opts.force !== true) await withTakenVolume(session, name, () => Promise.resolve(undefined));
      const { snapshots } = await catalog.deleteWithJournal(name, Volume.journalDirFor(session.config.journalRoot, name));
      process.stdout.write(
        `deleted volume ${name}${snapshots > 0 ? ` and ${snapshots} snapshot(s)` : ''}; its data is freed by the next garbage collection\n`,
      );
    });
  });

  registerResizeCommand(volume);

  addSettingOptions(
    volume
      .command('clone <source> <name>')
      .description('create a volume from a snapshot (VOLUME@SNAPSHOT) or from a volume as of now, without copying data'),
    [...STORE_SETTINGS, 'adminToken'],
  ).action(async (source: string, name: string, _opts: unknown, cmd: Command) => {
    const ref = parseVolumeRef(source);
    checkVolumeName(name);
    await withSession(cmd, async (session) => {
      const clone = async (head: Parameters<typeof cloneFromSnapshot>[1]) => cloneFromSnapshot(session.store, head, name);
      const head =
        ref.snapshot !== undefined
          ? await clone(await readSnapshot(session.store, ref.volume, ref.snapshot))
          : await temporarySnapshot(session, ref.volume, 'clone', clone);
      process.stdout.write(
        `created volume ${name} (${formatSize(head.size)}) as a clone of ${ref.volume}${ref.snapshot !== undefined ? `@${ref.snapshot}` : ''}\n`,
      );
    });
  });

  addSettingOptions(
    volume
      .command('upgrade <name>')
      .description('convert a format 1 volume to format 2 (can be interrupted and run again)')
      .option('--concurrency <n>', 'extents converted at once', '8'),
    STORE_SETTINGS,
  ).action(async (name: string, opts: { concurrency: string }, cmd: Command) => {
    checkVolumeName(name);
    const concurrency = concurrencyArgument(opts.concurrency);
    await withSession(cmd, async (session) => {
      let progress: ReturnType<typeof startProgress> | undefined;
      let last = 0;
      const report = await upgradeVolume(session.store, name, {
        logger: session.logger,
        journalDir: Volume.journalDirFor(session.config.journalRoot, name),
        journalId: await journalIdentity(session.config.journalRoot),
        failpoints: processFailpoints,
        signal: session.signal,
        run: (items, work) =>
          runPool(items, concurrency, session.signal, () => async (i) => {
            await work(i);
          }),
        onExtent: (done, of) => {
          progress ??= startProgress('upgrade', of);
          progress.advance(done - last);
          last = done;
        },
      });
      progress?.stop();
      // What a format 1 gateway acknowledged and left in this journal goes into the volume now.
      if (report.backlog > 0) await withTakenVolume(session, name, () => Promise.resolve(undefined));
      process.stdout.write(
        `upgraded volume ${name} to format 2: ${report.converted} extents converted, ${report.reused} found converted already, ${report.legacyDeleted} format 1 objects removed${report.backlog > 0 ? ', its journal backlog uploaded' : ''}\n`,
      );
    });
  });

  addSettingOptions(volume.command('compact <name>').description('fold every delta of the volume into base extents now'), [
    ...STORE_SETTINGS,
    'adminToken',
  ]).action(async (name: string, _opts: unknown, cmd: Command) => {
    checkVolumeName(name);
    await withSession(cmd, async (session) => {
      const head = await new VolumeCatalog(session.store).get(name);
      const answer = await askOwner(session, head, `/v1/volumes/${encodeURIComponent(name)}/compact`, 'POST');
      if (answer === undefined) await withTakenVolume(session, name, (v) => v.compact());
      process.stdout.write(`compacted volume ${name}\n`);
    });
  });
}

/** How much of the objects a head names the disk cache holds, by its index. */
async function diskCacheShare(
  dir: string,
  storeLocation: string,
  objects: ReadonlyMap<string, number>,
): Promise<{ dir: string; indexed: boolean; bytes: number; objects: number; objectBytes: number }> {
  const held = await cachedBytes(dir, storeLocation);
  let bytes = 0;
  let count = 0;
  for (const key of objects.keys()) {
    const n = held?.get(key) ?? 0;
    bytes += n;
    if (n > 0) count++;
  }
  return { dir, indexed: held !== undefined, bytes, objects: count, objectBytes: [...objects.values()].reduce((a, b) => a + b, 0) };
}
