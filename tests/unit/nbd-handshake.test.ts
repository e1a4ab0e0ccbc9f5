import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { IdentityAccess, OPEN_ACCESS, type AccessPolicy } from '../../gateway/nbd/access.js';
import { ClientFlag, Info, Opt, REP_MAGIC, Rep, TransmissionFlag } from '../../gateway/nbd/constants.js';
import { ProtocolError, ProtocolErrorReason } from '../../gateway/nbd/errors.js';
import { HandshakeInput } from '../../gateway/nbd/handshake-input.js';
import { negotiate, type HandshakeResult, type TlsMode, type TlsPeer } from '../../gateway/nbd/handshake.js';
import { MemoryExport, MemoryRegistry } from '../helpers/memory-export.js';
import { encodeOption, infoRequest, metaContextRequest } from '../helpers/nbd-options.js';

const MiB = 1024 * 1024;

interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

/**
 * Runs negotiate() against bytes the test feeds in, as the connection would, and decodes what the
 * server writes. `startTls` stands for the TLS handshake and reports who the client is.
 */
class Negotiation {
  readonly logs: Array<{ msg: string; identity?: string | null; export?: string }> = [];
  readonly result: Promise<HandshakeResult>;
  private readonly input = new HandshakeInput({ pause: () => undefined, resume: () => undefined }, 1 << 20);
  private written = Buffer.alloc(0);
  private readonly waiters: Array<() => void> = [];
  tlsStarts = 0;

  constructor(options: { registry: MemoryRegistry; tls?: TlsMode; access?: AccessPolicy; peer?: TlsPeer }) {
    const logSink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        for (const line of chunk.toString('utf8').split('\n')) if (line !== '') this.logs.push(JSON.parse(line) as { msg: string });
        done();
      },
    });
    const io = {
      read: (size: number, atBoundary?: boolean) => this.input.read(size, atBoundary),
      skip: (size: number) => this.input.skip(size),
      write: (data: Buffer) => {
        this.written = Buffer.concat([this.written, data]);
        for (const wake of this.waiters.splice(0)) wake();
      },
      startTls: () => {
        this.tlsStarts++;
        return Promise.resolve(options.peer ?? { identity: undefined, method: 'x509' as const });
      },
    };
    this.result = negotiate(
      io,
      { registry: options.registry, tls: () => options.tls ?? 'off', access: () => options.access ?? OPEN_ACCESS },
      pino({ level: 'info' }, logSink),
    );
    // Negotiation failures are asserted through `result` by the tests that expect them.
    this.result.catch(() => undefined);
  }

  async start(): Promise<void> {
    await this.take(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES);
    this.input.push(flags);
  }

  send(type: number, data?: Buffer): void {
    this.input.push(encodeOption(type, data));
  }

  /** The replies to one option, up to its final one. */
  async replies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const header = await this.take(20);
      assert.equal(header.readBigUInt64BE(0), REP_MAGIC);
      const reply = { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.take(header.readUInt32BE(16)) };
      out.push(reply);
      if (reply.type === Rep.ACK || reply.type >= 0x80000000) return out;
    }
  }

  async ask(type: number, data?: Buffer): Promise<OptionReply[]> {
    this.send(type, data);
    return this.replies();
  }

  /** Everything the server has written that no reply decoded yet. */
  get unread(): Buffer {
    return this.written;
  }

  private async take(size: number): Promise<Buffer> {
    while (this.written.length < size) await new Promise<void>((resolve) => this.waiters.push(resolve));
    const out = this.written.subarray(0, size);
    this.written = this.written.subarray(size);
    return out;
  }
}

function registry(): MemoryRegistry {
  return new MemoryRegistry([new MemoryExport({ name: 'a', size: 8 * MiB }), new MemoryExport({ name: 'b', size: 4 * MiB })]);
}

function serverNames(replies: readonly OptionReply[]): string[] {
  return replies.filter((r) => r.type === Rep.SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString('utf8'));
}

const ACCESS = IdentityAccess.parse(
  JSON.stringify({ alice: { a: 'rw' }, backup: { '*': 'ro' }, carol: { '*': 'ro', b: 'rw' } }),
  'access.json',
);

