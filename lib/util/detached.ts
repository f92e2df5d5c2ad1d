import { Buffer } from 'node:buffer';

const EMPTY = Buffer.alloc(0);

/**
 * `view`, or a copy of it when it views less than `share` of its memory (three quarters unless told). A view keeps
 * its whole ArrayBuffer alive — a socket read, up to 64 KiB — so bytes a peer sent that we go on holding (a partial
 * message, a queued item, a piece of a byte stream nobody reads yet) would pin every read they arrived in, beyond what
 * the budgets count: a peer sending one byte per read to a stalled call beside data that is consumed pinned 64 KiB
 * per byte (docs/NOTES.md, "Views that pinned whole reads"). A view of at least `share` of its memory is kept (at most
 * 1 / `share` of its bytes pinned); a copy owns exactly its bytes (not a slice of Node's shared 8 KiB pool, which a
 * held byte would pin too).
 */
export function detached(view: Buffer, share = 3 / 4): Buffer {
  if (view.length >= view.buffer.byteLength * share) return view;
  if (view.length === 0) return EMPTY;
  const copy = Buffer.allocUnsafeSlow(view.length);
  view.copy(copy);
  return copy;
}
