import assert from 'node:assert/strict';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { duplexPair, type Duplex } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { BufferBudget } from '../../gateway/nbd/buffer-budget.js';
import { AllocationState, Cmd, CmdFlag, Errno, REQUEST_MAGIC } from '../../gateway/nbd/constants.js';
import type { Session } from '../../gateway/nbd/handshake.js';
import { BufferPool } from '../../gateway/util/buffer-pool.js';
import { NbdStats } from '../../gateway/nbd/stats.js';
import { Transmission, type TransmissionLimits } from '../../gateway/nbd/transmission.js';
import { MemoryExport } from '../helpers/memory-export.js';
import { waitFor } from '../helpers/wait-for.js';

const MiB = 1024 * 1024;
/** Wire values written out from the spec, so that a wrong constant in the server shows up here. */
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
const REPLY_TYPE_OFFSET_DATA = 1;
const REPLY_TYPE_BLOCK_STATUS = 5;
const REPLY_TYPE_ERROR = 0x8001;
const REPLY_FLAG_DONE = 1;

type Reply =
  | { readonly kind: 'simple'; readonly handle: bigint; readonly error: number; readonly data: Buffer | undefined }
  | { readonly kind: 'structured'; readonly handle: bigint; readonly flags: number; readonly type: number; readonly payload: Buffer };

/** The client end: sends requests, decodes simple and structured replies as they come. */
class Client {
  private received = Buffer.alloc(0);
  private readonly readLengths = new Map<bigint, number>();
  private nextHandle = 1n;
  private waiters: Array<() => void> = [];
  closed = false;

  constructor(
    readonly end: Duplex,
    private readonly structured: boolean,
  ) {
    end.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.wake();
    });
    end.on('close', () => {
      this.closed = true;
      this.wake();
    });
    end.on('end', () => {
      this.closed = true;
      this.wake();
    });
  }

  send(type: number, options: { flags?: number; offset?: number; length?: number; payload?: Buffer } = {}): bigint {
    const handle = this.nextHandle++;
    const header = Buffer.alloc(28);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(options.flags ?? 0, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(options.offset ?? 0), 16);
    header.writeUInt32BE(options.length ?? options.payload?.length ?? 0, 24);
    if (type === Cmd.READ) this.readLengths.set(handle, options.length ?? 0);
    this.end.write(options.payload === undefined ? header : Buffer.concat([header, options.payload]));
    return handle;
  }

  async reply(): Promise<Reply> {
    const header = await this.take(4);
    const magic = header.readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const rest = await this.take(12);
      const error = rest.readUInt32BE(0);
      const handle = rest.readBigUInt64BE(4);
      const length = this.readLengths.get(handle);
      const data = length !== undefined && error === 0 && !this.structured ? await this.take(length) : undefined;
      return { kind: 'simple', handle, error, data };
    }
    assert.equal(magic, STRUCTURED_REPLY_MAGIC, `reply magic 0x${magic.toString(16)}`);
    const rest = await this.take(16);
    return {
      kind: 'structured',
      flags: rest.readUInt16BE(0),
      type: rest.readUInt16BE(2),
      handle: rest.readBigUInt64BE(4),
      payload: await this.take(rest.readUInt32BE(12)),
    };
  }

  async request(type: number, options: { flags?: number; offset?: number; length?: number; payload?: Buffer } = {}): Promise<Reply> {
    const handle = this.send(type, options);
    const reply = await this.reply();
    assert.equal(reply.handle, handle);
    return reply;
  }

  /** Resolves once nothing more arrives for `ms` (a reply that should not come). */
  async quiet(ms: number): Promise<number> {
    await delay(ms);
    return this.received.length;
  }

  private async take(size: number): Promise<Buffer> {
    while (this.received.length < size) {
      if (this.closed) throw new Error(`connection closed with ${this.received.length} of ${size} bytes`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    const out = this.received.subarray(0, size);
    this.received = this.received.subarray(size);
    return out;
  }

  private wake(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }
}

interface Setup {
  readonly client: Client;
  readonly transmission: Transmission;
  readonly exp: MemoryExport;
  readonly stats: NbdStats;
  readonly server: Duplex;
}

/** A Transmission on one end of an in-memory duplex pair, wired as Connection wires it to a socket. */
function open(
  options: {
    session?: Partial<Omit<Session, 'export'>>;
    exp?: MemoryExport;
    limits?: Partial<TransmissionLimits>;
    budget?: BufferBudget;
    payloads?: BufferPool;
    server?: Duplex;
    clientEnd?: Duplex;
  } = {},
): Setup {
  const [server, clientEnd] =
    options.server !== undefined && options.clientEnd !== undefined ? [options.server, options.clientEnd] : duplexPair();
  const exp = options.exp ?? new MemoryExport({ name: 'disk', size: 16 * MiB });
  const session: Session = {
    export: exp,
    readOnly: false,
    structuredReplies: false,
    allocationContext: undefined,
    tls: undefined,
    ...options.session,
  };
  const stats = new NbdStats();
  const limits: TransmissionLimits = { maxRequestsInFlight: 64, maxBytesInFlight: 64 * MiB, idleTimeoutMs: 0, ...options.limits };
  const transmission = new Transmission(
    server,
    session,
    pino({ level: 'silent' }),
    stats,
    limits,
    options.budget ?? new BufferBudget(256 * MiB, 256 * 1024),
    options.payloads,
  );
  exp.attach();
  server.on('data', (chunk: Buffer) => {
    transmission.push(chunk);
  });
  server.on('end', () => {
    transmission.end();
  });
  server.on('close', () => {
    transmission.onClose();
  });
  transmission.start([]);
  return { client: new Client(clientEnd, session.structuredReplies), transmission, exp, stats, server };
}

function structured(reply: Reply): Extract<Reply, { kind: 'structured' }> {
  assert.equal(reply.kind, 'structured', 'expected a structured reply');
  return reply;
}

function descriptors(payload: Buffer): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let at = 4; at < payload.length; at += 8) out.push([payload.readUInt32BE(at), payload.readUInt32BE(at + 4)]);
  return out;
}

