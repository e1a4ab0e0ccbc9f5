import { Readable } from 'node:stream';

import {
  DeleteObjectCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  type PutObjectCommandInput,
  type PutObjectCommandOutput,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import type { BuildMiddleware } from '@smithy/types';

import { crc32c } from '@node-rs/crc32';

import { InvalidArgumentError } from '../../shared/errors.js';
import { viewOrNew } from '../util/buffer-pool.js';
import { failFastHttpHandler } from '../util/fail-fast-http.js';
import { type RequestLane, RequestSlots } from './request-slots.js';
import {
  type ObjectInfo,
  type ObjectStore,
  PreconditionFailedError,
  type StoreCallOptions,
  type StorePutOptions,
  StoreError,
  type StoreReadOptions,
  type VersionedObject,
} from './object-store.js';

export interface S3StoreOptions {
  bucket: string;
  /** Prepended to every key; normalised to '' or a string ending in '/'. */
  prefix: string;
  /** For S3-compatible servers (Ceph RADOS Gateway, MinIO ...); unset means AWS. */
  endpoint?: string;
  region?: string;
  /** Defaults to true when `endpoint` is set: S3-compatible servers rarely do virtual hosts. */
  forcePathStyle?: boolean;
  /** SDK attempts per request, including the first. */
  maxAttempts?: number;
  /** Limit on waiting for the response headers, and on any silence while the body streams. */
  requestTimeoutMs?: number;
  connectTimeoutMs?: number;
  maxSockets?: number;
  /** Keys per ListObjectsV2 page (S3 caps it at 1000); small values let tests reach page 2. */
  listPageSize?: number;
  /** Unset: the AWS credential chain (environment, shared config, container or instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

// Retries are kept short because the hang engine above decides whether to hold or fail I/O
// during an outage; SDK back-off would only hide the outage from it.
const DEFAULT_MAX_ATTEMPTS = 2;
const DEFAULT_REQUEST_TIMEOUT_MS = 5000;
const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
const DEFAULT_MAX_SOCKETS = 64;
/** Sockets only head requests (and the health probe) may use: a renewal never waits for a burst of GETs to end. */
const CONTROL_SOCKETS = 4;

/** Volumes stored as objects in an S3 bucket under a key prefix. */
export class S3ObjectStore implements ObjectStore {
  readonly location: string;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly listPageSize: number | undefined;
  private readonly client: S3Client;
  /**
   * For conditional writes: one attempt, no SDK retry. A conditional PUT that failed with a 5xx may
   * or may not have been applied (RGW answers most losers of a race with 500); retried, it would
   * meet its own write and report 412, "someone else changed it", which is not known. The caller
   * gets the StoreError instead, re-reads the object and decides.
   */
  private readonly conditionalClient: S3Client;
  private readonly slots: RequestSlots;

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.prefix = normalisePrefix(options.prefix);
    this.listPageSize = options.listPageSize;
    this.location = `s3://${this.bucket}/${this.prefix}`;

    const config: S3ClientConfig = {
      endpoint: options.endpoint,
      credentials: options.credentials,
      // SigV4 needs some region even when an S3-compatible server ignores it.
      region: options.region ?? (options.endpoint === undefined ? undefined : 'us-east-1'),
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      maxAttempts: options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      // The newer defaults (flexible checksums, aws-chunked uploads) are not understood by
      // several S3-compatible servers: s3rver, and Ceph 16's RADOS Gateway, which answers a
      // streamed body sent with them 411 Length Required.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: failFastHttpHandler({
        connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
        requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
        maxSockets: options.maxSockets ?? DEFAULT_MAX_SOCKETS,
      }),
    };
    this.slots = new RequestSlots(options.maxSockets ?? DEFAULT_MAX_SOCKETS, CONTROL_SOCKETS);
    this.client = new S3Client(config);
    this.conditionalClient = new S3Client({ ...config, maxAttempts: 1 });
  }

  async get(key: string, opts?: StoreReadOptions): Promise<Buffer | undefined> {
    return (await this.fetch('get', key, undefined, opts, 'data'))?.body;
  }

  async getRange(key: string, offset: number, length: number, opts?: StoreReadOptions): Promise<Buffer | undefined> {
    if (length === 0) return Buffer.alloc(0);
    return (await this.fetch('get-range', key, `bytes=${offset}-${offset + length - 1}`, opts, 'data'))?.body;
  }

  async getVersioned(key: string, opts?: StoreCallOptions): Promise<VersionedObject | undefined> {
    // Versioned reads are the head's (takeover, renewal, commit retries): the control lane.
    const got = await this.fetch('get', key, undefined, opts, 'control');
    if (got === undefined) return undefined;
    if (got.etag === undefined)
      throw new StoreError('get', key, { cause: new Error('the response carries no ETag; conditional writes need one') });
    return { body: got.body, etag: got.etag };
  }

  /** One GetObject, its body as one Buffer; undefined for NoSuchKey. */
  private async fetch(
    operation: 'get' | 'get-range',
    key: string,
    range: string | undefined,
    opts: StoreReadOptions | undefined,
    lane: RequestLane,
  ): Promise<{ body: Buffer; etag: string | undefined } | undefined> {
    try {
      // The slot is held until the body is read: the socket is busy until then.
      return await this.slots.run(
        lane,
        async () => {
          const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Range: range }), {
            abortSignal: opts?.signal,
          });
          const etag = out.ETag === undefined ? undefined : unquote(out.ETag);
          if (out.Body === undefined) return { body: Buffer.alloc(0), etag };
          return { body: await readBody(out.Body, out.ContentLength, opts?.into), etag };
        },
        opts?.signal,
      );
    } catch (err) {
      if (isNoSuchKey(err)) return undefined;
      throw new StoreError(operation, key, { cause: err });
    }
  }

  async put(key: string, body: Buffer, opts?: StorePutOptions): Promise<void> {
    await this.send('put', key, body, {}, opts);
  }

  putIfAbsent(key: string, body: Buffer, opts?: StoreCallOptions): Promise<string> {
    return this.send('put-if-absent', key, body, { IfNoneMatch: '*' }, opts);
  }

  /**
   * The tag is sent without the quotes S3 puts around it: AWS takes either form, and Ceph's RADOS
   * Gateway matches only the bare one.
   */
  putIfMatch(key: string, body: Buffer, etag: string, opts?: StoreCallOptions): Promise<string> {
    return this.send('put-if-match', key, body, { IfMatch: unquote(etag) }, opts);
  }

  private async send(
    operation: 'put' | 'put-if-absent' | 'put-if-match',
    key: string,
    body: Buffer,
    condition: Pick<PutObjectCommandInput, 'IfMatch' | 'IfNoneMatch'>,
    opts: StorePutOptions | undefined,
  ): Promise<string> {
    try {
      const command = new PutObjectCommand({
        Bucket: this.bucket,
        Key: this.prefix + key,
        Body: body,
        ContentLength: body.byteLength,
        ContentType: 'application/octet-stream',
        ChecksumCRC32C: base64Crc(opts?.crc32c ?? crc32c(body)),
        ...condition,
      });
      command.middlewareStack.add(unsignedPayload, { step: 'build', name: 'holdfastUnsignedPayload' });
      const client = operation === 'put' ? this.client : this.conditionalClient;
      const out = await this.slots.run(
        operation === 'put' ? 'data' : 'control',
        () => client.send(command, { abortSignal: opts?.signal }),
        opts?.signal,
      );
      return out.ETag === undefined ? '' : unquote(out.ETag);
    } catch (err) {
      if (operation !== 'put' && isPreconditionFailure(err)) throw new PreconditionFailedError(key, { cause: err });
      // AWS answers an If-Match on a key that is gone (a deleted volume's head) with 404: the condition failed.
      if (operation === 'put-if-match' && (isNoSuchKey(err) || httpStatus(err) === 404))
        throw new PreconditionFailedError(key, { cause: err });
      throw new StoreError(operation, key, { cause: err });
    }
  }

  async delete(key: string, opts?: StoreCallOptions): Promise<void> {
    try {
      const command = new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key });
      await this.slots.run('data', () => this.client.send(command, { abortSignal: opts?.signal }), opts?.signal);
    } catch (err) {
      if (isNoSuchKey(err)) return;
      throw new StoreError('delete', key, { cause: err });
    }
  }

  async *list(prefix: string, opts?: StoreCallOptions): AsyncIterable<string> {
    for await (const info of this.listDetailed(prefix, opts)) yield info.key;
  }

  async *listDetailed(prefix: string, opts?: StoreCallOptions): AsyncIterable<ObjectInfo> {
    let continuationToken: string | undefined;
    do {
      let page;
      try {
        const command = new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: this.prefix + prefix,
          ContinuationToken: continuationToken,
          MaxKeys: this.listPageSize,
        });
        page = await this.slots.run('data', () => this.client.send(command, { abortSignal: opts?.signal }), opts?.signal);
      } catch (err) {
        throw new StoreError('list', prefix, { cause: err });
      }
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        yield { key: object.Key.slice(this.prefix.length), size: object.Size ?? 0, lastModified: object.LastModified ?? new Date(0) };
      }
      continuationToken = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (continuationToken !== undefined);
  }

  async *listFolders(prefix: string, opts?: StoreCallOptions): AsyncIterable<string> {
    const full = this.prefix + prefix;
    let continuationToken: string | undefined;
    do {
      let page;
      try {
        const command = new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: full,
          Delimiter: '/',
          ContinuationToken: continuationToken,
          MaxKeys: this.listPageSize,
        });
        page = await this.slots.run('data', () => this.client.send(command, { abortSignal: opts?.signal }), opts?.signal);
      } catch (err) {
        throw new StoreError('list', prefix, { cause: err });
      }
      for (const p of page.CommonPrefixes ?? []) {
        if (p.Prefix !== undefined && p.Prefix.length > full.length + 1) yield p.Prefix.slice(full.length, -1);
      }
      continuationToken = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (continuationToken !== undefined);
  }

  async probe(opts?: StoreCallOptions): Promise<void> {
    // A one-key listing of our own prefix rather than HeadBucket: it also proves we may read
    // the prefix, which is what the volumes need.
    try {
      // The control lane: a probe that waited behind a burst of data requests would report the store down.
      const command = new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 });
      await this.slots.run('control', () => this.client.send(command, { abortSignal: opts?.signal }), opts?.signal);
    } catch (err) {
      throw new StoreError('probe', this.prefix, { cause: err });
    }
  }

  close(): Promise<void> {
    // They share one request handler; destroying it a second time does nothing.
    this.client.destroy();
    this.conditionalClient.destroy();
    return Promise.resolve();
  }
}

