import type { Command } from 'commander';
import { InvalidArgumentError } from '../../shared/errors.js';
import { formatSize, parseSize } from '../../shared/units.js';
import { openStore } from '../store/open-store.js';
import type { ObjectStore } from '../store/object-store.js';
import { VolumeCatalog } from '../volume/catalog.js';
import { rm } from 'node:fs/promises';
import { createLogger } from '../logger.js';
import { leaseKey } from '../volume/layout.js';
import { Volume } from '../volume/volume.js';
import { LEASE_TTL_MS, withVolumeLock } from '../volume/volume-lock.js';
import { STORE_SETTINGS } from './settings-help.js';
import { addSettingOptions, configFrom } from './options.js';

export function sizeArgument(text: string, what: string): number {
  const n = parseSize(text);
  if (n === undefined) throw new InvalidArgumentError(`${what} "${text}" is not a size like 10G, 512MiB or 1048576`);
  return n;
}

/** Runs `fn` with the store the command's settings name, closing it afterwards. */
export async function withStore<T>(cmd: Command, fn: (store: ObjectStore) => Promise<T>): Promise<T> {
  const store = openStore(configFrom(cmd));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export function registerVolumeCommands(program: Command): void {
  const volume = program.command('volume').description('create, list, inspect and delete volumes in the store');

  addSettingOptions(
    volume
      .command('create <name>')
      .description('create an empty volume')
      .requiredOption('--size <size>', 'volume size, e.g. 10G (a multiple of 512 bytes)')
      .option('--extent-size <size>', 'extent object size, a power of two from 64KiB to 64MiB', '4MiB')
      .option('--read-only', 'serve the volume read-only'),
    STORE_SETTINGS,
  ).action(async (name: string, opts: { size: string; extentSize: string; readOnly?: boolean }, cmd: Command) => {
    const size = sizeArgument(opts.size, '--size');
    const extentSize = sizeArgument(opts.extentSize, '--extent-size');
    const m = await withStore(cmd, (store) => new VolumeCatalog(store).create({ name, size, extentSize, readOnly: opts.readOnly === true }));
    process.stdout.write(`created volume ${m.name}: ${formatSize(m.size)}, extents of ${formatSize(m.extentSize)}${m.readOnly ? ', read-only' : ''}\n`);
  });

  addSettingOptions(volume.command('list').description('list the volumes in the store').option('--json', 'machine-readable output'), STORE_SETTINGS).action(
    async (opts: { json?: boolean }, cmd: Command) => {
      const manifests = await withStore(cmd, (store) => new VolumeCatalog(store).list());
      if (opts.json === true) {
        process.stdout.write(`${JSON.stringify(manifests, null, 2)}\n`);
        return;
      }
      if (manifests.length === 0) {
        process.stdout.write('no volumes\n');
        return;
      }
      const rows = manifests.map((m) => [m.name, formatSize(m.size), formatSize(m.extentSize), m.readOnly ? 'ro' : 'rw', m.createdAt]);
      printTable(['NAME', 'SIZE', 'EXTENT', 'MODE', 'CREATED'], rows);
    },
  );

  addSettingOptions(volume.command('inspect <name>').description('show a volume: manifest, stored extents, lease').option('--json', 'machine-readable output'), STORE_SETTINGS).action(
    async (name: string, opts: { json?: boolean }, cmd: Command) => {
      const info = await withStore(cmd, async (store) => {
        const catalog = new VolumeCatalog(store);
        const manifest = await catalog.get(name);
        const extents = await catalog.countExtents(name);
        const leaseBody = await store.get(leaseKey(name));
        const lease = leaseBody === undefined ? undefined : (JSON.parse(leaseBody.toString('utf8')) as { host?: string; pid?: number; renewedAt?: number });
        const leaseLive = lease?.renewedAt !== undefined && Date.now() - lease.renewedAt < LEASE_TTL_MS;
        return { ...manifest, storedExtents: extents, totalExtents: Math.ceil(manifest.size / manifest.extentSize), storedBytesAtMost: extents * manifest.extentSize, servedBy: leaseLive ? lease : null, location: store.location };
      });
      if (opts.json === true) {
        process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
        return;
      }
      const lines = [
        `volume:        ${info.name}`,
        `location:      ${info.location}volumes/${info.name}/`,
        `size:          ${formatSize(info.size)} (${info.size} bytes)`,
        `extent size:   ${formatSize(info.extentSize)}`,
        `mode:          ${info.readOnly ? 'read-only' : 'read-write'}`,
        `created:       ${info.createdAt}`,
        `extents:       ${info.storedExtents} of ${info.totalExtents} stored (${formatSize(info.storedBytesAtMost)} at most)`,
        `served by:     ${info.servedBy ? `${info.servedBy.host} pid ${info.servedBy.pid}` : 'no gateway'}`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    },
  );

  addSettingOptions(volume.command('delete <name>').description('delete a volume, all its extents and its local journal'), STORE_SETTINGS).action(
    async (name: string, _opts: unknown, cmd: Command) => {
      const config = configFrom(cmd);
      const logger = createLogger(config.logLevel, config.logFormat);
      await withStore(cmd, async (store) => {
        const catalog = new VolumeCatalog(store);
        await catalog.get(name);
        // The same lock a gateway takes: a served volume cannot be deleted under its clients.
        let deleted = 0;
        await withVolumeLock({ name, journalRoot: config.journalRoot, store, logger }, () =>
          catalog.delete(name, (n) => {
            deleted = n;
            if (n % 100 === 0) process.stderr.write(`\rdeleted ${n} objects`);
          }),
        );
        // Old journal records must never be replayed into a new volume of the same name.
        await rm(Volume.journalDirFor(config.journalRoot, name), { recursive: true, force: true });
        process.stdout.write(`${deleted >= 100 ? '\n' : ''}deleted volume ${name} (${deleted} objects, the manifest and its journal)\n`);
      });
    },
  );
}

function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  process.stdout.write(`${[line(header), ...rows.map(line)].join('\n')}\n`);
}