describe('Transmission replies', () => {
  it('answers with simple replies when structured replies were not negotiated', async () => {
    const { client, exp } = open();
    exp.disk.fill(0x42, 4096, 8192);
    const read = await client.request(Cmd.READ, { offset: 4096, length: 4096 });
    assert.ok(read.kind === 'simple');
    assert.equal(read.error, 0);
    assert.deepEqual(read.data, Buffer.alloc(4096, 0x42));
    const refused = await client.request(Cmd.READ, { offset: 16 * MiB, length: 1 });
    assert.ok(refused.kind === 'simple');
    assert.equal(refused.error, Errno.EINVAL);
    assert.equal(refused.data, undefined);
  });

  it('answers a READ with one final OFFSET_DATA chunk carrying its offset when structured replies are on', async () => {
    const { client, exp } = open({ session: { structuredReplies: true } });
    exp.disk.fill(0x17, 5000, 5000 + 3000);
    const reply = structured(await client.request(Cmd.READ, { offset: 5000, length: 3000 }));
    assert.equal(reply.type, REPLY_TYPE_OFFSET_DATA);
    assert.equal(reply.flags, REPLY_FLAG_DONE);
    assert.equal(reply.payload.readBigUInt64BE(0), 5000n);
    assert.deepEqual(reply.payload.subarray(8), Buffer.alloc(3000, 0x17));
    // DF is allowed once structured replies are on: every READ is one chunk anyway.
    assert.equal(structured(await client.request(Cmd.READ, { flags: CmdFlag.DF, offset: 0, length: 512 })).type, REPLY_TYPE_OFFSET_DATA);
  });

  it('answers failures with an ERROR chunk and a message, never a simple reply to a READ', async () => {
    const { client, exp } = open({ session: { structuredReplies: true } });
    exp.failWhen = (op) => (op.kind === 'read' && op.offset === 0 ? { error: new Error('disk on fire') } : undefined);
    for (const [options, errno] of [
      [{ offset: 0, length: 512 }, Errno.EIO],
      [{ offset: 16 * MiB - 1, length: 2 }, Errno.EINVAL],
      [{ offset: 0, length: 512, flags: CmdFlag.NO_HOLE }, Errno.EINVAL],
    ] as const) {
      const reply = structured(await client.request(Cmd.READ, options));
      assert.equal(reply.type, REPLY_TYPE_ERROR);
      assert.equal(reply.flags, REPLY_FLAG_DONE);
      assert.equal(reply.payload.readUInt32BE(0), errno);
      const length = reply.payload.readUInt16BE(4);
      assert.equal(length, reply.payload.length - 6);
      assert.ok(length > 0, 'the error carries a message for people');
      assert.doesNotMatch(reply.payload.subarray(6).toString('utf8'), /fire/, 'internal error text stays in the log');
    }
  });

  it('refuses DF without structured replies', async () => {
    const { client } = open();
    const reply = await client.request(Cmd.READ, { flags: CmdFlag.DF, offset: 0, length: 512 });
    assert.ok(reply.kind === 'simple');
    assert.equal(reply.error, Errno.EINVAL);
  });

  it('refuses writes, trims and zeroes with EPERM when the client may only read, and serves its reads', async () => {
    const { client, exp } = open({ session: { readOnly: true } });
    for (const type of [Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES]) {
      const reply = await client.request(
        type,
        type === Cmd.WRITE ? { offset: 0, payload: Buffer.alloc(512, 1) } : { offset: 0, length: 512 },
      );
      assert.ok(reply.kind === 'simple');
      assert.equal(reply.error, Errno.EPERM, `command ${type}`);
    }
    assert.equal((await client.request(Cmd.READ, { offset: 0, length: 512 })).kind, 'simple');
    assert.deepEqual(
      exp.operations.map((op) => op.kind),
      ['read'],
    );
  });
});

