import type { Command, CommanderError } from 'commander';
import { HoldfastError } from '../../shared/errors.js';

/**
 * The command line itself is wrong: an unknown option or command, a missing argument or value.
 * Reported in one line with a hint, as qemu-img and nbdkit do, and exit code 2 like every other
 * usage error, never with the whole help page.
 */
export class UsageError extends HoldfastError {}

/** "holdfast volume create": the words a user types to reach `cmd`. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c !== null; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** The hint under a usage error: where the options of that command are listed. */
export function helpHint(cmd: Command): string {
  return `Try '${commandPath(cmd)} --help' for more information.`;
}

/**
 * Makes every command of `program` report usage errors as UsageError instead of printing its help
 * and exiting: the caller prints one line and exits 2. Commands that only group others (`volume`)
 * get an action that names their subcommands. Call after every command is registered.
 */
export function reportUsageErrors(program: Command): void {
  for (const cmd of allCommands(program)) {
    cmd.configureOutput({ outputError: () => undefined });
    cmd.exitOverride((err: CommanderError) => {
      // Help and --version end the program without an error.
      if (err.exitCode === 0) throw err;
      throw new UsageError(`${commandPath(cmd)}: ${oneLine(err.message)}`, { cause: err, hint: helpHint(cmd) });
    });
    if (cmd.commands.length > 0 && cmd !== program) groupAction(cmd);
  }
  // `holdfast frob` would otherwise reach the default command (serve) as an argument it does not take.
  const defaultCommand = program.commands.find((c) => c.name() === 'serve');
  defaultCommand?.allowExcessArguments(true).hook('preAction', (serve) => {
    if (serve.args.length > 0)
      throw new UsageError(`holdfast: unknown command '${serve.args[0]}' (commands: ${names(program)})`, { hint: helpHint(program) });
  });
}

function groupAction(group: Command): void {
  group.allowExcessArguments(true).action((_opts: unknown, self: Command) => {
    const what = self.args.length === 0 ? 'missing command' : `unknown command '${self.args[0]}'`;
    throw new UsageError(`${commandPath(group)}: ${what} (commands: ${names(group)})`, { hint: helpHint(group) });
  });
}

function names(cmd: Command): string {
  return cmd.commands
    .map((c) => c.name())
    .filter((n) => n !== 'help')
    .join(', ');
}

/** Commander's messages start with "error: " and put a suggestion on a line of its own. */
function oneLine(message: string): string {
  return message
    .replace(/^error: /, '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join(' ')
    .replace(/\(Did you mean/, '(did you mean');
}

function allCommands(root: Command): Command[] {
  return [root, ...root.commands.flatMap((c) => allCommands(c))];
}
