import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import {
  ClientFlag,
  Cmd,
  CmdFlag,
  Errno,
  IHAVEOPT,
  Info,
  MAX_BLOCK_SIZE,
  Opt,
  REP_MAGIC,
  Rep,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  TransmissionFlag,
} from '../../gateway/nbd/constants.js';
import { NbdServer, type NbdServerOptions } from '../../gateway/nbd/server.js';
import { InvalidArgumentError, ReadOnlyError } from '../../shared/errors.js';
import { MemoryExport, MemoryRegistry } from '../helpers/memory-export.js';
import { listenOnLoopback } from '../helpers/nbd-listen.js';
import { encodeOption, infoRequest } from '../helpers/nbd-options.js';
import { waitFor } from '../helpers/wait-for.js';

const MiB = 1024 * 1024;
const ALL_CLIENT_FLAGS = ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES;

interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

interface SimpleReply {
  readonly handle: bigint;
  readonly error: number;
  readonly data: Buffer | undefined;
}

interface RequestSpec {
  readonly type: number;
  readonly flags?: number;
  readonly offset?: number;
  readonly length?: number;
  readonly payload?: Buffer;
  readonly magic?: number;
}

/** A client that speaks NBD byte by byte, so that tests can break every rule on purpose. */
class RawClient {
  readonly closed: Promise<void>;
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { size: number; resolve: () => void; reject: (error: Error) => void } | undefined;
  private ended = false;
  private isClosed = false;
  private nextHandle = 1n;
  private readonly readLengths = new Map<bigint, number>();
  size = 0;
  transmissionFlags = 0;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.settle();
    });
    socket.on('end', () => {
      this.ended = true;
      this.settle();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.ended = true;
        this.settle();
        resolve();
      }),
    );
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port }, () => {
        socket.off('error', reject);
        socket.setNoDelay(true);
        resolve(new RawClient(socket));
      });
      socket.once('error', reject);
    });
  }

  /** Connects, negotiates with NBD_OPT_GO and enters transmission. */
  static async open(port: number, name: string): Promise<RawClient> {
    const client = await RawClient.connect(port);
    await client.greet();
    const replies = await client.go(name);
    assert.equal(replies.at(-1)?.type, Rep.ACK, `GO ${name} failed`);
    return client;
  }

  get closedYet(): boolean {
    return this.isClosed;
  }

  write(data: Buffer): boolean {
    return this.socket.write(data);
  }

  /** Writes `total` bytes of `piece` repeated, waiting for 'drain' like a well-behaved sender. */
  async stream(piece: Buffer, total: number): Promise<void> {
    let left = total;
    while (left > 0) {
      const n = Math.min(left, piece.length);
      left -= n;
      if (!this.socket.write(n === piece.length ? piece : piece.subarray(0, n))) {
        await new Promise<void>((resolve) => this.socket.once('drain', resolve));
      }
    }
  }

  async read(size: number): Promise<Buffer> {
    if (this.buffered < size) {
      await new Promise<void>((resolve, reject) => {
        this.waiter = { size, resolve, reject };
        this.settle();
      });
    }
    const out = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const chunk = this.chunks[0] as Buffer;
      const n = Math.min(size - filled, chunk.length);
      chunk.copy(out, filled, 0, n);
      filled += n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    this.buffered -= size;
    return out;
  }

  /** Everything the server sends until it closes the connection. */
  async readUntilClosed(): Promise<Buffer> {
    await this.closed;
    return this.read(this.buffered);
  }

  async greet(clientFlags: number = ALL_CLIENT_FLAGS): Promise<void> {
    const greeting = await this.read(18);
    assert.equal(greeting.subarray(0, 8).toString('latin1'), 'NBDMAGIC');
    assert.equal(greeting.readBigUInt64BE(8), IHAVEOPT);
    assert.equal(greeting.readUInt16BE(16), 3, 'server handshake flags: FIXED_NEWSTYLE | NO_ZEROES');
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags);
    this.write(flags);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0), declaredLength = data.length, magic = IHAVEOPT): void {
    this.write(encodeOption(option, data, declaredLength, magic));
  }

  async optionReply(): Promise<OptionReply> {
    const header = await this.read(20);
    assert.equal(header.readBigUInt64BE(0), REP_MAGIC);
    const length = header.readUInt32BE(16);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.read(length) };
  }

  /** Replies to the last option up to and including its final one (ACK or an error). */
  async optionReplies(): Promise<OptionReply[]> {
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.optionReply();
      replies.push(reply);
      if (reply.type === Rep.ACK || reply.type >= 0x80000000) return replies;
    }
  }

  async go(name: string, infos: readonly number[] = [], option: number = Opt.GO): Promise<OptionReply[]> {
    this.sendOption(option, infoRequest(name, infos));
    const replies = await this.optionReplies();
    for (const reply of replies) {
      if (reply.type === Rep.INFO && reply.data.readUInt16BE(0) === Info.EXPORT) {
        this.size = Number(reply.data.readBigUInt64BE(2));
        this.transmissionFlags = reply.data.readUInt16BE(10);
      }
    }
    return replies;
  }

  send(spec: RequestSpec): bigint {
    const handle = this.nextHandle++;
    const payload = spec.payload ?? Buffer.alloc(0);
    const length = spec.length ?? payload.length;
    const header = Buffer.alloc(28);
    header.writeUInt32BE(spec.magic ?? REQUEST_MAGIC, 0);
    header.writeUInt16BE(spec.flags ?? 0, 4);
    header.writeUInt16BE(spec.type, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(spec.offset ?? 0), 16);
    header.writeUInt32BE(length, 24);
    if (spec.type === Cmd.READ) this.readLengths.set(handle, length);
    this.write(payload.length > 0 ? Buffer.concat([header, payload]) : header);
    return handle;
  }

  async reply(): Promise<SimpleReply> {
    const header = await this.read(16);
    assert.equal(header.readUInt32BE(0), SIMPLE_REPLY_MAGIC);
    const error = header.readUInt32BE(4);
    const handle = header.readBigUInt64BE(8);
    const readLength = this.readLengths.get(handle);
    this.readLengths.delete(handle);
    const data = readLength !== undefined && error === 0 ? await this.read(readLength) : undefined;
    return { handle, error, data };
  }

  async request(spec: RequestSpec): Promise<SimpleReply> {
    const handle = this.send(spec);
    const reply = await this.reply();
    assert.equal(reply.handle, handle);
    return reply;
  }

  async readAt(offset: number, length: number): Promise<Buffer> {
    const reply = await this.request({ type: Cmd.READ, offset, length });
    assert.equal(reply.error, 0, `read at ${offset} failed with ${reply.error}`);
    assert.ok(reply.data !== undefined);
    return reply.data;
  }

  async writeAt(offset: number, data: Buffer): Promise<void> {
    const reply = await this.request({ type: Cmd.WRITE, offset, payload: data });
    assert.equal(reply.error, 0, `write at ${offset} failed with ${reply.error}`);
  }

  async disconnect(): Promise<void> {
    this.send({ type: Cmd.DISC });
    await this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private settle(): void {
    const waiter = this.waiter;
    if (waiter === undefined) return;
    if (this.buffered >= waiter.size) {
      this.waiter = undefined;
      waiter.resolve();
    } else if (this.ended) {
      this.waiter = undefined;
      waiter.reject(new Error(`connection closed with ${this.buffered} of ${waiter.size} bytes`));
    }
  }
}

