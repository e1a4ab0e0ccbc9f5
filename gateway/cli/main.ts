import { Command } from 'commander';
import {
  ConfigError,
  HoldfastError,
  InvalidArgumentError,
  VolumeExistsError,
  VolumeLockedError,
  VolumeNotFoundError,
  errorMessage,
} from '../../shared/errors.js';
import { registerServe } from './serve.js';
import { registerVolumeCommands } from './volume-commands.js';
import { registerImportExport } from './import-export.js';
import { registerStatus } from './status.js';
import { registerSnapshotCommands } from './snapshot-commands.js';
import { registerGcCommand } from './gc-command.js';
import { TakeoverRefusedError, VolumeFormatError } from '../image/take-volume.js';

/** Exit codes that scripts can rely on. */
const EXIT = { failure: 1, usage: 2, locked: 3, notFound: 4, exists: 5, needsUpgrade: 6 } as const;

function exitCodeFor(err: unknown): number {
  if (err instanceof ConfigError || err instanceof InvalidArgumentError) return EXIT.usage;
  if (err instanceof VolumeLockedError || err instanceof TakeoverRefusedError) return EXIT.locked;
  if (err instanceof VolumeFormatError) return EXIT.needsUpgrade;
  if (err instanceof VolumeNotFoundError) return EXIT.notFound;
  if (err instanceof VolumeExistsError) return EXIT.exists;
  return EXIT.failure;
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command()
    .name('holdfast')
    .description('Block-storage gateway: NBD volumes on S3 extents, with a durable write journal')
    .showHelpAfterError()
    .enablePositionalOptions();
  registerServe(program);
  registerVolumeCommands(program);
  registerImportExport(program);
  registerSnapshotCommands(program);
  registerGcCommand(program);
  registerStatus(program);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const detail = err instanceof HoldfastError ? err.message : errorMessage(err);
    process.stderr.write(`holdfast: ${detail}\n`);
    process.exitCode = exitCodeFor(err);
  }
}
