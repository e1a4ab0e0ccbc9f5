// Transmission and option replies as wire bytes; the request side is codec.ts's RequestParser.
import {
  Errno,
  OPTION_REPLY_HEADER_SIZE,
  REP_MAGIC,
  ReplyFlag,
  ReplyType,
  SIMPLE_REPLY_HEADER_SIZE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
  TWO_POW_32,
} from './constants.js';

/** The 16-byte simple reply header; a successful READ's data follows it on the wire. */
export function encodeSimpleReply(error: Errno, handleHi: number, handleLo: number): Buffer {
  // Not reused: the socket may hold it until the kernel takes it. allocUnsafe draws from the pool.
  const header = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_SIZE);
  header.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  header.writeUInt32BE(error, 4);
  header.writeUInt32BE(handleHi, 8);
  header.writeUInt32BE(handleLo, 12);
  return header;
}

/**
 * A structured reply chunk header followed by `room` bytes for the caller to fill (a READ's offset,
 * an error's fields); `payloadLength` counts them and anything written after this buffer.
 */
export function encodeStructuredHeader(type: number, handleHi: number, handleLo: number, payloadLength: number, room: number): Buffer {
  const chunk = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + room);
  chunk.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  chunk.writeUInt16BE(ReplyFlag.DONE, 4);
  chunk.writeUInt16BE(type, 6);
  chunk.writeUInt32BE(handleHi, 8);
  chunk.writeUInt32BE(handleLo, 12);
  chunk.writeUInt32BE(payloadLength, 16);
  return chunk;
}

/** Structured READ reply: one final OFFSET_DATA chunk; `length` data bytes follow this header. */
export function encodeReadChunkHeader(handleHi: number, handleLo: number, offset: number, length: number): Buffer {
  const header = encodeStructuredHeader(ReplyType.OFFSET_DATA, handleHi, handleLo, 8 + length, 8);
  writeUInt64(header, offset, STRUCTURED_REPLY_HEADER_SIZE);
  return header;
}

/** A final NBD_REPLY_TYPE_ERROR chunk carrying `error` and a message for people. */
export function encodeErrorChunk(error: Errno, handleHi: number, handleLo: number, message: Buffer): Buffer {
  const chunk = encodeStructuredHeader(ReplyType.ERROR, handleHi, handleLo, 6 + message.length, 6 + message.length);
  chunk.writeUInt32BE(error, STRUCTURED_REPLY_HEADER_SIZE);
  chunk.writeUInt16BE(message.length, STRUCTURED_REPLY_HEADER_SIZE + 4);
  message.copy(chunk, STRUCTURED_REPLY_HEADER_SIZE + 6);
  return chunk;
}

/** A final NBD_REPLY_TYPE_BLOCK_STATUS chunk: (length, flags) descriptors for one metadata context. */
export function encodeBlockStatusChunk(
  handleHi: number,
  handleLo: number,
  contextId: number,
  descriptors: readonly { readonly length: number; readonly flags: number }[],
): Buffer {
  const size = 4 + 8 * descriptors.length;
  const chunk = encodeStructuredHeader(ReplyType.BLOCK_STATUS, handleHi, handleLo, size, size);
  let at = STRUCTURED_REPLY_HEADER_SIZE;
  chunk.writeUInt32BE(contextId, at);
  at += 4;
  for (const descriptor of descriptors) {
    chunk.writeUInt32BE(descriptor.length, at);
    chunk.writeUInt32BE(descriptor.flags, at + 4);
    at += 8;
  }
  return chunk;
}

/** A fixed-newstyle option reply: header and payload in one buffer. */
export function encodeOptionReply(option: number, replyType: number, payload?: Buffer): Buffer {
  const length = payload?.length ?? 0;
  const reply = Buffer.allocUnsafe(OPTION_REPLY_HEADER_SIZE + length);
  reply.writeBigUInt64BE(REP_MAGIC, 0);
  reply.writeUInt32BE(option, 8);
  reply.writeUInt32BE(replyType, 12);
  reply.writeUInt32BE(length, 16);
  payload?.copy(reply, OPTION_REPLY_HEADER_SIZE);
  return reply;
}

export function writeUInt64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_POW_32), at);
  buf.writeUInt32BE(value % TWO_POW_32, at + 4);
}
