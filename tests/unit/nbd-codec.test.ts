import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RequestParser, type NbdRequest, type PayloadCounters, type RequestSink } from '../../gateway/nbd/codec.js';
import { encodeOptionReply, encodeSimpleReply, writeUInt64 } from '../../gateway/nbd/reply-encoding.js';
import { Cmd, CmdFlag, Errno, Opt, Rep, REQUEST_MAGIC, TransmissionFlag } from '../../gateway/nbd/constants.js';
import { errnoFor, ProtocolError, ProtocolErrorReason } from '../../gateway/nbd/errors.js';
import { transmissionFlags } from '../../gateway/nbd/handshake.js';
import { InvalidArgumentError, JournalIoError, ReadOnlyError, RequestAbortedError } from '../../shared/errors.js';
import { MemoryExport } from '../helpers/memory-export.js';

interface RequestSpec {
  readonly type: number;
  readonly flags?: number;
  readonly handle?: bigint;
  readonly offset?: number;
  readonly length?: number;
  readonly payload?: Buffer;
  readonly magic?: number;
}

function encodeRequest(spec: RequestSpec): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  const frame = Buffer.alloc(28 + payload.length);
  frame.writeUInt32BE(spec.magic ?? REQUEST_MAGIC, 0);
  frame.writeUInt16BE(spec.flags ?? 0, 4);
  frame.writeUInt16BE(spec.type, 6);
  frame.writeBigUInt64BE(spec.handle ?? 0n, 8);
  frame.writeBigUInt64BE(BigInt(spec.offset ?? 0), 16);
  frame.writeUInt32BE(spec.length ?? payload.length, 24);
  payload.copy(frame, 28);
  return frame;
}

function handleOf(request: NbdRequest): bigint {
  return (BigInt(request.handleHi) << 32n) | BigInt(request.handleLo);
}

function pattern(length: number, seed: number): Buffer {
  const data = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) data[i] = (i * 31 + seed) & 0xff;
  return data;
}

/** Splits `data` into pieces of the given sizes (the last piece takes the rest). */
function split(data: Buffer, ...sizes: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let at = 0;
  for (const size of sizes) {
    pieces.push(Buffer.from(data.subarray(at, at + size)));
    at += size;
  }
  pieces.push(Buffer.from(data.subarray(at)));
  return pieces;
}

class RecordingSink implements RequestSink {
  readonly requests: NbdRequest[] = [];
  readonly protocolErrors: ProtocolError[] = [];
  readonly eofs: boolean[] = [];
  refuse: (request: NbdRequest) => Errno = () => Errno.OK;
  admission: (request: NbdRequest) => boolean = () => true;
  onEach: (request: NbdRequest) => void = () => undefined;

  validate(request: NbdRequest): Errno {
    return this.refuse(request);
  }

  admit(request: NbdRequest): boolean {
    return this.admission(request);
  }

  onRequest(request: NbdRequest): void {
    this.requests.push(request);
    this.onEach(request);
  }

  onProtocolError(error: ProtocolError): void {
    this.protocolErrors.push(error);
  }

  onEof(midFrame: boolean): void {
    this.eofs.push(midFrame);
  }
}

function setup(): { sink: RecordingSink; counters: PayloadCounters; parser: RequestParser } {
  const sink = new RecordingSink();
  const counters: PayloadCounters = { payloadBytesAssembled: 0, payloadBytesSkipped: 0 };
  return { sink, counters, parser: new RequestParser(sink, counters) };
}

