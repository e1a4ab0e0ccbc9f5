// gateway/cli owns the `holdfast` command line: this entry point (commands, exit codes), `serve`,
// the volume, snapshot, import/export, resize, gc and status commands, their argument parsing,
// settings help and progress output. Commands reach volumes through session.ts.
import { Command, CommanderError } from 'commander';
import packageJson from '../../package.json' with { type: 'json' };
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
import { checkS3Region } from './s3-region.js';
import { registerStatus } from './status.js';
import { registerSnapshotCommands } from './snapshot-commands.js';
import { registerGcCommand } from './gc-command.js';
import { TakeoverRefusedError, VolumeFormatError } from '../image/take-volume.js';
import { UsageError, helpHint, reportUsageErrors } from './usage.js';

/** Exit codes that scripts can rely on (README, Using it). */
const EXIT = { failure: 1, usage: 2, locked: 3, notFound: 4, exists: 5, needsUpgrade: 6 } as const;

function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError || err instanceof ConfigError || err instanceof InvalidArgumentError) return EXIT.usage;
  if (err instanceof VolumeLockedError || err instanceof TakeoverRefusedError) return EXIT.locked;
  if (err instanceof VolumeFormatError) return EXIT.needsUpgrade;
  if (err instanceof VolumeNotFoundError) return EXIT.notFound;
  if (err instanceof VolumeExistsError) return EXIT.exists;
  return EXIT.failure;
}

/** Every command and option of the CLI (the README's "Using it" is checked against this tree). */
export function buildProgram(): Command {
  const program = new Command()
    .name('holdfast')
    .description('Block-storage gateway: NBD volumes on S3 extents, with a durable write journal')
    .version(`holdfast ${packageJson.version} (Node ${process.version})`, '-V, --version', 'print the version and exit')
    .enablePositionalOptions();
  registerServe(program);
  registerVolumeCommands(program);
  registerImportExport(program);
  registerSnapshotCommands(program);
  registerGcCommand(program);
  registerStatus(program);
  reportUsageErrors(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  // The command whose action runs: a usage error raised inside it points at its --help.
  let running: Command = program;
  program.hook('preAction', async (_program, action) => {
    running = action;
    await checkS3Region(action);
  });
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    // The reader went away (`holdfast status --watch | head`): a command's output has nobody left to
    // read it, so it ends quietly. The gateway keeps serving; its stdout only carried the start banner.
    if (running.name() !== 'serve') process.exit(0);
  });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError && err.exitCode === 0) return;
    const code = exitCodeFor(err);
    const message = err instanceof UsageError ? err.message : `holdfast: ${err instanceof HoldfastError ? err.message : errorMessage(err)}`;
    const hint = err instanceof HoldfastError && err.hint !== undefined ? err.hint : code === EXIT.usage ? helpHint(running) : undefined;
    process.stderr.write(`${message}\n${hint === undefined ? '' : `${hint}\n`}`);
    process.exitCode = code;
  }
}
