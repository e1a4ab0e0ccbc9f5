import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import { formatSize } from '../../shared/units.js';
import { VolumeCatalog } from '../volume/catalog.js';
import { sizeArgument } from './arguments.js';
import { addSettingOptions } from './options.js';
import { askOwner, checkVolumeName, withSession, withTakenVolume } from './session.js';
import { STORE_SETTINGS } from './settings-help.js';
import { UsageError } from './usage.js';

const ResizeAnswer = z.object({ size: z.number() });

/**
 * `holdfast volume resize NAME SIZE`: grows a volume, or with --shrink (and a confirmation) shrinks it.
 * A gateway serving the volume does it (connections made after see the new size); otherwise the
 * command takes the volume itself.
 */
export function registerResizeCommand(volume: Command): void {
  addSettingOptions(
    volume
      .command('resize <name> <size>')
      .description("change a volume's size; clients see the new size when they reconnect")
      .option('--shrink', 'allow a smaller size: the data past it is lost, and no client may be attached')
      .option('--yes', 'shrink without asking for confirmation'),
    [...STORE_SETTINGS, 'adminToken'],
  ).action(async (name: string, sizeText: string, opts: { shrink?: boolean; yes?: boolean }, cmd: Command) => {
    checkVolumeName(name);
    const size = sizeArgument(sizeText, 'size');
    await withSession(cmd, async (session) => {
      const head = await new VolumeCatalog(session.store).get(name);
      if (size === head.size) {
        process.stdout.write(`volume ${name} is ${formatSize(size)} already\n`);
        return;
      }
      if (size < head.size) {
        if (opts.shrink !== true) {
          throw new UsageError(
            `${formatSize(size)} is smaller than volume ${name} (${formatSize(head.size)}); shrinking loses the data past the new size: pass --shrink to do it`,
          );
        }
        if (opts.yes !== true) await confirmShrink(name, head.size, size);
      }
      const answer = await askOwner(session, head, `/v1/volumes/${encodeURIComponent(name)}/resize`, 'POST', { size });
      if (answer === undefined) await withTakenVolume(session, name, (v) => v.resize(size));
      else ResizeAnswer.parse(answer);
      process.stdout.write(
        `resized volume ${name}: ${formatSize(head.size)} → ${formatSize(size)}${answer !== undefined ? ' (clients see it when they reconnect)' : ''}\n`,
      );
    });
  });
}

/** Asks on the terminal; without one, --yes is the only way to say it. */
async function confirmShrink(name: string, from: number, to: number): Promise<void> {
  if (!process.stdin.isTTY) throw new UsageError(`shrinking volume ${name} needs --yes when not run on a terminal`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const typed = await rl.question(
      `Shrinking ${name} from ${formatSize(from)} to ${formatSize(to)} destroys the data past ${formatSize(to)}. Type the volume name to go on: `,
    );
    if (typed.trim() !== name) throw new UsageError(`not confirmed: volume ${name} was not resized`);
  } finally {
    rl.close();
  }
}
