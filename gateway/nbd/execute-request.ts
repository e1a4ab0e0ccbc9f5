/** What each NBD command does to the export once it is validated and admitted. */
import { allocationDescriptors } from './block-status.js';
import type { NbdRequest } from './codec.js';
import { encodeBlockStatusChunk } from './reply-encoding.js';
import { Cmd, CmdFlag } from './constants.js';
import { ExportContractError } from './errors.js';
import type { NbdExport, RequestContext } from './export.js';
import type { Session } from './handshake.js';

/** A finished request's answer. */
export type Outcome =
  { readonly kind: 'done' } | { readonly kind: 'data'; readonly data: Buffer } | { readonly kind: 'status'; readonly chunk: Buffer };

export const DONE: Outcome = { kind: 'done' };

/** Runs a validated request against the export: its reply's data, block status, or nothing. */
export async function executeRequest(exp: NbdExport, request: NbdRequest, ctx: RequestContext, session: Session): Promise<Outcome> {
  const { offset, length } = request;
  const fua = (request.flags & CmdFlag.FUA) !== 0;
  switch (request.type) {
    case Cmd.READ: {
      const data = await exp.read(offset, length, ctx);
      // A short buffer would desynchronise the stream: the client reads exactly `length` bytes.
      if (!Buffer.isBuffer(data) || data.length !== length) {
        const got = Buffer.isBuffer(data) ? `${data.length} bytes` : typeof data;
        throw new ExportContractError(`export ${exp.name} returned ${got} for a ${length}-byte read`);
      }
      return { kind: 'data', data };
    }
    case Cmd.WRITE: {
      const payload = request.payload;
      if (payload === undefined) throw new ExportContractError('WRITE reached the export without its payload');
      await exp.write(offset, payload, fua, ctx);
      return DONE;
    }
    case Cmd.FLUSH:
      await exp.flush(ctx);
      return DONE;
    case Cmd.TRIM:
      await exp.trim(offset, length, fua, ctx);
      return DONE;
    case Cmd.WRITE_ZEROES:
      // FAST_ZERO needs no special case: zeroes are journal records, always faster than the equivalent write.
      await exp.writeZeroes(offset, length, { fua, noHole: (request.flags & CmdFlag.NO_HOLE) !== 0 }, ctx);
      return DONE;
    case Cmd.CACHE:
      await exp.prefetch(offset, length, ctx);
      return DONE;
    case Cmd.BLOCK_STATUS: {
      const extents = await exp.allocation(offset, length, ctx);
      const descriptors = allocationDescriptors(extents, length, (request.flags & CmdFlag.REQ_ONE) !== 0);
      const context = session.allocationContext ?? 0;
      return { kind: 'status', chunk: encodeBlockStatusChunk(request.handleHi, request.handleLo, context, descriptors) };
    }
    default:
      // validate() lets nothing else through.
      throw new ExportContractError(`command ${request.wireType} reached execution`);
  }
}