/** Splits `s3://bucket/some/prefix` into its bucket and normalised prefix (`some/prefix/`). */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  const bucket = match?.[1];
  if (match === null || bucket === undefined || !BUCKET_NAME.test(bucket)) {
    throw new InvalidArgumentError(`${JSON.stringify(url)} is not an S3 location of the form s3://bucket/prefix`);
  }
  return { bucket, prefix: normalisePrefix(match[2] ?? '') };
}

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function normalisePrefix(prefix: string): string {
  if (prefix === '') return '';
  if (prefix.startsWith('/') || prefix.includes('//')) {
    throw new InvalidArgumentError(`S3 key prefix ${JSON.stringify(prefix)} has an empty segment`);
  }
  return prefix.endsWith('/') ? prefix : `${prefix}/`;
}

/**
 * Only NoSuchKey means "no object": a bare 404 can also be NoSuchBucket or a proxy's error page,
 * and reading that as a missing extent would hand the guest zeros instead of an error.
 */
function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function isNoSuchKey(err: unknown): boolean {
  return err instanceof Error && err.name === 'NoSuchKey';
}

/**
 * 412 is the answer to a lost condition; AWS answers 409 ConditionalRequestConflict when two
 * conditional writes of one key race. Anything else (RGW answers most losers of an If-Match race
 * with 500 InternalError) is an ordinary failure whose outcome is unknown: the caller must read the
 * object again.
 */
