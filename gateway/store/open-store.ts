import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../../shared/errors.js';
import { LocalDirectoryStore } from './local-store.js';
import type { ObjectStore } from './object-store.js';
import { S3ObjectStore, parseS3Url } from './s3-store.js';

export interface StoreSettings {
  /** `s3://bucket/prefix`, `file:///abs/path` or a plain directory path. */
  readonly storeUrl: string;
  readonly s3Endpoint?: string | undefined;
  readonly s3Region?: string | undefined;
}

/** Builds the object store named by the configuration. */
export function openStore(settings: StoreSettings): ObjectStore {
  const url = settings.storeUrl;
  if (url.startsWith('s3://')) {
    const { bucket, prefix } = parseS3Url(url);
    return new S3ObjectStore({
      bucket,
      prefix,
      ...(settings.s3Endpoint !== undefined ? { endpoint: settings.s3Endpoint } : {}),
      ...(settings.s3Region !== undefined ? { region: settings.s3Region } : {}),
    });
  }
  if (url.startsWith('file://')) return new LocalDirectoryStore(fileURLToPath(url));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    throw new ConfigError(`--store ${url}: unsupported scheme (use s3://bucket/prefix or a directory path)`);
  }
  return new LocalDirectoryStore(resolve(url));
}