/** A second client writing and verifying data in a loop, proving that bad input elsewhere leaves it alone. */
class BackgroundIo {
  iterations = 0;
  readonly failures: unknown[] = [];
  private stopping = false;
  private loop: Promise<void> = Promise.resolve();
  private client: RawClient | undefined;

  async start(port: number, name: string): Promise<void> {
    const client = await RawClient.open(port, name);
    this.client = client;
    this.loop = this.run(client);
  }

  /** Resolves after `count` more verified round trips. */
  async advance(count: number): Promise<void> {
    const target = this.iterations + count;
    await waitFor(() => this.iterations >= target || this.failures.length > 0, `background I/O to reach ${target}`);
    assert.deepEqual(this.failures, []);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
    await this.client?.disconnect();
  }

  private async run(client: RawClient): Promise<void> {
    while (!this.stopping) {
      try {
        const offset = (this.iterations % 200) * 4096 + (this.iterations % 7);
        const data = randomBytes(4096);
        await client.writeAt(offset, data);
        assert.deepEqual(await client.readAt(offset, 4096), data);
        this.iterations++;
        // Leaves the event loop to the test and the server between round trips.
        await delay(1);
      } catch (err) {
        this.failures.push(err);
        return;
      }
    }
  }
}

function logger(): NbdServerOptions['logger'] {
  return pino({ level: process.env.NBD_TEST_LOG ?? 'silent' });
}

