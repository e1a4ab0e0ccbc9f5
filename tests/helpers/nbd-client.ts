import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

/**
 * A minimal NBD client (fixed newstyle, NBD_OPT_GO, simple replies) that tells a test exactly which
 * request got which reply. The wire values are written out from the spec (NetworkBlockDevice/nbd
 * doc/proto.md) rather than imported from the server, so that a wrong constant there shows up here.
 */

const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1');
const IHAVEOPT = 0x49484156454f5054n;
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1 << 0;
const FLAG_NO_ZEROES = 1 << 1;
const OPT_STARTTLS = 5;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const REP_ERROR_BIT = 0x80000000;
const INFO_EXPORT = 0;
const CMD_READ = 0;
const CMD_WRITE = 1;
const CMD_DISC = 2;
const CMD_FLUSH = 3;
const CMD_TRIM = 4;
const CMD_FLAG_FUA = 1 << 0;
const REPLY_HEADER_SIZE = 16;

/** The server answered a request with a non-zero error. */
export class NbdReplyError extends Error {
  constructor(
    readonly errno: number,
    what: string,
  ) {
    super(`${what} failed with NBD error ${errno}`);
    this.name = new.target.name;
  }
}

/** The connection failed or closed; every request without a reply gets this. */
export class NbdConnectionError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

interface Pending {
  readonly what: string;
  /** Payload bytes that follow a successful reply: the length of a READ, else 0. */
  readonly readLength: number;
  readonly resolve: (data: Buffer) => void;
  readonly reject: (err: Error) => void;
}

/** STARTTLS credentials: a PSK identity and key, or a CA to trust with an optional client certificate. */
export type NbdClientTls =
  | { readonly psk: { readonly identity: string; readonly key: Buffer } }
  | { readonly ca: Buffer; readonly cert?: Buffer; readonly key?: Buffer; readonly servername?: string };

export interface NbdConnectOptions {
  readonly host: string;
  readonly port: number;
  readonly exportName: string;
  /** Source address to connect from (e.g. 127.0.0.3), to look like another peer. */
  readonly localAddress?: string;
  /** Upgrade with NBD_OPT_STARTTLS before choosing the export. */
  readonly tls?: NbdClientTls;
}

