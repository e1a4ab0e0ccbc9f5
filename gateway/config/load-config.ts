// gateway/config owns turning settings (flags, environment, config file; schema in shared/config.ts)
// into the gateway's resolved configuration, and the per-volume options derived from it.
import { readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import type { z } from 'zod';
import { GatewayConfigSchema, splitList, type GatewayConfig } from '../../shared/config.js';
import { ConfigError, errorMessage } from '../../shared/errors.js';

type Source = 'flag' | 'env' | 'file';
type SettingName = keyof z.input<typeof GatewayConfigSchema>;

const EMPTY_MEANS_NONE = new Set<string>(['createVolume']);
const SETTINGS = Object.keys(GatewayConfigSchema.shape) as SettingName[];

export function flagName(setting: string): string {
  return `--${setting.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

export function envName(setting: string): string {
  return `HOLDFAST_${setting.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

export interface ConfigSources {
  /** Settings given on the command line, camelCase, only those the user actually typed. */
  readonly flags: Readonly<Record<string, unknown>>;
  readonly env: NodeJS.ProcessEnv;
  /** Path of a JSON config file (--config or HOLDFAST_CONFIG). */
  readonly file?: string | undefined;
}

/** The resolved settings plus the paths derived from them. */
export interface ResolvedConfig extends GatewayConfig {
  readonly storeUrl: string;
  readonly journalRoot: string;
  /** The disk cache tier, when on: either setting turns it on (the other then has its default). */
  readonly diskCache: { readonly dir: string; readonly limitBytes: number } | undefined;
}

const DEFAULT_DISK_CACHE_BYTES = 10 * 2 ** 30;

/**
 * Merges defaults < config file < environment < flags, validates once, and reports a bad setting
 * by the name the user typed it under.
 */
export function loadConfig(sources: ConfigSources): ResolvedConfig {
  const merged: Record<string, unknown> = {};
  const origin = new Map<string, Source>();
  const file = sources.file ?? sources.env.HOLDFAST_CONFIG;
  if (file !== undefined && file !== '') {
    for (const [k, v] of Object.entries(readConfigFile(file))) {
      merged[k] = v;
      origin.set(k, 'file');
    }
  }
  for (const setting of SETTINGS) {
    const raw = sources.env[envName(setting)];
    // An empty variable is "unset" (as shells and container specs often leave them), except where
    // the empty value has a meaning of its own: HOLDFAST_CREATE_VOLUME="" creates nothing.
    if (raw === undefined || (raw === '' && !EMPTY_MEANS_NONE.has(setting))) continue;
    merged[setting] = fromEnv(setting, raw);
    origin.set(setting, 'env');
  }
  for (const [k, v] of Object.entries(sources.flags)) {
    if (v === undefined) continue;
    merged[k] = v;
    origin.set(k, 'flag');
  }
  const parsed = GatewayConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '');
      if (issue.code === 'unrecognized_keys') return `unknown setting(s) ${issue.keys.join(', ')} in ${file ?? 'the configuration'}`;
      return `${describe(key, origin.get(key), file)}: ${issue.message}`;
    });
    // One line, as the CLI reports every usage error (several mistakes are listed in it).
    throw new ConfigError(`invalid configuration: ${lines.join('; ')}`);
  }
  const c = parsed.data;
  const dataDir = resolve(c.dataDir);
  const storeUrl = c.store ?? `file://${join(dataDir, 'store')}`;
  const journalRoot = resolve(c.journalDir ?? join(dataDir, 'journal'));
  const diskCacheOn = c.diskCacheSize !== 0 && (c.cacheDir !== undefined || c.diskCacheSize !== undefined);
  const diskCache = diskCacheOn
    ? { dir: resolve(c.cacheDir ?? join(dataDir, 'cache')), limitBytes: c.diskCacheSize ?? DEFAULT_DISK_CACHE_BYTES }
    : undefined;
  return { ...c, dataDir, storeUrl, journalRoot, diskCache };
}

function describe(key: string, source: Source | undefined, file: string | undefined): string {
  switch (source) {
    case 'flag':
      return flagName(key);
    case 'env':
      return `${envName(key)} (environment)`;
    case 'file':
      return `"${key}" in ${file}`;
    default:
      return `setting ${key}`;
  }
}

function fromEnv(setting: SettingName, raw: string): unknown {
  if (setting === 'volumes') return splitList(raw);
  if (setting === 'readOnly' || setting === 'eventsSpill')
    return raw === 'true' || raw === '1' ? true : raw === 'false' || raw === '0' ? false : raw;
  return raw;
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(isAbsolute(path) ? path : resolve(path), 'utf8');
  } catch (cause) {
    throw new ConfigError(`cannot read config file ${path}: ${errorMessage(cause)}`, { cause });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${errorMessage(cause)}`, { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`config file ${path} must hold a JSON object of settings`);
  }
  return value as Record<string, unknown>;
}
