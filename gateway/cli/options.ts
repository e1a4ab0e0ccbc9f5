import type { Command } from 'commander';
import { splitList } from '../../shared/config.js';
import { flagName, loadConfig, type ResolvedConfig } from '../config/load-config.js';
import { SETTINGS_HELP } from './settings-help.js';

/** Adds the options for `settings` to `cmd`, named as in the config file but kebab-case. */
export function addSettingOptions(cmd: Command, settings: readonly (keyof typeof SETTINGS_HELP)[]): Command {
  for (const s of settings) {
    const { arg, help, list } = SETTINGS_HELP[s];
    const flags = arg === undefined ? flagName(s) : `${flagName(s)} <${arg}>`;
    // Lists take commas, as their environment variable and the CDK context do, and add up when repeated.
    if (list === true)
      cmd.option(flags, help, (value: string, previous: string[] | undefined) => [...(previous ?? []), ...splitList(value)]);
    else cmd.option(flags, help);
  }
  cmd.option('--config <file>', 'JSON config file with the same settings (camelCase); also HOLDFAST_CONFIG');
  return cmd;
}

/** Resolves the configuration from what the user typed on `cmd`, the environment and the config file. */
export function configFrom(cmd: Command): ResolvedConfig {
  const opts = cmd.opts<Record<string, unknown>>();
  const flags: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(opts)) {
    if (k === 'config' || !(k in SETTINGS_HELP)) continue;
    if (cmd.getOptionValueSource(k) === 'cli') flags[k] = v;
  }
  return loadConfig({ flags, env: process.env, file: typeof opts.config === 'string' ? opts.config : undefined });
}
