import { Buffer } from 'node:buffer';
import type { PayloadSink } from './frame-source.js';

/** Pieces waiting before small ones are copied together (a stream that is not read, or a burst of small writes). */
export const COALESCE_AFTER = 8;
/** Largest piece copied into a shared buffer rather than queued as it is. */
export const COALESCE_MAX_BYTES = 512;
/** The first shared buffer of a run of small pieces; each next one of the run is twice as large, up to 16 KiB. */
const FIRST_RUN_BUFFER_BYTES = 1024;
const MAX_RUN_BUFFER_BYTES = 16 * 1024;

/**
 * A stream's bytes waiting to be sent, in the order written: Buffers, and ASCII text kept as the string (as many
 * bytes as characters) until its frame is built — then copied into the writer's slab, with no buffer of its own
 * and no second copy. The writer takes them front first, cut to frame size, as views and slices. The stream keeps
 * the byte count; the queue only its pieces.
 *
 * A backlog of small pieces is copied together. A queued piece costs ≈ 80–90 B of heap besides its bytes, so a peer
 * not reading a reply of many one-byte values pinned ten times the bytes it was charged for (a hostile-peer trial:
 * ≈ 180 MiB per connection against a 16 MiB reply budget). Once {@link COALESCE_AFTER} pieces wait, a run of two or
 * more pieces of at most {@link COALESCE_MAX_BYTES} goes into a shared buffer whose filled part is the last queued
 * piece (1 KiB, then doubling up to 16 KiB). A run that ends with its buffer less than half full keeps an exact copy
 * instead, so small pieces between large ones (the header of each value over 4 KiB) cost their bytes, not a buffer
 * each (found in review). The common case — a piece or two queued until the writer's turn — is not copied.
 */
export class SendQueue {
  // Most streams queue one piece at a time (a unary call's request or reply): it waits in `#first`, and the array
  // is made only once two pieces are queued together (then kept: a stream that queued two will again).
  #first: Buffer | string | null = null;
  #pieces: Array<Buffer | string> | null = null;
  #head = 0; // pieces of the array before it were taken
  #offset = 0; // bytes of the head piece (or of `#first`) already taken
  // The run of small pieces under way: its buffer, whose filled part (`#runEnd` bytes) is the array's last piece.
  #run: Buffer | null = null;
  #runEnd = 0;
  #nextRunBytes = FIRST_RUN_BUFFER_BYTES;

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
      const small = length <= COALESCE_MAX_BYTES && pieces.length - this.#head >= COALESCE_AFTER;
      if (small && (this.#run !== null || pieces[pieces.length - 1].length <= COALESCE_MAX_BYTES)) this.#append(pieces, piece, length);
      else {
        this.#endRun(pieces);
        pieces.push(piece);
      }
    } else if (this.#first === null) this.#first = piece;
    else {
      this.#pieces = [this.#first, piece]; // `#offset` carries over: the head is still the first piece
      this.#first = null;
    }
    return length;
  }

  /**
   * Copies a small piece onto the end of the run's buffer, which stays the array's last piece (a longer view; the
   * last piece may be partly taken already: `#offset` counts from the view's start, which does not move). A run
   * starts with the small piece queued before it, copied in first.
   */
  #append(pieces: Array<Buffer | string>, piece: Buffer | string, length: number): void {
    if (this.#run === null) {
      const last = pieces[pieces.length - 1];
      this.#newBuffer(pieces, last.length + length, false);
      this.#copy(last);
    } else if (this.#runEnd + length > this.#run.length) {
      this.#endBuffer(pieces);
      this.#newBuffer(pieces, length, true);
    }
    this.#copy(piece);
    pieces[pieces.length - 1] = this.#run!.subarray(0, this.#runEnd);
  }

  #newBuffer(pieces: Array<Buffer | string>, needed: number, ownPiece: boolean): void {
    const bytes = Math.max(this.#nextRunBytes, needed);
    this.#nextRunBytes = Math.min(2 * bytes, MAX_RUN_BUFFER_BYTES);
    this.#run = Buffer.allocUnsafeSlow(bytes);
    this.#runEnd = 0;
    if (ownPiece) pieces.push(this.#run.subarray(0, 0)); // filled by the caller
  }

  #copy(piece: Buffer | string): void {
    const run = this.#run!;
    if (typeof piece === 'string') run.write(piece, this.#runEnd, piece.length, 'latin1');
    else run.set(piece, this.#runEnd);
    this.#runEnd += piece.length;
  }

  /** A run ended (a large piece follows, or the queue emptied): its buffer is done. */
  #endRun(pieces: Array<Buffer | string>): void {
    if (this.#run === null) return;
    this.#endBuffer(pieces);
    this.#run = null;
    this.#nextRunBytes = FIRST_RUN_BUFFER_BYTES;
  }

  /** A buffer less than half full gives way to an exact copy of its filled part (the array's last piece). */
  #endBuffer(pieces: Array<Buffer | string>): void {
    const run = this.#run!;
    if (this.#runEnd * 2 < run.length) pieces[pieces.length - 1] = Buffer.from(run.subarray(0, this.#runEnd));
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
      this.#run = null; // its piece was taken: the next run starts afresh
      this.#nextRunBytes = FIRST_RUN_BUFFER_BYTES;
      pieces.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= pieces.length) {
      // A queue that never empties (a feed held back by the window) must not grow its dead prefix forever.
      pieces.splice(0, this.#head);
      this.#head = 0;
    }
  }
}