describe('Transmission BLOCK_STATUS and CACHE', () => {
  const withContext = { structuredReplies: true, allocationContext: 7 };

  it('reports base:allocation as consecutive descriptors under the selected context id', async () => {
    const exp = new MemoryExport({ name: 'sparse', size: 16 * MiB, allocationBlockSize: MiB });
    const { client } = open({ exp, session: withContext });
    await client.request(Cmd.WRITE, { offset: 2 * MiB, payload: Buffer.alloc(MiB, 0xaa) });
    await client.request(Cmd.WRITE_ZEROES, { flags: CmdFlag.NO_HOLE, offset: 5 * MiB, length: MiB });
    const reply = structured(await client.request(Cmd.BLOCK_STATUS, { offset: 0, length: 8 * MiB }));
    assert.equal(reply.type, REPLY_TYPE_BLOCK_STATUS);
    assert.equal(reply.flags, REPLY_FLAG_DONE);
    assert.equal(reply.payload.readUInt32BE(0), 7);
    const HOLE_ZERO = AllocationState.HOLE | AllocationState.ZERO;
    assert.deepEqual(descriptors(reply.payload), [
      [2 * MiB, HOLE_ZERO],
      [MiB, 0],
      [2 * MiB, HOLE_ZERO],
      [MiB, AllocationState.ZERO],
      [2 * MiB, HOLE_ZERO],
    ]);
    const one = structured(await client.request(Cmd.BLOCK_STATUS, { flags: CmdFlag.REQ_ONE, offset: MiB, length: 4 * MiB }));
    assert.deepEqual(descriptors(one.payload), [[MiB, HOLE_ZERO]], 'REQ_ONE: one descriptor, within the request');
    const unaligned = structured(await client.request(Cmd.BLOCK_STATUS, { offset: 2 * MiB + 100, length: 1000 }));
    assert.deepEqual(descriptors(unaligned.payload), [[1000, 0]], 'descriptors never go past the request');
  });

  it('refuses BLOCK_STATUS without a selected context, of zero length, or past the end', async () => {
    const plain = open({ session: { structuredReplies: true } });
    const noContext = structured(await plain.client.request(Cmd.BLOCK_STATUS, { offset: 0, length: 4096 }));
    assert.equal(noContext.type, REPLY_TYPE_ERROR);
    assert.equal(noContext.payload.readUInt32BE(0), Errno.EINVAL);
    const { client } = open({ session: withContext });
    for (const options of [
      { offset: 0, length: 0 },
      { offset: 16 * MiB - 512, length: 1024 },
      { offset: 0, length: 4096, flags: CmdFlag.DF },
    ]) {
      const reply = structured(await client.request(Cmd.BLOCK_STATUS, options));
      assert.equal(reply.type, REPLY_TYPE_ERROR, JSON.stringify(options));
      assert.equal(reply.payload.readUInt32BE(0), Errno.EINVAL);
    }
  });

  it('closes nothing and answers EIO when the export returns no extent', async () => {
    const exp = new MemoryExport({ name: 'broken', size: MiB });
    exp.allocation = () => Promise.resolve([]);
    const { client } = open({ exp, session: withContext });
    const reply = structured(await client.request(Cmd.BLOCK_STATUS, { offset: 0, length: 4096 }));
    assert.equal(reply.type, REPLY_TYPE_ERROR);
    assert.equal(reply.payload.readUInt32BE(0), Errno.EIO);
    assert.equal(structured(await client.request(Cmd.READ, { offset: 0, length: 16 })).type, REPLY_TYPE_OFFSET_DATA);
  });

  it('hands CACHE to the export as a prefetch and answers with a simple reply', async () => {
    const { client, exp } = open({ session: withContext });
    const reply = await client.request(Cmd.CACHE, { offset: MiB, length: 4 * MiB });
    assert.ok(reply.kind === 'simple');
    assert.equal(reply.error, 0);
    assert.deepEqual(
      exp.operations.map((op) => [op.kind, op.offset, op.length]),
      [['prefetch', MiB, 4 * MiB]],
    );
  });
});