describe('negotiation with TLS required (FORCEDTLS)', () => {
  it('answers every option but STARTTLS with NBD_REP_ERR_TLS_REQD and names no export', async () => {
    const n = new Negotiation({ registry: registry(), tls: 'require' });
    await n.start();
    for (const [type, data] of [
      [Opt.LIST, undefined],
      [Opt.INFO, infoRequest('a')],
      [Opt.GO, infoRequest('a')],
      [Opt.STRUCTURED_REPLY, undefined],
      [Opt.LIST_META_CONTEXT, metaContextRequest('a', [])],
      [0x4242, Buffer.from('unknown')],
    ] as const) {
      const replies = await n.ask(type, data);
      assert.deepEqual(
        replies.map((r) => r.type),
        [Rep.ERR_TLS_REQD],
        `option ${type}`,
      );
      assert.doesNotMatch(replies[0]!.data.toString('utf8'), /\ba\b|\bb\b/, 'an error message must not name exports');
    }
    assert.equal(n.tlsStarts, 0);
    n.send(Opt.EXPORT_NAME, Buffer.from('a'));
    await assert.rejects(n.result, (err: unknown) => err instanceof ProtocolError && err.reason === ProtocolErrorReason.TlsRequired);
    assert.equal(n.unread.length, 0, 'NBD_OPT_EXPORT_NAME before TLS gets no reply at all');
  });

  it('serves options once TLS is up, and refuses a second STARTTLS', async () => {
    const n = new Negotiation({ registry: registry(), tls: 'require', peer: { identity: 'alice', method: 'psk' } });
    await n.start();
    assert.deepEqual(
      (await n.ask(Opt.STARTTLS)).map((r) => r.type),
      [Rep.ACK],
    );
    assert.equal(n.tlsStarts, 1);
    assert.deepEqual(serverNames(await n.ask(Opt.LIST)), ['a', 'b']);
    assert.deepEqual(
      (await n.ask(Opt.STARTTLS)).map((r) => r.type),
      [Rep.ERR_INVALID],
    );
    assert.equal(n.tlsStarts, 1);
    const go = await n.ask(Opt.GO, infoRequest('b'));
    assert.equal(go.at(-1)?.type, Rep.ACK);
    const result = await n.result;
    assert.equal(result.kind, 'transmission');
    assert.equal(result.session.tls?.identity, 'alice');
  });

  it('refuses STARTTLS with data, and on a server without TLS with NBD_REP_ERR_POLICY', async () => {
    const forced = new Negotiation({ registry: registry(), tls: 'require' });
    await forced.start();
    assert.deepEqual(
      (await forced.ask(Opt.STARTTLS, Buffer.from('x'))).map((r) => r.type),
      [Rep.ERR_INVALID],
    );
    assert.equal(forced.tlsStarts, 0);

    const plain = new Negotiation({ registry: registry(), tls: 'off' });
    await plain.start();
    assert.deepEqual(
      (await plain.ask(Opt.STARTTLS)).map((r) => r.type),
      [Rep.ERR_POLICY],
    );
    assert.equal(plain.tlsStarts, 0);
    assert.equal((await plain.ask(Opt.GO, infoRequest('a'))).at(-1)?.type, Rep.ACK, 'a plain server serves after refusing STARTTLS');
  });

  it('forgets structured replies and metadata contexts negotiated before STARTTLS', async () => {
    const n = new Negotiation({ registry: registry(), tls: 'on' });
    await n.start();
    assert.equal((await n.ask(Opt.STRUCTURED_REPLY)).at(-1)?.type, Rep.ACK);
    assert.equal((await n.ask(Opt.SET_META_CONTEXT, metaContextRequest('a', ['base:allocation']))).at(-1)?.type, Rep.ACK);
    assert.equal((await n.ask(Opt.STARTTLS)).at(-1)?.type, Rep.ACK);
    assert.equal((await n.ask(Opt.GO, infoRequest('a'))).at(-1)?.type, Rep.ACK);
    const result = await n.result;
    assert.ok(result.kind === 'transmission');
    assert.equal(result.session.structuredReplies, false);
    assert.equal(result.session.allocationContext, undefined);
  });
});

