import { IHAVEOPT } from '../../gateway/nbd/constants.js';

/** An option as a client sends it; `declaredLength` may lie, `magic` may be wrong, for tests of bad input. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0), declaredLength = data.length, magic = IHAVEOPT): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(magic, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(declaredLength, 12);
  return Buffer.concat([header, data]);
}

/** The data of NBD_OPT_INFO and NBD_OPT_GO: the export name and the information requested. */
export function infoRequest(name: string, infos: readonly number[] = []): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  const data = Buffer.alloc(4 + bytes.length + 2 + 2 * infos.length);
  data.writeUInt32BE(bytes.length, 0);
  bytes.copy(data, 4);
  data.writeUInt16BE(infos.length, 4 + bytes.length);
  infos.forEach((info, i) => data.writeUInt16BE(info, 6 + bytes.length + 2 * i));
  return data;
}

/** The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
export function metaContextRequest(name: string, queries: readonly string[]): Buffer {
  const parts = [Buffer.alloc(4), Buffer.from(name, 'utf8'), Buffer.alloc(4)];
  parts[0]!.writeUInt32BE(parts[1]!.length);
  parts[2]!.writeUInt32BE(queries.length);
  for (const query of queries) {
    const length = Buffer.alloc(4);
    const bytes = Buffer.from(query, 'utf8');
    length.writeUInt32BE(bytes.length);
    parts.push(length, bytes);
  }
  return Buffer.concat(parts);
}
