import { Buffer } from 'node:buffer';
import type { PayloadSink } from './frame-source.js';

/**
 * A stream's bytes waiting to be sent, in the order written: Buffers, and ASCII text kept as the string (as many
 * bytes as characters) until its frame is built — then copied into the writer's slab, with no buffer of its own
 * and no second copy. The writer takes them front first, cut to frame size, as views and slices: payload bytes
 * are never copied here. The stream keeps the byte count; the queue only its pieces.
 */
export class SendQueue {
  readonly #pieces: Array<Buffer | string> = [];
  #head = 0; // pieces before it were taken
  #offset = 0; // bytes of the head piece already taken

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
    if (length > 0) this.#pieces.push(piece);
    return length;
  }

  /**
   * Hands the first `n` queued bytes to `sink` (a view or slice where a piece is cut). `left` is what stays queued
   * after them, which the stream counts: at 0 the queue starts over.
   */
  take(n: number, left: number, sink: PayloadSink): void {
    const pieces = this.#pieces;
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