describe('NBD server facing malformed and hostile clients', () => {
  const registry = new MemoryRegistry(
    [
      new MemoryExport({ name: 'disk', size: 64 * MiB }),
      new MemoryExport({ name: 'background', size: MiB }),
      new MemoryExport({ name: 'ro', size: MiB, readOnly: true }),
      new MemoryExport({ name: 'held', size: MiB }),
      new MemoryExport({ name: 'faulty', size: MiB }),
    ],
    'disk',
  );
  const server = new NbdServer({ registry, logger: logger() });
  const background = new BackgroundIo();
  let port = 0;

  before(async () => {
    port = await listenOnLoopback(server);
    await background.start(port, 'background');
  });

  after(async () => {
    await background.stop();
    await server.close(5000);
  });

  describe('transmission phase', () => {
    it('answers a READ past the end with EINVAL and keeps serving', async () => {
      const client = await RawClient.open(port, 'disk');
      registry.get('disk').disk.fill(0x31, 0, 4096);
      const refused = await client.request({ type: Cmd.READ, offset: 64 * MiB - 512, length: 1024 });
      assert.equal(refused.error, Errno.EINVAL);
      assert.equal(refused.data, undefined);
      const beyond = await client.request({ type: Cmd.READ, offset: 2 ** 60, length: 1 });
      assert.equal(beyond.error, Errno.EINVAL);
      assert.deepEqual(await client.readAt(0, 4096), Buffer.alloc(4096, 0x31));
      await background.advance(2);
      await client.disconnect();
    });

    it('answers a WRITE past the end with ENOSPC, consuming its payload', async () => {
      const client = await RawClient.open(port, 'disk');
      const exp = registry.get('disk');
      const writesBefore = exp.operations.filter((op) => op.kind === 'write').length;
      const refused = await client.request({ type: Cmd.WRITE, offset: 64 * MiB - 100, payload: Buffer.alloc(200, 0x44) });
      assert.equal(refused.error, Errno.ENOSPC);
      const zeroes = await client.request({ type: Cmd.WRITE_ZEROES, offset: 64 * MiB, length: 1 });
      assert.equal(zeroes.error, Errno.ENOSPC);
      assert.equal(exp.operations.filter((op) => op.kind === 'write').length, writesBefore);
      // The 200 payload bytes were read as payload, not as the next header.
      await client.writeAt(8192, Buffer.alloc(300, 0x45));
      assert.deepEqual(await client.readAt(8192, 300), Buffer.alloc(300, 0x45));
      await background.advance(2);
      await client.disconnect();
    });

    it('answers unknown or misplaced command flags with EINVAL and keeps serving', async () => {
      const client = await RawClient.open(port, 'disk');
      const cases: RequestSpec[] = [
        { type: Cmd.READ, flags: 1 << 5, offset: 0, length: 512 },
        { type: Cmd.READ, flags: CmdFlag.NO_HOLE, offset: 0, length: 512 },
        { type: Cmd.READ, flags: CmdFlag.DF, offset: 0, length: 512 },
        { type: Cmd.WRITE, flags: CmdFlag.FAST_ZERO, offset: 0, payload: Buffer.alloc(512, 0x66) },
        { type: Cmd.TRIM, flags: CmdFlag.NO_HOLE, offset: 0, length: 512 },
        { type: Cmd.FLUSH, flags: 0, offset: 4096, length: 0 },
      ];
      for (const spec of cases) {
        const reply = await client.request(spec);
        assert.equal(reply.error, Errno.EINVAL, `flags 0x${(spec.flags ?? 0).toString(16)} on command ${spec.type}`);
      }
      // FUA is valid on every command once SEND_FUA is advertised.
      assert.equal((await client.request({ type: Cmd.READ, flags: CmdFlag.FUA, offset: 0, length: 16 })).error, 0);
      assert.equal((await client.request({ type: Cmd.FLUSH, flags: CmdFlag.FUA })).error, 0);
      assert.ok(!registry.get('disk').disk.subarray(0, 512).includes(0x66), 'refused WRITE must not reach the disk');
      await background.advance(2);
      await client.disconnect();
    });

    it('answers unknown commands, and BLOCK_STATUS without a metadata context, with EINVAL', async () => {
      const client = await RawClient.open(port, 'disk');
      const before = server.stats.requests.other;
      for (const type of [Cmd.RESIZE, 99, 0xffff]) {
        const reply = await client.request({ type, offset: 0, length: 512 });
        assert.equal(reply.error, Errno.EINVAL, `command ${type}`);
      }
      assert.equal(server.stats.requests.other, before + 3);
      assert.equal((await client.request({ type: Cmd.BLOCK_STATUS, offset: 0, length: 512 })).error, Errno.EINVAL);
      await client.readAt(0, 512);
      await client.disconnect();
    });

    it('passes NBD_CMD_CACHE to the export as a prefetch, refusing it past the end or beyond the block size', async () => {
      const client = await RawClient.open(port, 'disk');
      assert.notEqual(client.transmissionFlags & TransmissionFlag.SEND_CACHE, 0, 'SEND_CACHE advertised');
      const exp = registry.get('disk');
      const before = exp.operations.length;
      assert.equal((await client.request({ type: Cmd.CACHE, offset: MiB, length: 2 * MiB })).error, Errno.OK);
      assert.equal((await client.request({ type: Cmd.CACHE, offset: 64 * MiB - 512, length: 1024 })).error, Errno.EINVAL);
      assert.equal((await client.request({ type: Cmd.CACHE, offset: 0, length: MAX_BLOCK_SIZE + 1 })).error, Errno.EINVAL);
      assert.equal((await client.request({ type: Cmd.CACHE, flags: CmdFlag.NO_HOLE, offset: 0, length: 512 })).error, Errno.EINVAL);
      assert.deepEqual(
        exp.operations.slice(before).map((op) => [op.kind, op.offset, op.length]),
        [['prefetch', MiB, 2 * MiB]],
      );
      await client.disconnect();
    });

    it('answers writes to a read-only export with EPERM and serves reads', async () => {
      const ro = registry.get('ro');
      ro.disk.fill(0x99);
      const client = await RawClient.open(port, 'ro');
      assert.notEqual(client.transmissionFlags & TransmissionFlag.READ_ONLY, 0);
      for (const spec of [
        { type: Cmd.WRITE, offset: 0, payload: Buffer.alloc(4096, 1) },
        { type: Cmd.TRIM, offset: 0, length: 4096 },
        { type: Cmd.WRITE_ZEROES, offset: 0, length: 4096 },
      ]) {
        assert.equal((await client.request(spec)).error, Errno.EPERM, `command ${spec.type}`);
      }
      assert.equal((await client.request({ type: Cmd.FLUSH })).error, 0);
      assert.deepEqual(await client.readAt(0, 4096), Buffer.alloc(4096, 0x99));
      assert.ok(ro.disk.every((byte) => byte === 0x99));
      await background.advance(2);
      await client.disconnect();
    });

    it('refuses a 33 MiB WRITE without buffering its payload and stays usable', async () => {
      const client = await RawClient.open(port, 'disk');
      const exp = registry.get('disk');
      exp.disk.fill(0, 0, 34 * MiB);
      const assembledBefore = server.stats.payloadBytesAssembled;
      const skippedBefore = server.stats.payloadBytesSkipped;
      const length = 33 * MiB;
      const handle = client.send({ type: Cmd.WRITE, offset: 0, length });
      const replyPromise = client.reply();
      await client.stream(Buffer.alloc(MiB, 0xc3), length);
      const reply = await replyPromise;
      assert.equal(reply.handle, handle);
      assert.equal(reply.error, Errno.EINVAL);
      assert.equal(server.stats.payloadBytesSkipped - skippedBefore, length);
      // Other connections' small writes may be assembled meanwhile, but nothing near 33 MiB.
      assert.ok(server.stats.payloadBytesAssembled - assembledBefore < MiB);
      assert.ok(!exp.disk.subarray(0, 34 * MiB).includes(0xc3));
      assert.deepEqual(await client.readAt(0, 16), Buffer.alloc(16));
      await background.advance(2);
      await client.disconnect();
    });

    it('serves a READ of exactly the maximum block size and refuses one byte more', async () => {
      const client = await RawClient.open(port, 'disk');
      registry.get('disk').disk.fill(0x17, 0, MAX_BLOCK_SIZE);
      const data = await client.readAt(0, MAX_BLOCK_SIZE);
      assert.equal(data.length, MAX_BLOCK_SIZE);
      assert.ok(data.every((byte) => byte === 0x17));
      assert.equal((await client.request({ type: Cmd.READ, offset: 0, length: MAX_BLOCK_SIZE + 1 })).error, Errno.EINVAL);
      await client.readAt(0, 1);
      await client.disconnect();
    });

    it('answers zero-length requests without involving the export', async () => {
      const client = await RawClient.open(port, 'disk');
      const exp = registry.get('disk');
      const before = exp.operations.length;
      for (const type of [Cmd.READ, Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES]) {
        const reply = await client.request({ type, offset: 4096, length: 0 });
        assert.equal(reply.error, 0, `command ${type}`);
        if (type === Cmd.READ) assert.equal(reply.data?.length, 0);
      }
      assert.equal(exp.operations.length, before);
      await client.readAt(0, 1);
      await client.disconnect();
    });

    it('passes FUA, NO_HOLE and FAST_ZERO through to the export', async () => {
      const client = await RawClient.open(port, 'disk');
      const exp = registry.get('disk');
      exp.disk.fill(0xaa, MiB, 2 * MiB);
      const before = exp.operations.length;
      assert.equal(
        (await client.request({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.FUA | CmdFlag.NO_HOLE, offset: MiB, length: 4096 })).error,
        0,
      );
      assert.equal((await client.request({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.FAST_ZERO, offset: MiB + 4096, length: 4096 })).error, 0);
      assert.equal((await client.request({ type: Cmd.TRIM, flags: CmdFlag.FUA, offset: MiB + 8192, length: 4096 })).error, 0);
      assert.equal(
        (await client.request({ type: Cmd.WRITE, flags: CmdFlag.FUA, offset: MiB + 12288, payload: Buffer.alloc(10, 1) })).error,
        0,
      );
      // Zeroes are cheap whatever their length, so WRITE_ZEROES is not held to the maximum block size.
      assert.equal((await client.request({ type: Cmd.WRITE_ZEROES, offset: 16 * MiB, length: 40 * MiB })).error, 0);
      const ops = exp.operations.slice(before).map(({ kind, fua, noHole, length }) => ({ kind, fua, noHole, length }));
      assert.deepEqual(ops, [
        { kind: 'writeZeroes', fua: true, noHole: true, length: 4096 },
        { kind: 'writeZeroes', fua: false, noHole: false, length: 4096 },
        { kind: 'trim', fua: true, noHole: false, length: 4096 },
        { kind: 'write', fua: true, noHole: false, length: 10 },
        { kind: 'writeZeroes', fua: false, noHole: false, length: 40 * MiB },
      ]);
      assert.ok(exp.disk.subarray(MiB, MiB + 12288).every((byte) => byte === 0));
      await client.disconnect();
    });

    it('maps export failures to NBD errors, even a synchronous throw, and keeps serving', async () => {
      const exp = registry.get('faulty');
      const noSpace = Object.assign(new Error('journal full'), { code: 'ENOSPC' });
      const failures = new Map<number, { error: unknown; synchronous?: boolean }>([
        [0, { error: new ReadOnlyError('volume frozen') }],
        [4096, { error: noSpace }],
        [8192, { error: new InvalidArgumentError('bad range') }],
        [12288, { error: new Error('object store exploded') }],
        [16384, { error: new Error('thrown synchronously'), synchronous: true }],
      ]);
      exp.failWhen = (op) => (op.kind === 'write' ? failures.get(op.offset) : undefined);
      const client = await RawClient.open(port, 'faulty');
      const errors: number[] = [];
      for (const offset of failures.keys()) {
        errors.push((await client.request({ type: Cmd.WRITE, offset, payload: Buffer.alloc(512, 1) })).error);
      }
      assert.deepEqual(errors, [Errno.EPERM, Errno.ENOSPC, Errno.EINVAL, Errno.EIO, Errno.EIO]);
      exp.failWhen = undefined;
      await client.writeAt(0, Buffer.alloc(512, 2));
      assert.deepEqual(await client.readAt(0, 512), Buffer.alloc(512, 2));
      await background.advance(2);
      await client.disconnect();
    });

    it('closes only the connection that sends a wrong request magic', async () => {
      const bystander = await RawClient.open(port, 'disk');
      const client = await RawClient.open(port, 'disk');
      const before = server.stats.protocolErrors.BadMagic;
      client.send({ type: Cmd.READ, offset: 0, length: 512, magic: 0x25609514 });
      const rest = await client.readUntilClosed();
      assert.equal(rest.length, 0, 'no reply to a request that could not be parsed');
      assert.equal(server.stats.protocolErrors.BadMagic, before + 1);
      await bystander.readAt(0, 512);
      await background.advance(2);
      await bystander.disconnect();
    });

    it('closes a connection whose request header is cut off', async () => {
      const before = server.stats.protocolErrors.TruncatedFrame;
      const client = await RawClient.open(port, 'disk');
      const header = Buffer.alloc(28);
      header.writeUInt32BE(REQUEST_MAGIC, 0);
      client.write(header.subarray(0, 14));
      client.socket.end();
      await client.closed;
      assert.equal(server.stats.protocolErrors.TruncatedFrame, before + 1);
      await background.advance(2);
    });

    it('closes a connection whose WRITE payload is cut off, without writing anything', async () => {
      const exp = registry.get('disk');
      const writesBefore = exp.operations.filter((op) => op.kind === 'write').length;
      const before = server.stats.protocolErrors.TruncatedFrame;
      const client = await RawClient.open(port, 'disk');
      const header = Buffer.alloc(28);
      header.writeUInt32BE(REQUEST_MAGIC, 0);
      header.writeUInt16BE(Cmd.WRITE, 6);
      header.writeUInt32BE(100000, 24);
      client.write(Buffer.concat([header, Buffer.alloc(70000, 0x5e)]));
      client.socket.end();
      await client.closed;
      assert.equal(server.stats.protocolErrors.TruncatedFrame, before + 1);
      assert.equal(exp.operations.filter((op) => op.kind === 'write').length, writesBefore);
      await background.advance(2);
    });

    it('answers requests out of order: a held request does not block later ones', async () => {
      const exp = registry.get('held');
      exp.holdWhen = (op) => op.kind === 'read' && op.offset === 0;
      const client = await RawClient.open(port, 'held');
      const first = client.send({ type: Cmd.READ, offset: 0, length: 4096 });
      await exp.waitForHeld(1);
      const later = [
        client.send({ type: Cmd.READ, offset: 4096, length: 4096 }),
        client.send({ type: Cmd.WRITE, offset: 8192, payload: Buffer.alloc(4096, 3) }),
        client.send({ type: Cmd.FLUSH }),
        client.send({ type: Cmd.TRIM, offset: 12288, length: 4096 }),
      ];
      const early: bigint[] = [];
      for (let i = 0; i < later.length; i++) {
        const reply = await client.reply();
        assert.equal(reply.error, 0);
        early.push(reply.handle);
      }
      assert.deepEqual([...early].sort(), [...later].sort());
      assert.equal(exp.heldCount, 1);
      exp.release();
      const last = await client.reply();
      assert.equal(last.handle, first);
      assert.equal(last.data?.length, 4096);
      exp.holdWhen = undefined;
      await client.disconnect();
    });

    it('answers every request in flight before closing on NBD_CMD_DISC', async () => {
      const exp = registry.get('held');
      exp.holdWhen = (op) => op.kind === 'write';
      const client = await RawClient.open(port, 'held');
      const handles = [0, 1, 2].map((i) => client.send({ type: Cmd.WRITE, offset: 65536 * i, payload: Buffer.alloc(1000, 0x70 + i) }));
      await exp.waitForHeld(3);
      const discBefore = server.stats.requests.disc;
      client.send({ type: Cmd.DISC });
      await waitFor(() => server.stats.requests.disc === discBefore + 1, 'the server to take NBD_CMD_DISC');
      exp.release();
      const replies = [await client.reply(), await client.reply(), await client.reply()];
      assert.deepEqual(replies.map((r) => r.handle).sort(), [...handles].sort());
      assert.deepEqual(
        replies.map((r) => r.error),
        [0, 0, 0],
      );
      assert.equal((await client.readUntilClosed()).length, 0);
      assert.equal(exp.disk[65536 * 2], 0x72);
      exp.holdWhen = undefined;
      await waitFor(() => exp.attached === 0, 'the export to be detached');
    });

    it('aborts held requests and detaches when a client vanishes without NBD_CMD_DISC', async () => {
      const exp = registry.get('held');
      exp.holdWhen = () => true;
      const abandonedBefore = exp.abandoned;
      const client = await RawClient.open(port, 'held');
      assert.equal(exp.attached, 1);
      client.send({ type: Cmd.READ, offset: 0, length: 512 });
      client.send({ type: Cmd.WRITE, offset: 0, payload: Buffer.alloc(512, 9) });
      await exp.waitForHeld(2);
      client.destroy();
      await waitFor(() => exp.abandoned === abandonedBefore + 2, 'held requests to be abandoned');
      await waitFor(() => exp.attached === 0, 'the export to be detached');
      assert.equal(exp.heldCount, 0);
      exp.holdWhen = undefined;
    });
  });

  describe('negotiation phase', () => {
    it('serves requests sent right behind NBD_OPT_GO, before its reply arrived', async () => {
      registry.get('disk').disk.fill(0x21, 0, 64);
      const client = await RawClient.connect(port);
      await client.greet();
      const name = Buffer.from('disk');
      const go = Buffer.alloc(4 + name.length + 2);
      go.writeUInt32BE(name.length, 0);
      name.copy(go, 4);
      const header = Buffer.alloc(28);
      header.writeUInt32BE(REQUEST_MAGIC, 0);
      header.writeUInt16BE(Cmd.READ, 6);
      header.writeBigUInt64BE(77n, 8);
      header.writeUInt32BE(64, 24);
      const option = Buffer.alloc(16);
      option.writeBigUInt64BE(IHAVEOPT, 0);
      option.writeUInt32BE(Opt.GO, 8);
      option.writeUInt32BE(go.length, 12);
      client.write(Buffer.concat([option, go, header]));
      assert.equal((await client.optionReplies()).at(-1)?.type, Rep.ACK);
      const reply = await client.read(16 + 64);
      assert.equal(reply.readUInt32BE(4), 0);
      assert.equal(reply.readBigUInt64BE(8), 77n);
      assert.deepEqual(reply.subarray(16), Buffer.alloc(64, 0x21));
      await client.disconnect();
    });

    it('closes the connection on a huge option length without waiting for the data', async () => {
      const before = server.stats.protocolErrors.OptionTooLarge;
      const client = await RawClient.connect(port);
      await client.greet();
      client.sendOption(Opt.GO, Buffer.alloc(0), 0xfffffff0);
      assert.equal((await client.readUntilClosed()).length, 0);
      assert.equal(server.stats.protocolErrors.OptionTooLarge, before + 1);
      await background.advance(2);
    });

    it('answers an unknown option with NBD_REP_ERR_UNSUP, then GO works', async () => {
      const client = await RawClient.connect(port);
      await client.greet();
      client.sendOption(0x7777, Buffer.from('ignored option data'));
      const unknown = await client.optionReply();
      assert.equal(unknown.option, 0x7777);
      assert.equal(unknown.type, Rep.ERR_UNSUP);
      client.sendOption(Opt.EXTENDED_HEADERS);
      assert.equal((await client.optionReply()).type, Rep.ERR_UNSUP, 'extended headers are not offered');
      client.sendOption(Opt.STARTTLS);
      assert.equal((await client.optionReply()).type, Rep.ERR_POLICY, 'STARTTLS on a server without TLS');
      const replies = await client.go('disk');
      assert.equal(replies.at(-1)?.type, Rep.ACK);
      assert.equal(client.size, 64 * MiB);
      await client.readAt(0, 512);
      await client.disconnect();
    });

    it('answers GO for an unknown export with NBD_REP_ERR_UNKNOWN, then a good GO works', async () => {
      const client = await RawClient.connect(port);
      await client.greet();
      const unknown = await client.go('no-such-disk');
      assert.equal(unknown.length, 1);
      assert.equal(unknown[0]?.type, Rep.ERR_UNKNOWN);
      assert.match(unknown[0].data.toString('utf8'), /no-such-disk/);
      const replies = await client.go('ro');
      assert.equal(replies.at(-1)?.type, Rep.ACK);
      assert.equal(client.size, MiB);
      assert.notEqual(client.transmissionFlags & TransmissionFlag.READ_ONLY, 0);
      await client.readAt(0, 16);
      await client.disconnect();
    });

    it('answers INFO with export, block size, name and description, and stays in negotiation', async () => {
      const client = await RawClient.connect(port);
      await client.greet();
      const replies = await client.go('', [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE], Opt.INFO);
      assert.equal(replies.at(-1)?.type, Rep.ACK);
      const infos = new Map(replies.filter((r) => r.type === Rep.INFO).map((r) => [r.data.readUInt16BE(0), r.data.subarray(2)]));
      assert.equal(infos.get(Info.NAME)?.toString('utf8'), 'disk', 'the empty name selects the default export');
      assert.equal(
        infos.get(Info.DESCRIPTION)?.toString('utf8'),
        'Holdfast volume disk, 64 MiB',
        'the name and size, nothing about the store',
      );
      const blockSize = infos.get(Info.BLOCK_SIZE);
      assert.ok(blockSize !== undefined);
      assert.deepEqual([blockSize.readUInt32BE(0), blockSize.readUInt32BE(4), blockSize.readUInt32BE(8)], [1, 4096, MAX_BLOCK_SIZE]);
      assert.equal(client.size, 64 * MiB);
      // Still negotiating: LIST is answered.
      client.sendOption(Opt.LIST);
      const listing = await client.optionReplies();
      const names = listing
        .filter((r) => r.type === Rep.SERVER)
        .map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString('utf8'));
      assert.deepEqual(names, ['disk', 'background', 'ro', 'held', 'faulty']);
      assert.equal(listing.at(-1)?.type, Rep.ACK);
      client.sendOption(Opt.ABORT);
      assert.equal((await client.optionReply()).type, Rep.ACK);
      await client.closed;
    });

    it('answers malformed GO and LIST data with NBD_REP_ERR_INVALID', async () => {
      const client = await RawClient.connect(port);
      await client.greet();
      const overlong = Buffer.alloc(10);
      overlong.writeUInt32BE(100, 0);
      client.sendOption(Opt.GO, overlong);
      assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);
      const miscounted = Buffer.alloc(4 + 4 + 2 + 2);
      miscounted.writeUInt32BE(4, 0);
      miscounted.write('disk', 4);
      miscounted.writeUInt16BE(5, 8);
      client.sendOption(Opt.GO, miscounted);
      assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);
      client.sendOption(Opt.GO, Buffer.alloc(3));
      assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);
      client.sendOption(Opt.LIST, Buffer.from('x'));
      assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);
      assert.equal((await client.go('disk')).at(-1)?.type, Rep.ACK);
      await client.disconnect();
    });

    it('ends NBD_OPT_EXPORT_NAME with or without the 124 zero bytes', async () => {
      for (const [flags, expected] of [
        [ALL_CLIENT_FLAGS, 10],
        [ClientFlag.C_FIXED_NEWSTYLE, 134],
      ] as const) {
        const client = await RawClient.connect(port);
        await client.greet(flags);
        client.sendOption(Opt.EXPORT_NAME, Buffer.from('ro'));
        const reply = await client.read(expected);
        assert.equal(Number(reply.readBigUInt64BE(0)), MiB);
        assert.notEqual(reply.readUInt16BE(8) & TransmissionFlag.READ_ONLY, 0);
        assert.ok(reply.subarray(10).every((byte) => byte === 0));
        assert.deepEqual(await client.readAt(0, 4), Buffer.alloc(4, 0x99));
        await client.disconnect();
      }
    });

    it('closes the connection when NBD_OPT_EXPORT_NAME names no export', async () => {
      const before = server.stats.protocolErrors.UnknownExport;
      const client = await RawClient.connect(port);
      await client.greet();
      client.sendOption(Opt.EXPORT_NAME, Buffer.from('nope'));
      assert.equal((await client.readUntilClosed()).length, 0);
      assert.equal(server.stats.protocolErrors.UnknownExport, before + 1);
    });

    it('closes the connection when client flags lack FIXED_NEWSTYLE or carry unknown bits', async () => {
      const before = server.stats.protocolErrors.BadClientFlags;
      for (const flags of [0, ClientFlag.C_NO_ZEROES, ALL_CLIENT_FLAGS | 0x100]) {
        const client = await RawClient.connect(port);
        await client.greet(flags);
        client.sendOption(Opt.LIST);
        assert.equal((await client.readUntilClosed()).length, 0, `client flags 0x${flags.toString(16)}`);
      }
      assert.equal(server.stats.protocolErrors.BadClientFlags, before + 3);
      await background.advance(2);
    });

    it('closes the connection on a wrong option magic', async () => {
      const before = server.stats.protocolErrors.BadMagic;
      const client = await RawClient.connect(port);
      await client.greet();
      client.sendOption(Opt.LIST, Buffer.alloc(0), 0, 0x1122334455667788n);
      assert.equal((await client.readUntilClosed()).length, 0);
      assert.equal(server.stats.protocolErrors.BadMagic, before + 1);
    });

    it('closes the connection after too many options', async () => {
      const before = server.stats.protocolErrors.TooManyOptions;
      const client = await RawClient.connect(port);
      await client.greet();
      for (let i = 0; i < 256; i++) client.sendOption(0x4242);
      client.sendOption(Opt.LIST);
      const received = await client.readUntilClosed();
      const types: number[] = [];
      for (let at = 0; at < received.length; at += 20 + received.readUInt32BE(at + 16)) {
        assert.equal(received.readBigUInt64BE(at), REP_MAGIC);
        types.push(received.readUInt32BE(at + 12));
      }
      assert.deepEqual(
        types,
        Array.from({ length: 256 }, () => Rep.ERR_UNSUP),
        'the 257th option is not answered',
      );
      assert.equal(server.stats.protocolErrors.TooManyOptions, before + 1);
    });
  });
});