describe('RequestParser', () => {
  it('parses every header field, including 64-bit handle and offset', () => {
    const { sink, parser } = setup();
    parser.push(encodeRequest({ type: Cmd.READ, flags: CmdFlag.FUA, handle: 0xdeadbeef01020304n, offset: 5 * 2 ** 32 + 7, length: 65536 }));
    assert.equal(sink.requests.length, 1);
    const [request] = sink.requests;
    assert.ok(request !== undefined);
    assert.equal(request.type, Cmd.READ);
    assert.equal(request.flags, CmdFlag.FUA);
    assert.equal(handleOf(request), 0xdeadbeef01020304n);
    assert.equal(request.offset, 5 * 2 ** 32 + 7);
    assert.equal(request.length, 65536);
    assert.equal(request.payload, undefined);
  });

  it('assembles a header delivered one byte at a time', () => {
    const { sink, parser } = setup();
    const frame = encodeRequest({ type: Cmd.TRIM, handle: 42n, offset: 4096, length: 8192 });
    for (let i = 0; i < frame.length; i++) {
      assert.equal(sink.requests.length, 0, `request delivered after only ${i} bytes`);
      parser.push(frame.subarray(i, i + 1));
    }
    assert.equal(sink.requests.length, 1);
    assert.equal(sink.requests[0]?.type, Cmd.TRIM);
    assert.equal(sink.requests[0].offset, 4096);
    assert.equal(sink.requests[0].length, 8192);
    assert.equal(handleOf(sink.requests[0]), 42n);
  });

  it('parses several requests from one chunk and hands an enclosed payload on without copying', () => {
    const { sink, counters, parser } = setup();
    const data = pattern(1000, 3);
    const chunk = Buffer.concat([
      encodeRequest({ type: Cmd.READ, handle: 1n, offset: 0, length: 512 }),
      encodeRequest({ type: Cmd.WRITE, handle: 2n, offset: 512, payload: data }),
      encodeRequest({ type: Cmd.FLUSH, handle: 3n }),
      encodeRequest({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.NO_HOLE, handle: 4n, offset: 0, length: 1 << 20 }),
    ]);
    parser.push(chunk);
    assert.deepEqual(sink.requests.map(handleOf), [1n, 2n, 3n, 4n]);
    assert.deepEqual(
      sink.requests.map((r) => r.type),
      [Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.WRITE_ZEROES],
    );
    const payload = sink.requests[1]?.payload;
    assert.ok(payload !== undefined);
    assert.deepEqual(payload, data);
    assert.equal(payload.buffer, chunk.buffer, 'payload inside one chunk must be a view of it');
    assert.equal(counters.payloadBytesAssembled, 0);
    assert.equal(sink.requests[3]?.flags, CmdFlag.NO_HOLE);
  });

  it('takes a payload that starts a new chunk as a view of that chunk', () => {
    const { sink, counters, parser } = setup();
    const data = pattern(4096, 9);
    parser.push(encodeRequest({ type: Cmd.WRITE, handle: 7n, length: data.length }));
    assert.equal(sink.requests.length, 0);
    const chunk = Buffer.from(data);
    parser.push(chunk);
    assert.equal(sink.requests.length, 1);
    assert.equal(sink.requests[0]?.payload?.buffer, chunk.buffer);
    assert.equal(counters.payloadBytesAssembled, 0);
  });

  it('assembles a payload split across chunks into one buffer it never touches again', () => {
    const { sink, counters, parser } = setup();
    const first = pattern(70000, 1);
    const second = pattern(5000, 2);
    const stream = Buffer.concat([
      encodeRequest({ type: Cmd.WRITE, handle: 10n, offset: 0, payload: first }),
      encodeRequest({ type: Cmd.WRITE, handle: 11n, offset: 0, payload: second }),
      encodeRequest({ type: Cmd.READ, handle: 12n, offset: 0, length: 10 }),
    ]);
    const pieces = split(stream, 100, 30000, 40000, 3);
    for (const piece of pieces) parser.push(piece);

    assert.deepEqual(sink.requests.map(handleOf), [10n, 11n, 12n]);
    const payload1 = sink.requests[0]?.payload;
    const payload2 = sink.requests[1]?.payload;
    assert.ok(payload1 !== undefined && payload2 !== undefined);
    assert.equal(payload1.length, first.length);
    assert.ok(
      pieces.every((piece) => piece.buffer !== payload1.buffer),
      'spanning payload must be its own buffer',
    );
    // Scribbling over the input chunks must not change payloads already handed on.
    for (const piece of pieces) piece.fill(0xee);
    assert.deepEqual(payload1, first);
    assert.deepEqual(payload2, second);
    assert.ok(counters.payloadBytesAssembled >= first.length);
  });

  it('skips the payload of a refused WRITE without buffering it and stays in sync', () => {
    const { sink, counters, parser } = setup();
    sink.refuse = (request) => (request.type === Cmd.WRITE ? Errno.EINVAL : Errno.OK);
    const big = pattern(200000, 5);
    const stream = Buffer.concat([
      encodeRequest({ type: Cmd.WRITE, handle: 20n, offset: 0, payload: big }),
      encodeRequest({ type: Cmd.READ, handle: 21n, offset: 4, length: 4 }),
    ]);
    for (const piece of split(stream, 10, 65536, 65536, 65536)) parser.push(piece);
    assert.deepEqual(sink.requests.map(handleOf), [20n, 21n]);
    assert.equal(sink.requests[0]?.error, Errno.EINVAL);
    assert.equal(sink.requests[0].payload, undefined);
    assert.equal(counters.payloadBytesSkipped, big.length);
    assert.equal(counters.payloadBytesAssembled, 0);
    assert.equal(sink.requests[1]?.type, Cmd.READ);
    assert.equal(sink.requests[1].error, 0);
  });

  it('stops at a bad magic and ignores everything after it', () => {
    const { sink, parser } = setup();
    parser.push(
      Buffer.concat([
        encodeRequest({ type: Cmd.READ, handle: 1n, length: 1 }),
        encodeRequest({ type: Cmd.READ, handle: 2n, length: 1, magic: 0x12345678 }),
        encodeRequest({ type: Cmd.READ, handle: 3n, length: 1 }),
      ]),
    );
    parser.push(encodeRequest({ type: Cmd.READ, handle: 4n, length: 1 }));
    assert.deepEqual(sink.requests.map(handleOf), [1n]);
    assert.equal(sink.protocolErrors.length, 1);
    assert.equal(sink.protocolErrors[0]?.reason, ProtocolErrorReason.BadMagic);
    assert.ok(parser.stopped);
  });

  it('pauses between two requests of one chunk and resumes where it stopped', () => {
    const { sink, parser } = setup();
    sink.onEach = (request) => {
      if (request.handleLo === 2) parser.pause();
    };
    const frames = [1, 2, 3, 4].map((n) => encodeRequest({ type: Cmd.FLUSH, handle: BigInt(n) }));
    parser.push(Buffer.concat(frames));
    assert.deepEqual(sink.requests.map(handleOf), [1n, 2n]);
    parser.push(encodeRequest({ type: Cmd.FLUSH, handle: 5n }));
    assert.equal(sink.requests.length, 2, 'a paused parser must not deliver newly pushed requests');
    parser.resume();
    assert.deepEqual(sink.requests.map(handleOf), [1n, 2n, 3n, 4n, 5n]);
  });

  it('reports EOF at a frame boundary as clean and inside a frame as truncated', () => {
    const clean = setup();
    clean.parser.push(encodeRequest({ type: Cmd.FLUSH }));
    clean.parser.end();
    assert.deepEqual(clean.sink.eofs, [false]);

    const halfHeader = setup();
    halfHeader.parser.push(encodeRequest({ type: Cmd.FLUSH }).subarray(0, 14));
    halfHeader.parser.end();
    assert.deepEqual(halfHeader.sink.eofs, [true]);

    const halfPayload = setup();
    halfPayload.parser.push(encodeRequest({ type: Cmd.WRITE, payload: pattern(100, 0) }).subarray(0, 28 + 50));
    halfPayload.parser.end();
    assert.deepEqual(halfPayload.sink.eofs, [true]);
    assert.equal(halfPayload.sink.requests.length, 0);
  });

  it('reports EOF only after a paused backlog has been parsed', () => {
    const { sink, parser } = setup();
    sink.onEach = () => {
      parser.pause();
    };
    parser.push(Buffer.concat([encodeRequest({ type: Cmd.FLUSH, handle: 1n }), encodeRequest({ type: Cmd.DISC, handle: 2n })]));
    parser.end();
    assert.deepEqual(sink.eofs, []);
    sink.onEach = () => undefined;
    parser.resume();
    assert.deepEqual(
      sink.requests.map((r) => r.type),
      [Cmd.FLUSH, Cmd.DISC],
    );
    assert.deepEqual(sink.eofs, [false]);
  });
});