describe('Transmission memory bounds', () => {
  it('joins a WRITE payload that spans chunks in a buffer used again once the write succeeded, never after a failure', async () => {
    const payloads = new BufferPool(16 * MiB);
    const { client, exp } = open({ payloads });
    /** A 1 MiB WRITE whose payload arrives in two chunks, so that the parser must join it. */
    const write = async (offset: number, fill: number): Promise<number> => {
      const payload = Buffer.alloc(MiB, fill);
      const header = Buffer.alloc(28);
      header.writeUInt32BE(REQUEST_MAGIC, 0);
      header.writeUInt16BE(Cmd.WRITE, 6);
      header.writeBigUInt64BE(BigInt(fill), 8);
      header.writeBigUInt64BE(BigInt(offset), 16);
      header.writeUInt32BE(MiB, 24);
      client.end.write(Buffer.concat([header, payload.subarray(0, 1000)]));
      await delay(5);
      client.end.write(payload.subarray(1000));
      const reply = await client.reply();
      assert.equal(reply.kind, 'simple');
      return reply.error;
    };
    assert.equal(await write(0, 1), 0);
    assert.equal(await write(MiB, 2), 0);
    assert.equal(payloads.reused, 1, "the second write was joined in the first one's buffer");
    exp.failWhen = (op) => (op.kind === 'write' && op.offset === 2 * MiB ? { error: new Error('disk on fire') } : undefined);
    assert.notEqual(await write(2 * MiB, 3), 0);
    exp.failWhen = undefined;
    assert.equal(await write(3 * MiB, 4), 0);
    assert.equal(payloads.reused, 2, 'the failed write took the free buffer and did not give it back');
    assert.equal(await write(4 * MiB, 5), 0);
    assert.equal(payloads.reused, 3);
    for (const [offset, fill] of [
      [0, 1],
      [MiB, 2],
      [3 * MiB, 4],
      [4 * MiB, 5],
    ] as const)
      assert.ok(
        exp.disk.subarray(offset, offset + MiB).every((b) => b === fill),
        `the write at ${offset} intact`,
      );
  });

  it('stops taking requests while the shared buffer budget is spent, and resumes when the bytes come back', async () => {
    // Reserve 64 KiB each, 4 MiB shared: a hoarding connection holds 4 MiB + 64 KiB at most.
    const budget = new BufferBudget(4 * MiB, 64 * 1024);
    const hoarder = open({ budget, exp: new MemoryExport({ name: 'h', size: 64 * MiB }) });
    hoarder.exp.holdWhen = (op) => op.kind === 'read';
    for (let i = 0; i < 8; i++) hoarder.client.send(Cmd.READ, { offset: i * MiB, length: MiB });
    await hoarder.exp.waitForHeld(4);
    await delay(50);
    assert.equal(hoarder.exp.heldCount, 4, 'a fifth 1 MiB READ does not fit 4 MiB + 64 KiB');
    assert.equal(budget.sharedInUse, 4 * MiB - 64 * 1024);

    // Another connection's small requests run from its own reserve meanwhile.
    const honest = open({ budget });
    for (let i = 0; i < 20; i++) {
      const reply = await honest.client.request(Cmd.READ, { offset: i * 4096, length: 4096 });
      assert.ok(reply.kind === 'simple' && reply.error === 0);
    }
    // A large request on the honest connection waits for the shared part...
    const large = honest.client.send(Cmd.READ, { offset: 0, length: 2 * MiB });
    assert.equal(await honest.client.quiet(50), 0, 'a 2 MiB READ must wait for shared room');
    // ...which the hoarder gives back as its replies go out.
    hoarder.exp.release();
    await hoarder.exp.waitForHeld(4);
    hoarder.exp.release();
    const reply = await honest.client.reply();
    assert.equal(reply.handle, large);
    for (let i = 0; i < 8; i++) await hoarder.client.reply();
    await waitFor(() => budget.sharedInUse === 0, 'every byte to come back');
  });

  it('keeps a client that never reads its replies at its connection limit, and frees it all when it goes', async () => {
    const budget = new BufferBudget(256 * MiB, 256 * 1024);
    const exp = new MemoryExport({ name: 'slow', size: 64 * MiB });
    const { client, server, stats } = open({ exp, budget, limits: { maxBytesInFlight: 8 * MiB } });
    client.end.pause();
    for (let i = 0; i < 32; i++) client.send(Cmd.READ, { offset: i * MiB, length: MiB });
    await waitFor(() => exp.operations.length >= 8, 'eight READs to run');
    await delay(50);
    assert.equal(exp.operations.length, 8, 'no more than 8 MiB of replies queued for a reader that does not read');
    assert.equal(budget.sharedInUse, 8 * MiB - 256 * 1024);
    assert.equal(stats.requestsInFlight, 0, 'the READs are done; their replies wait in the socket');
    server.destroy();
    await waitFor(() => budget.sharedInUse === 0, 'the budget to be whole again');
  });

  it("tells the export when each READ's data has left: once the kernel took it, or once the connection dropped it", async () => {
    const done: Buffer[] = [];
    const exp = Object.assign(new MemoryExport({ name: 'lending', size: 64 * MiB }), { readDone: (data: Buffer) => done.push(data) });
    // A real TCP connection: what "the kernel took it" means is the socket's, not an in-memory pair's.
    const listener = createServer();
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<Socket>((resolve) => listener.once('connection', resolve));
    const clientEnd = connect((listener.address() as AddressInfo).port, '127.0.0.1');
    const { client, server } = open({ exp, server: await accepted, clientEnd });
    listener.close();
    await client.request(Cmd.READ, { offset: 0, length: 4096 });
    await waitFor(() => done.length === 1, 'the first READ to be done');
    assert.equal(done[0]?.length, 4096);
    // A client that does not read: the replies fill the socket buffers and wait, their data not done with.
    client.end.pause();
    for (let i = 0; i < 32; i++) client.send(Cmd.READ, { offset: i * MiB, length: MiB });
    await waitFor(() => exp.operations.length >= 4, 'READs to run');
    await delay(100);
    assert.ok(done.length < exp.operations.length, `of ${exp.operations.length} READs, ${done.length} are done: the rest wait unread`);
    server.destroy();
    await waitFor(() => done.length === exp.operations.length, 'every READ to be done once the connection is gone');
    clientEnd.destroy();
  });

  it('drops the waiting requests of a client that closes its side without NBD_CMD_DISC', async () => {
    const { client, exp, server } = open({ limits: { maxRequestsInFlight: 1 } });
    exp.holdWhen = () => true;
    client.send(Cmd.READ, { offset: 0, length: 4096 });
    client.send(Cmd.READ, { offset: 4096, length: 4096 });
    await exp.waitForHeld(1);
    client.end.end();
    await waitFor(() => server.destroyed, 'the server to drop the connection');
    assert.equal(exp.operations.length, 1, 'the waiting READ never runs');
    assert.equal(exp.abandoned, 1, 'the running one is told to give up');
  });

  it('answers every waiting request of a client that closes its side behind NBD_CMD_DISC', async () => {
    const { client, exp } = open({ limits: { maxRequestsInFlight: 1 } });
    exp.holdWhen = () => true;
    const first = client.send(Cmd.READ, { offset: 0, length: 4096 });
    const second = client.send(Cmd.READ, { offset: 4096, length: 4096 });
    client.send(Cmd.DISC);
    await exp.waitForHeld(1);
    client.end.end();
    exp.holdWhen = undefined;
    exp.release();
    assert.equal((await client.reply()).handle, first);
    assert.equal((await client.reply()).handle, second);
    await waitFor(() => client.closed, 'the server to close after the answers');
  });

  it('closes a connection idle for the idle timeout, but not one with a request in flight', async () => {
    const started = performance.now();
    const idle = open({ limits: { idleTimeoutMs: 150 } });
    await waitFor(() => idle.server.destroyed, 'the idle connection to close');
    const elapsed = performance.now() - started;
    // The timer is armed inside open(), after `started`: never early; a loaded machine may be late.
    assert.ok(elapsed >= 150 && elapsed < 5000, `closed after ${elapsed} ms`);
    assert.equal(idle.stats.idleTimeouts, 1);

    const busy = open({ limits: { idleTimeoutMs: 150 } });
    busy.exp.holdWhen = () => true;
    busy.client.send(Cmd.FLUSH);
    await busy.exp.waitForHeld(1);
    await delay(400);
    assert.equal(busy.server.destroyed, false, 'a held request keeps the connection');
    busy.exp.release();
    await busy.client.reply();
    await waitFor(() => busy.server.destroyed, 'the connection to close once idle again');
  });
});