describe('negotiation with per-identity access', () => {
  it('lists only what the identity may open and refuses the rest with NBD_REP_ERR_POLICY, logging the identity', async () => {
    const n = new Negotiation({ registry: registry(), tls: 'require', access: ACCESS, peer: { identity: 'alice', method: 'psk' } });
    await n.start();
    await n.ask(Opt.STARTTLS);
    assert.deepEqual(serverNames(await n.ask(Opt.LIST)), ['a']);
    const refused = await n.ask(Opt.GO, infoRequest('b'));
    assert.deepEqual(
      refused.map((r) => r.type),
      [Rep.ERR_POLICY],
      'no NBD_REP_INFO about b either',
    );
    const refusal = n.logs.find((line) => /access refused/.test(line.msg));
    assert.equal(refusal?.identity, 'alice');
    assert.equal(refusal.export, 'b');
    // An export that does not exist is refused the same way, so names cannot be probed.
    assert.deepEqual(
      (await n.ask(Opt.INFO, infoRequest('no-such-volume'))).map((r) => r.type),
      [Rep.ERR_POLICY],
    );
    assert.deepEqual(
      (await n.ask(Opt.LIST_META_CONTEXT, metaContextRequest('b', []))).map((r) => r.type),
      [Rep.ERR_INVALID],
      'meta contexts need structured replies',
    );
    assert.equal((await n.ask(Opt.STRUCTURED_REPLY)).at(-1)?.type, Rep.ACK);
    assert.deepEqual(
      (await n.ask(Opt.LIST_META_CONTEXT, metaContextRequest('b', []))).map((r) => r.type),
      [Rep.ERR_POLICY],
    );
    assert.equal((await n.ask(Opt.GO, infoRequest('a'))).at(-1)?.type, Rep.ACK);
    const result = await n.result;
    assert.ok(result.kind === 'transmission');
    assert.equal(result.session.export.name, 'a');
    assert.equal(result.session.readOnly, false);
  });

  it('gives read-only access as a READ_ONLY export, a named volume winning over the wildcard', async () => {
    const readOnly = new Negotiation({ registry: registry(), tls: 'require', access: ACCESS, peer: { identity: 'carol', method: 'x509' } });
    await readOnly.start();
    await readOnly.ask(Opt.STARTTLS);
    const info = await readOnly.ask(Opt.INFO, infoRequest('a'));
    const exportInfo = info.find((r) => r.type === Rep.INFO && r.data.readUInt16BE(0) === Info.EXPORT);
    assert.ok(exportInfo !== undefined);
    assert.notEqual(exportInfo.data.readUInt16BE(10) & TransmissionFlag.READ_ONLY, 0, 'carol reads a only');
    assert.equal((await readOnly.ask(Opt.GO, infoRequest('b'))).at(-1)?.type, Rep.ACK);
    const result = await readOnly.result;
    assert.ok(result.kind === 'transmission');
    assert.equal(result.session.readOnly, false, 'carol writes b');
  });

  it('refuses an identity the access file does not list, and a TLS client without identity', async () => {
    for (const peer of [
      { identity: 'mallory', method: 'psk' as const },
      { identity: undefined, method: 'x509' as const },
    ]) {
      const n = new Negotiation({ registry: registry(), tls: 'require', access: ACCESS, peer });
      await n.start();
      await n.ask(Opt.STARTTLS);
      assert.deepEqual(serverNames(await n.ask(Opt.LIST)), []);
      assert.deepEqual(
        (await n.ask(Opt.GO, infoRequest('a'))).map((r) => r.type),
        [Rep.ERR_POLICY],
      );
      n.send(Opt.EXPORT_NAME, Buffer.from('a'));
      await assert.rejects(n.result, (err: unknown) => err instanceof ProtocolError && err.reason === ProtocolErrorReason.AccessDenied);
    }
  });

  it('with TLS optional, tells a plain client that exports need TLS and lists none', async () => {
    const n = new Negotiation({ registry: registry(), tls: 'on', access: ACCESS });
    await n.start();
    assert.deepEqual(serverNames(await n.ask(Opt.LIST)), []);
    assert.deepEqual(
      (await n.ask(Opt.GO, infoRequest('a'))).map((r) => r.type),
      [Rep.ERR_TLS_REQD],
    );
  });
});