describe('reply encoding', () => {
  it('encodes a simple reply header', () => {
    const header = encodeSimpleReply(Errno.ENOSPC, 0x01020304, 0xa0b0c0d0);
    assert.equal(header.toString('hex'), '67446698' + '0000001c' + '01020304' + 'a0b0c0d0');
  });

  it('encodes option replies with and without data', () => {
    assert.equal(encodeOptionReply(Opt.GO, Rep.ACK).toString('hex'), '0003e889045565a9' + '00000007' + '00000001' + '00000000');
    const withData = encodeOptionReply(Opt.LIST, Rep.ERR_INVALID, Buffer.from('bad'));
    assert.equal(withData.toString('hex'), '0003e889045565a9' + '00000003' + '80000003' + '00000003' + Buffer.from('bad').toString('hex'));
  });

  it('writes 64-bit sizes beyond 4 GiB', () => {
    const buf = Buffer.alloc(8);
    writeUInt64(buf, 2 ** 40 + 2 ** 32 + 5, 0);
    assert.equal(buf.readBigUInt64BE(0), 2n ** 40n + 2n ** 32n + 5n);
  });

  it('advertises READ_ONLY and CAN_MULTI_CONN only when the export says so', () => {
    const writable = transmissionFlags(new MemoryExport({ name: 'a', size: 4096, canMultiConn: false }));
    assert.equal(writable & TransmissionFlag.READ_ONLY, 0);
    assert.equal(writable & TransmissionFlag.CAN_MULTI_CONN, 0);
    assert.notEqual(writable & TransmissionFlag.SEND_FAST_ZERO, 0);
    const readOnly = transmissionFlags(new MemoryExport({ name: 'b', size: 4096, readOnly: true, canMultiConn: true }));
    assert.notEqual(readOnly & TransmissionFlag.READ_ONLY, 0);
    assert.notEqual(readOnly & TransmissionFlag.CAN_MULTI_CONN, 0);
  });
});

