import { startRgwServer } from './rgw-server.js';
import { startS3rver } from './s3rver-server.js';

/**
 * An S3 server a test starts, owns and breaks: Ceph's RADOS Gateway (`rgw`, a production S3
 * implementation, the default) or s3rver (a mock, kept only where RGW cannot play the part). Both
 * offer the same controls, applied to the process that answers S3 requests, so that a test can
 * crash it, freeze it and bring it back with its data to simulate a storage outage.
 */
export interface S3Server {
  readonly kind: S3ServerKind;
  /** `http://127.0.0.1:PORT`, for S3StoreOptions.endpoint and `--s3-endpoint`. */
  readonly endpoint: string;
  readonly port: number;
  /** A bucket that exists and belongs to `credentials`. */
  readonly bucket: string;
  readonly region: string;
  readonly credentials: S3Credentials;
  /** AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION, for a child process's environment. */
  readonly env: Readonly<Record<string, string>>;
  /** Of the process that answers S3 requests; changes on restart. */
  readonly pid: number;
  /** SIGKILL, like a crash: nothing is flushed or closed. Resolves once the process has exited. */
  kill(): Promise<void>;
  /** SIGSTOP: connections are accepted by the kernel but never answered. */
  freeze(): void;
  thaw(): void;
  /** Starts the server again on the same port with the same objects (killing it first if it runs). */
  restart(): Promise<void>;
  /** Stops every process the server started and removes its data directory. */
  close(): Promise<void>;
}

export type S3ServerKind = 'rgw' | 's3rver';
export const S3_SERVER_KINDS: readonly S3ServerKind[] = ['rgw', 's3rver'];
/** For people: reports and descriptions. */
export const S3_SERVER_NAMES: Readonly<Record<S3ServerKind, string>> = { rgw: 'Ceph RADOS Gateway', s3rver: 's3rver' };

export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export interface S3ServerOptions {
  /** `rgw` unless a test needs what only the mock does. */
  readonly kind?: S3ServerKind;
  /** Where the server keeps its data (created if missing, removed by close); a temp directory by default. */
  readonly dir?: string;
  readonly bucket?: string;
  /**
   * RGW only: the OSD keeps its objects in a BlueStore file under `dir` instead of in its memory
   * (memstore). Slower to start, and memory stays bounded however much is written: for the bench's
   * long runs, which write more than the machine has RAM.
   */
  readonly onDisk?: boolean;
}

export function startS3Server(opts: S3ServerOptions = {}): Promise<S3Server> {
  return (opts.kind ?? 'rgw') === 'rgw' ? startRgwServer(opts) : startS3rver(opts);
}

/** The environment the AWS SDK in a child process needs to reach `server`. */
export function credentialsEnv(credentials: S3Credentials, region: string): Record<string, string> {
  return { AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey, AWS_REGION: region };
}