describe('NBD server limits and shutdown', () => {
  const held = new MemoryExport({ name: 'held', size: MiB });
  const registry = new MemoryRegistry([held]);
  const server = new NbdServer({
    registry,
    logger: logger(),
    handshakeTimeoutMs: 500,
    maxConnections: 3,
    limits: { maxRequestsInFlight: 4, maxBytesInFlight: 3 * MiB },
  });
  let port = 0;

  before(async () => {
    port = await listenOnLoopback(server);
  });

  it('never hands the export more requests than the in-flight limit', async () => {
    held.holdWhen = () => true;
    const client = await RawClient.open(port, 'held');
    const handles = Array.from({ length: 10 }, (_, i) => client.send({ type: Cmd.READ, offset: i * 512, length: 512 }));
    const answered: bigint[] = [];
    while (answered.length < handles.length) {
      await held.waitForHeld(Math.min(4, handles.length - answered.length));
      assert.ok(held.heldCount <= 4);
      held.release(false);
      answered.push((await client.reply()).handle);
    }
    assert.deepEqual([...answered].sort(), [...handles].sort());
    assert.equal(held.peakConcurrency, 4);
    held.holdWhen = undefined;
    await client.disconnect();
  });

  it('never hands the export more payload bytes than the in-flight byte limit', async () => {
    held.holdWhen = () => true;
    held.peakConcurrency = 0;
    const client = await RawClient.open(port, 'held');
    const payloads = Array.from({ length: 8 }, (_, i) => Buffer.alloc(MiB, 0x40 + i));
    const handles = payloads.map((payload) => client.send({ type: Cmd.WRITE, offset: 0, payload }));
    for (let answered = 0; answered < handles.length; answered++) {
      await held.waitForHeld(Math.min(3, handles.length - answered));
      assert.ok(held.heldCount <= 3);
      held.release(false);
      assert.equal((await client.reply()).error, 0);
    }
    assert.equal(held.peakConcurrency, 3);
    held.holdWhen = undefined;
    await client.disconnect();
  });

  it('stops reading from a client that does not read its replies, and catches up once it does', async () => {
    const client = await RawClient.open(port, 'held');
    client.socket.pause();
    const readsBefore = held.operations.filter((op) => op.kind === 'read').length;
    const count = 200;
    const readsSoFar = (): number => held.operations.filter((op) => op.kind === 'read').length - readsBefore;
    for (let i = 0; i < count; i++) client.send({ type: Cmd.READ, offset: 0, length: MiB });
    // Wait until the server has stopped taking requests: the count no longer moves.
    let stable = 0;
    let last = -1;
    while (stable < 20 && readsSoFar() < count) {
      const now = readsSoFar();
      stable = now === last ? stable + 1 : 0;
      last = now;
      await delay(10);
    }
    assert.ok(readsSoFar() < count, `all ${count} MiB of replies were produced for a client that reads nothing`);
    client.socket.resume();
    for (let i = 0; i < count; i++) assert.equal((await client.reply()).data?.length, MiB);
    assert.equal(readsSoFar(), count);
    await client.disconnect();
  });

  it('disconnects a client that never finishes negotiating', async () => {
    const before = server.stats.protocolErrors.HandshakeTimeout;
    const client = await RawClient.connect(port);
    await client.greet();
    const received = await client.readUntilClosed();
    assert.equal(received.length, 0);
    assert.equal(server.stats.protocolErrors.HandshakeTimeout, before + 1);
  });

  it('refuses connections beyond maxConnections', async () => {
    await waitFor(() => server.stats.connectionsActive === 0, 'earlier connections to close');
    const clients = await Promise.all([0, 1, 2].map(() => RawClient.open(port, 'held')));
    const rejectedBefore = server.stats.connectionsRejected;
    const extra = await RawClient.connect(port);
    assert.equal((await extra.readUntilClosed()).length, 0, 'no greeting for a refused connection');
    assert.equal(server.stats.connectionsRejected, rejectedBefore + 1);
    await clients[0]?.readAt(0, 1);
    await Promise.all(clients.map((client) => client.disconnect()));
  });

  it('close() answers requests in flight before closing, and destroys what outlives the grace period', async () => {
    held.disk.fill(0);
    held.holdWhen = (op) => op.kind === 'write';
    const patient = await RawClient.open(port, 'held');
    const stuck = await RawClient.open(port, 'held');
    const answered = patient.send({ type: Cmd.WRITE, offset: 0, payload: Buffer.alloc(100, 0x3c) });
    await held.waitForHeld(1);
    stuck.send({ type: Cmd.WRITE, offset: 4096, payload: Buffer.alloc(100, 0x3d) });
    await held.waitForHeld(2);
    const abandonedBefore = held.abandoned;

    const closing = server.close(2000);
    // Releases the patient client's write, sent first; the other one stays held past the grace period.
    held.release(false);
    const reply = await patient.reply();
    assert.equal(reply.handle, answered);
    assert.equal(reply.error, 0);
    await patient.closed;
    await closing;
    await stuck.closed;
    assert.equal(held.abandoned, abandonedBefore + 1, 'the request still held at the deadline is aborted');
    assert.equal(held.disk[0], 0x3c);
    assert.equal(held.disk[4096], 0);
    assert.equal(held.attached, 0);
    await assert.rejects(RawClient.connect(port));
  });
});