describe('negotiation of structured replies and metadata contexts', () => {
  it('lists base:allocation for an empty query or the base: namespace and ignores unknown namespaces', async () => {
    const n = new Negotiation({ registry: registry() });
    await n.start();
    assert.equal((await n.ask(Opt.STRUCTURED_REPLY)).at(-1)?.type, Rep.ACK);
    const contexts = (replies: OptionReply[]): string[] =>
      replies.filter((r) => r.type === Rep.META_CONTEXT).map((r) => r.data.subarray(4).toString('utf8'));
    assert.deepEqual(contexts(await n.ask(Opt.LIST_META_CONTEXT, metaContextRequest('a', []))), ['base:allocation']);
    assert.deepEqual(contexts(await n.ask(Opt.LIST_META_CONTEXT, metaContextRequest('a', ['base:']))), ['base:allocation']);
    assert.deepEqual(contexts(await n.ask(Opt.LIST_META_CONTEXT, metaContextRequest('a', ['qemu:dirty-bitmap:x']))), []);
    assert.deepEqual(
      (await n.ask(Opt.LIST_META_CONTEXT, metaContextRequest('nope', []))).map((r) => r.type),
      [Rep.ERR_UNKNOWN],
    );
    const truncated = metaContextRequest('a', ['base:allocation']).subarray(0, 14);
    assert.deepEqual(
      (await n.ask(Opt.LIST_META_CONTEXT, truncated)).map((r) => r.type),
      [Rep.ERR_INVALID],
    );
  });

  it('selects base:allocation for the export named in SET_META_CONTEXT only', async () => {
    const selected = async (setName: string, goName: string, queries: readonly string[]): Promise<number | undefined> => {
      const n = new Negotiation({ registry: registry() });
      await n.start();
      await n.ask(Opt.STRUCTURED_REPLY);
      const set = await n.ask(Opt.SET_META_CONTEXT, metaContextRequest(setName, queries));
      assert.equal(set.at(-1)?.type, Rep.ACK);
      assert.equal((await n.ask(Opt.GO, infoRequest(goName))).at(-1)?.type, Rep.ACK);
      const result = await n.result;
      assert.ok(result.kind === 'transmission');
      assert.equal(result.session.structuredReplies, true);
      return result.session.allocationContext;
    };
    assert.equal(await selected('a', 'a', ['base:allocation']), 1);
    assert.equal(await selected('a', 'b', ['base:allocation']), undefined, 'contexts belong to the export they were set for');
    assert.equal(await selected('a', 'a', ['base:']), undefined, 'the namespace alone selects nothing in SET');
    assert.equal(await selected('a', 'a', []), undefined);
  });

  it('drops an earlier selection when a later SET_META_CONTEXT fails', async () => {
    const n = new Negotiation({ registry: registry() });
    await n.start();
    await n.ask(Opt.STRUCTURED_REPLY);
    assert.equal((await n.ask(Opt.SET_META_CONTEXT, metaContextRequest('a', ['base:allocation']))).at(-1)?.type, Rep.ACK);
    assert.deepEqual(
      (await n.ask(Opt.SET_META_CONTEXT, Buffer.alloc(3))).map((r) => r.type),
      [Rep.ERR_INVALID],
    );
    await n.ask(Opt.GO, infoRequest('a'));
    const result = await n.result;
    assert.ok(result.kind === 'transmission');
    assert.equal(result.session.allocationContext, undefined);
  });

  it('advertises SEND_CACHE, and SEND_DF only with structured replies; describes an export by name and size', async () => {
    const n = new Negotiation({ registry: registry() });
    await n.start();
    const flagsOf = (replies: OptionReply[]): number =>
      replies.find((r) => r.type === Rep.INFO && r.data.readUInt16BE(0) === Info.EXPORT)!.data.readUInt16BE(10);
    const simple = await n.ask(Opt.INFO, infoRequest('b', [Info.DESCRIPTION]));
    assert.notEqual(flagsOf(simple) & TransmissionFlag.SEND_CACHE, 0);
    assert.equal(flagsOf(simple) & TransmissionFlag.SEND_DF, 0);
    const description = simple.find((r) => r.type === Rep.INFO && r.data.readUInt16BE(0) === Info.DESCRIPTION);
    assert.equal(description?.data.subarray(2).toString('utf8'), 'Holdfast volume b, 4 MiB');
    await n.ask(Opt.STRUCTURED_REPLY);
    assert.notEqual(flagsOf(await n.ask(Opt.INFO, infoRequest('b'))) & TransmissionFlag.SEND_DF, 0);
  });
});