export class NbdClient {
  private socket: Socket;
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  /** Set during negotiation: wakes the reader waiting for more bytes. */
  private wake: (() => void) | undefined;
  private failure: Error | undefined;
  private exportSize = 0;
  readonly closed: Promise<void>;
  private readonly onData = (chunk: Buffer): void => {
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    if (this.wake !== undefined) this.wake();
    else this.takeReplies();
  };
  /** The TLS session after STARTTLS, for tests that look at the server's certificate. */
  tlsSocket: TLSSocket | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        resolve();
      }),
    );
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('error', (err) => {
      this.fail(new NbdConnectionError(`NBD connection failed: ${err.message}`, { cause: err }));
    });
    socket.on('close', () => {
      this.fail(new NbdConnectionError('NBD connection closed'));
    });
  }

  /** Export size in bytes, from NBD_INFO_EXPORT. */
  get size(): number {
    return this.exportSize;
  }

  static async connect(opts: NbdConnectOptions): Promise<NbdClient> {
    const socket = connect({
      host: opts.host,
      port: opts.port,
      ...(opts.localAddress === undefined ? {} : { localAddress: opts.localAddress }),
    });
    const client = new NbdClient(socket);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      await client.negotiate(opts.exportName, opts.tls);
    } catch (err) {
      client.socket.destroy();
      socket.destroy();
      throw err;
    }
    return client;
  }

  /** Sends NBD_OPT_STARTTLS, expects NBD_REP_ACK, and continues over TLS. */
  private async startTls(tls: NbdClientTls): Promise<void> {
    const option = Buffer.alloc(16);
    option.writeBigUInt64BE(IHAVEOPT, 0);
    option.writeUInt32BE(OPT_STARTTLS, 8);
    this.socket.write(option);
    const header = await this.readExact(20);
    const type = header.readUInt32BE(12);
    const message = (await this.readExact(header.readUInt32BE(16))).toString('utf8');
    if (type !== REP_ACK) throw new NbdConnectionError(`NBD_OPT_STARTTLS refused (reply 0x${type.toString(16)}: ${message})`);
    const raw = this.socket;
    raw.off('data', this.onData);
    const secure =
      'psk' in tls
        ? tlsConnect({
            socket: raw,
            pskCallback: () => ({ identity: tls.psk.identity, psk: tls.psk.key }),
            ciphers: 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256',
            checkServerIdentity: () => undefined,
          })
        : tlsConnect({ socket: raw, ca: tls.ca, cert: tls.cert, key: tls.key, servername: tls.servername ?? 'localhost' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    secure.on('data', this.onData);
    secure.on('error', (err: Error) => {
      this.fail(new NbdConnectionError(`NBD TLS connection failed: ${err.message}`, { cause: err }));
    });
    this.socket = secure;
    this.tlsSocket = secure;
  }

  private async negotiate(exportName: string, tls: NbdClientTls | undefined): Promise<void> {
    const greeting = await this.readExact(18);
    if (!greeting.subarray(0, 8).equals(NBDMAGIC) || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
      throw new NbdConnectionError('not a fixed-newstyle NBD server (bad greeting)');
    }
    const serverFlags = greeting.readUInt16BE(16);
    if ((serverFlags & FLAG_FIXED_NEWSTYLE) === 0) throw new NbdConnectionError('server lacks fixed newstyle negotiation');
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES));
    this.socket.write(clientFlags);
    if (tls !== undefined) await this.startTls(tls);
    const name = Buffer.from(exportName, 'utf8');
    // No information requests: the server sends NBD_INFO_EXPORT anyway.
    const option = Buffer.alloc(16 + 4 + name.length + 2);
    option.writeBigUInt64BE(IHAVEOPT, 0);
    option.writeUInt32BE(OPT_GO, 8);
    option.writeUInt32BE(4 + name.length + 2, 12);
    option.writeUInt32BE(name.length, 16);
    name.copy(option, 20);
    option.writeUInt16BE(0, 20 + name.length);
    this.socket.write(option);

    let gotExport = false;
    for (;;) {
      const header = await this.readExact(20);
      if (header.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new NbdConnectionError('bad option reply magic');
      const type = header.readUInt32BE(12);
      const data = await this.readExact(header.readUInt32BE(16));
      if (type >= REP_ERROR_BIT) {
        throw new NbdConnectionError(
          `NBD_OPT_GO for export "${exportName}" refused (reply 0x${type.toString(16)}: ${data.toString('utf8')})`,
        );
      }
      if (type === REP_INFO && data.length >= 12 && data.readUInt16BE(0) === INFO_EXPORT) {
        this.exportSize = Number(data.readBigUInt64BE(2));
        gotExport = true;
      } else if (type === REP_ACK) {
        if (!gotExport) throw new NbdConnectionError('NBD_OPT_GO acknowledged without NBD_INFO_EXPORT');
        break;
      }
    }
    this.wake = undefined;
    this.takeReplies();
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.request(CMD_READ, 0, offset, length, undefined);
  }

  async write(offset: number, data: Buffer, opts: { fua?: boolean } = {}): Promise<void> {
    await this.request(CMD_WRITE, opts.fua === true ? CMD_FLAG_FUA : 0, offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.request(CMD_FLUSH, 0, 0, 0, undefined);
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.request(CMD_TRIM, 0, offset, length, undefined);
  }

  /** NBD_CMD_DISC: the server answers what is in flight, then closes. */
  async disconnect(): Promise<void> {
    if (this.failure === undefined) this.socket.end(requestHeader(CMD_DISC, 0, this.nextCookie++, 0, 0));
    await this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Stops reading from the socket, like a client that sends requests and never takes the replies. */
  stopReading(): void {
    this.socket.pause();
  }

  private request(type: number, flags: number, offset: number, length: number, payload: Buffer | undefined): Promise<Buffer> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const cookie = this.nextCookie++;
    const what = `${['READ', 'WRITE', 'DISC', 'FLUSH'][type] ?? type} ${offset}+${length}`;
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(cookie, { what, readLength: type === CMD_READ ? length : 0, resolve, reject });
      const header = requestHeader(type, flags, cookie, offset, length);
      if (payload === undefined) {
        this.socket.write(header);
      } else {
        this.socket.cork();
        this.socket.write(header);
        this.socket.write(payload);
        this.socket.uncork();
      }
    });
  }

  /** Answers every request whose reply (and data) has fully arrived. */
  private takeReplies(): void {
    while (this.bufferedBytes >= REPLY_HEADER_SIZE) {
      const header = this.peek(REPLY_HEADER_SIZE);
      if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
        this.protocolFailure(`bad reply magic 0x${header.readUInt32BE(0).toString(16)}`);
        return;
      }
      const errno = header.readUInt32BE(4);
      const cookie = header.readBigUInt64BE(8);
      const p = this.pending.get(cookie);
      if (p === undefined) {
        this.protocolFailure(`reply for unknown cookie ${cookie}`);
        return;
      }
      // A simple reply carries data only for a successful READ.
      const dataLength = errno === 0 ? p.readLength : 0;
      if (this.bufferedBytes < REPLY_HEADER_SIZE + dataLength) return;
      this.consume(REPLY_HEADER_SIZE);
      const data = this.consume(dataLength);
      this.pending.delete(cookie);
      if (errno === 0) p.resolve(data);
      else p.reject(new NbdReplyError(errno, p.what));
    }
  }

  private protocolFailure(why: string): void {
    this.fail(new NbdConnectionError(`NBD protocol error: ${why}`));
    this.socket.destroy();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.wake?.();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(this.failure);
  }

  private async readExact(n: number): Promise<Buffer> {
    while (this.bufferedBytes < n) {
      if (this.failure !== undefined) throw this.failure;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
    return this.consume(n);
  }

  private peek(n: number): Buffer {
    const first = this.buffered[0]!;
    if (first.length >= n) return first.subarray(0, n);
    this.buffered = [Buffer.concat(this.buffered)];
    return this.buffered[0]!.subarray(0, n);
  }

  private consume(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const all = this.buffered.length === 1 ? this.buffered[0]! : Buffer.concat(this.buffered);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.buffered = rest.length > 0 ? [rest] : [];
    this.bufferedBytes -= n;
    return out;
  }
}

function requestHeader(type: number, flags: number, cookie: bigint, offset: number, length: number): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(REQUEST_MAGIC, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(cookie, 8);
  header.writeBigUInt64BE(BigInt(offset), 16);
  header.writeUInt32BE(length, 24);
  return header;
}
