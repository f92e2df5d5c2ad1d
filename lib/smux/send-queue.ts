import { Buffer } from 'node:buffer';
import type { PayloadSink } from './frame-source.js';

/** Pieces waiting before small ones are copied together (a stream that is not read, or a burst of small writes). */
export const COALESCE_AFTER = 8;
/** Largest piece copied into a shared buffer rather than queued as it is. */
export const COALESCE_MAX_BYTES = 512;
/** Size of the buffers small pieces are copied into. */
const COALESCE_BUFFER_BYTES = 16 * 1024;

/**
 * A stream's bytes waiting to be sent, in the order written: Buffers, and ASCII text kept as the string (as many
 * bytes as characters) until its frame is built — then copied into the writer's slab, with no buffer of its own
 * and no second copy. The writer takes them front first, cut to frame size, as views and slices. The stream keeps
 * the byte count; the queue only its pieces.
 *
 * A backlog of small pieces is copied together: once {@link COALESCE_AFTER} pieces wait, a piece of at most
 * {@link COALESCE_MAX_BYTES} is appended to a 16 KiB buffer whose filled part is the last queued piece. A queued
 * piece costs ≈ 80–90 B of heap besides its bytes, so a peer that does not read a reply of many one-byte values
 * pinned ten times the bytes it was charged for (a hostile-peer trial: ≈ 180 MiB per connection against a 16 MiB
 * reply budget); copied together they cost their bytes. The common case — a piece or two queued until the writer's
 * turn — is not copied.
 */
export class SendQueue {
  // Most streams queue one piece at a time (a unary call's request or reply): it waits in `#first`, and the array
  // is made only once two pieces are queued together (then kept: a stream that queued two will again).
  #first: Buffer | string | null = null;
  #pieces: Array<Buffer | string> | null = null;
  #head = 0; // pieces of the array before it were taken
  #offset = 0; // bytes of the head piece (or of `#first`) already taken
  #tail: Buffer | null = null; // where small pieces are copied; its filled part is the array's last piece
  #tailEnd = 0;

  /** Queues `data` (text: other than ASCII is encoded now) and returns its length in bytes; nothing for 0 bytes. */
  push(data: Uint8Array | string): number {
    let piece: Buffer | string;
    let length: number;
    if (typeof data === 'string') {
      length = Buffer.byteLength(data);
      piece = length === data.length ? data : Buffer.from(data, 'utf8');
    } else {
      length = data.byteLength;
      piece = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, length);
    }
    if (length === 0) return 0;
    const pieces = this.#pieces;
    if (pieces !== null) {
      if (length <= COALESCE_MAX_BYTES && pieces.length - this.#head >= COALESCE_AFTER) this.#append(pieces, piece, length);
      else {
        pieces.push(piece);
        this.#tail = null; // a piece of its own follows the shared buffer: later small ones start another
      }
    } else if (this.#first === null) this.#first = piece;
    else {
      this.#pieces = [this.#first, piece]; // `#offset` carries over: the head is still the first piece
      this.#first = null;
    }
    return length;
  }

  /**
   * Copies a small piece onto the end of the shared buffer, which stays the array's last piece (a longer view).
   * `#tail` is set only while the array's last piece is its view: any other push clears it, and that view, being
   * last, is taken whole only with everything queued — the queue then starts over, and its next push clears it.
   */
  #append(pieces: Array<Buffer | string>, piece: Buffer | string, length: number): void {
    let tail = this.#tail;
    if (tail === null || this.#tailEnd + length > tail.length) {
      tail = this.#tail = Buffer.allocUnsafeSlow(COALESCE_BUFFER_BYTES);
      this.#tailEnd = 0;
      pieces.push(tail.subarray(0, 0)); // filled below
    }
    if (typeof piece === 'string') tail.write(piece, this.#tailEnd, length, 'latin1');
    else tail.set(piece, this.#tailEnd);
    this.#tailEnd += length;
    // The last piece may be partly taken already: `#offset` counts from the view's start, which does not move.
    pieces[pieces.length - 1] = tail.subarray(0, this.#tailEnd);
  }

  /**
   * Hands the first `n` queued bytes to `sink` (a view or slice where a piece is cut). `left` is what stays queued
   * after them, which the stream counts: at 0 the queue starts over.
   */
  take(n: number, left: number, sink: PayloadSink): void {
    const first = this.#first;
    if (first !== null) {
      // The only piece: `n` is at most what is left of it.
      const start = this.#offset;
      const end = start + n;
      const whole = end >= first.length;
      if (typeof first === 'string') sink.appendText(start === 0 && whole ? first : first.slice(start, end));
      else sink.appendPayload(start === 0 && whole ? first : first.subarray(start, end));
      if (whole) {
        this.#first = null;
        this.#offset = 0;
      } else this.#offset = end;
      return;
    }
    const pieces = this.#pieces!;
    let wanted = n;
    while (wanted > 0) {
      const piece = pieces[this.#head];
      const start = this.#offset;
      const available = piece.length - start;
      const whole = available <= wanted;
      const end = whole ? piece.length : start + wanted;
      if (typeof piece === 'string') sink.appendText(start === 0 && whole ? piece : piece.slice(start, end));
      else sink.appendPayload(start === 0 && whole ? piece : piece.subarray(start, end));
      if (whole) {
        wanted -= available;
        pieces[this.#head++] = undefined as unknown as Buffer;
        this.#offset = 0;
      } else {
        this.#offset += wanted;
        wanted = 0;
      }
    }
    if (left === 0) {
      pieces.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= pieces.length) {
      // A queue that never empties (a feed held back by the window) must not grow its dead prefix forever.
      pieces.splice(0, this.#head);
      this.#head = 0;
    }
  }
}
