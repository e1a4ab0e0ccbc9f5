/** Whether the memory under `view` was handed back (its ArrayBuffer detached, every view of it empty). */
export function detached(view: Buffer): boolean {
  return view.buffer instanceof ArrayBuffer && view.buffer.detached;
}