describe('NBD request failures in the log', () => {
  it('logs a burst of failed requests as one warning that counts the others', async () => {
    const failing = new MemoryExport({ name: 'failing', size: MiB });
    failing.failWhen = () => ({ error: new Error('store down') });
    const lines: { msg: string; failuresNotLogged?: number }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n'))
          if (line !== '') lines.push(JSON.parse(line) as { msg: string; failuresNotLogged?: number });
        done();
      },
    });
    const server = new NbdServer({ registry: new MemoryRegistry([failing]), logger: pino({ level: 'warn' }, sink) });
    const port = await listenOnLoopback(server);
    const client = await RawClient.open(port, 'failing');
    const count = 500;
    for (let i = 0; i < count; i++) client.send({ type: Cmd.READ, offset: 0, length: 512 });
    for (let i = 0; i < count; i++) assert.equal((await client.reply()).error, Errno.EIO);
    await client.disconnect();
    await server.close(1000);
    const failures = lines.filter((l) => l.msg === 'nbd request failed');
    assert.ok(failures.length >= 1 && failures.length <= 3, `${failures.length} warnings for ${count} failed requests`);
    const notLogged = failures.reduce((sum, l) => sum + (l.failuresNotLogged ?? 0), 0);
    // The last suppressed ones are counted only by a later warning, which never comes here.
    assert.ok(notLogged <= count - failures.length, `${notLogged} counted as not logged`);
  });
});
