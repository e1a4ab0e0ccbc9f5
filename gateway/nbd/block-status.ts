import { AllocationState } from './constants.js';
import { ExportContractError } from './errors.js';
import type { AllocationExtent } from './export.js';

/** One NBD_REPLY_TYPE_BLOCK_STATUS descriptor. */
export interface StatusDescriptor {
  readonly length: number;
  readonly flags: number;
}

/**
 * Descriptors per reply at most: 32 KiB of reply whatever the export's fragmentation. The spec lets
 * a reply cover less than asked; clients ask again from where it ended.
 */
export const MAX_DESCRIPTORS = 4096;

function stateFlags(extent: AllocationExtent): number {
  return (extent.hole ? AllocationState.HOLE : 0) | (extent.zero ? AllocationState.ZERO : 0);
}

/**
 * The base:allocation descriptors answering a BLOCK_STATUS of `length` bytes: the export's extents
 * cut to the request, neighbours with equal flags merged, at most MAX_DESCRIPTORS (one with
 * REQ_ONE). Throws ExportContractError when the extents cover nothing.
 */
export function allocationDescriptors(extents: readonly AllocationExtent[], length: number, reqOne: boolean): StatusDescriptor[] {
  const out: { length: number; flags: number }[] = [];
  const limit = reqOne ? 1 : MAX_DESCRIPTORS;
  let covered = 0;
  for (const extent of extents) {
    if (covered >= length) break;
    if (!Number.isSafeInteger(extent.length) || extent.length <= 0) {
      throw new ExportContractError(`allocation extent of ${String(extent.length)} bytes`);
    }
    const take = Math.min(extent.length, length - covered);
    const flags = stateFlags(extent);
    const last = out.at(-1);
    if (last !== undefined && last.flags === flags) {
      last.length += take;
    } else {
      if (out.length === limit) break;
      out.push({ length: take, flags });
    }
    covered += take;
  }
  if (out.length === 0) throw new ExportContractError('allocation returned no extent');
  return out;
}