function isPreconditionFailure(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const status = httpStatus(err);
  return err.name === 'PreconditionFailed' || err.name === 'ConditionalRequestConflict' || status === 412 || status === 409;
}

function unquote(etag: string): string {
  return etag.length >= 2 && etag.startsWith('"') && etag.endsWith('"') ? etag.slice(1, -1) : etag;
}

/**
 * Reads a response body into one Buffer of the announced length as it streams in. The SDK's own
 * collector keeps every chunk and then concatenates them, which holds each extent twice at its peak
 * and leaves twice the garbage; a gateway that reads extents all day would carry that in its RSS.
 */
async function readBody(
  body: NonNullable<GetObjectCommandOutput['Body']>,
  contentLength: number | undefined,
  into: Buffer | undefined,
): Promise<Buffer> {
  if (!(body instanceof Readable) || contentLength === undefined) {
    const bytes = await body.transformToByteArray();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  const buf = viewOrNew(into, contentLength);
  let at = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (at + chunk.length > contentLength) throw new Error(`response body is longer than its Content-Length ${contentLength}`);
    chunk.copy(buf, at);
    at += chunk.length;
  }
  if (at !== contentLength) throw new Error(`response body ended after ${at} of ${contentLength} bytes`);
  return buf;
}

/**
 * The body's integrity is carried by its CRC32C (x-amz-checksum-crc32c, which AWS verifies and
 * keeps with the object; Ceph 16's RADOS Gateway accepts it without checking) instead of the SigV4
 * payload hash: SHA-256 over every 4 MiB extent was the largest CPU cost of an upload, CRC32C is
 * computed in native code at memory speed.
 */
function base64Crc(crc: number): string {
  const sum = Buffer.allocUnsafe(4);
  sum.writeUInt32BE(crc);
  return sum.toString('base64');
}

/** Build-step middleware: the signer takes a present x-amz-content-sha256 as it is. */
const unsignedPayload: BuildMiddleware<PutObjectCommandInput, PutObjectCommandOutput> = (next) => (args) => {
  const request = args.request as { headers?: Record<string, string> };
  if (request.headers !== undefined) request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
  return next(args);
};