describe('errnoFor', () => {
  it('maps volume errors to NBD error numbers', () => {
    assert.equal(errnoFor(new ReadOnlyError('ro')), Errno.EPERM);
    assert.equal(errnoFor(new InvalidArgumentError('bad')), Errno.EINVAL);
    assert.equal(errnoFor(new RequestAbortedError('gone')), Errno.ESHUTDOWN);
    assert.equal(errnoFor(Object.assign(new Error('disk full'), { code: 'ENOSPC' })), Errno.ENOSPC);
    assert.equal(errnoFor(new JournalIoError('append failed', { cause: Object.assign(new Error('x'), { code: 'ENOSPC' }) })), Errno.ENOSPC);
    assert.equal(errnoFor(new JournalIoError('append failed', { cause: Object.assign(new Error('x'), { code: 'EIO' }) })), Errno.EIO);
    assert.equal(errnoFor(new Error('boom')), Errno.EIO);
    assert.equal(errnoFor('not even an error'), Errno.EIO);
  });
});

describe('RequestParser.disconnectBuffered', () => {
  const held = (): ReturnType<typeof setup> => {
    const parsed = setup();
    parsed.sink.admission = () => false;
    return parsed;
  };

  it('finds NBD_CMD_DISC behind requests waiting for admission, WRITE payloads skipped', () => {
    const { parser } = held();
    const payload = Buffer.alloc(5000, 0x02);
    // A payload holding what looks like a DISC header must not count.
    encodeRequest({ type: Cmd.DISC }).copy(payload, 100);
    parser.push(
      Buffer.concat([encodeRequest({ type: Cmd.WRITE, handle: 1n, payload }), encodeRequest({ type: Cmd.READ, handle: 2n, length: 10 })]),
    );
    assert.equal(parser.disconnectBuffered, false);
    parser.push(encodeRequest({ type: Cmd.DISC, handle: 3n }).subarray(0, 20));
    assert.equal(parser.disconnectBuffered, false, 'a header cut off is not a request yet');
    parser.push(encodeRequest({ type: Cmd.DISC, handle: 3n }).subarray(20));
    assert.equal(parser.disconnectBuffered, true);
  });

  it('does not count a DISC header still being received', () => {
    const { parser } = setup();
    parser.push(encodeRequest({ type: Cmd.DISC, handle: 9n }).subarray(0, 10));
    assert.equal(parser.disconnectBuffered, false);
  });
});
