import { Buffer } from 'node:buffer';
import { Fifo } from '../util/fifo.js';

/** A piece at least this large that is at least three quarters of its memory is held as it is (a view). */
export const HOLD_VIEW_MIN_BYTES = 1024;
/** The first buffer small pieces are copied into; each next one of a run is twice as large, up to 16 KiB. */
const FIRST_BUFFER = 256;
const LARGEST_BUFFER = 16 * 1024;

/**
 * What a paused stream received and has not delivered yet, in order. A PSH payload is a view of the socket read it
 * came in, and a view keeps its whole read alive: a peer sending one byte per 64 KiB read to a paused stream beside
 * data that is consumed pinned 64 KiB per byte held, and a held piece costs ≈ 100 B of heap however small it is.
 * So a piece is held as it is only when it is at least {@link HOLD_VIEW_MIN_BYTES} and three quarters of its memory; the
 * others are copied into buffers of our own, one run of small pieces per buffer (256 B, doubling up to 16 KiB), and
 * delivered as one piece each. The budgets count bytes; this keeps the memory behind them within about 3× of them.
 */
export class HeldPieces {
  readonly #pieces = new Fifo<Buffer>(); // older than the run being copied
  #run: Buffer | null = null; // the buffer small pieces are being copied into (the newest piece held)
  #runBytes = 0; // bytes copied into it
  #lastBuffer = 0; // size of the last buffer made for a run (0 after a piece held as it is)

  /** Pieces held (a run of copied small pieces counts once). */
  get length(): number {
    return this.#pieces.length + (this.#run === null ? 0 : 1);
  }

  /** Holds `piece` (after those held before it). */
  push(piece: Buffer): void {
    if (piece.length >= HOLD_VIEW_MIN_BYTES && piece.length * 4 >= piece.buffer.byteLength * 3) {
      this.#endRun();
      this.#lastBuffer = 0;
      this.#pieces.push(piece);
      return;
    }
    const run = this.#run;
    if (run !== null && this.#runBytes + piece.length <= run.length) {
      piece.copy(run, this.#runBytes);
      this.#runBytes += piece.length;
      return;
    }
    this.#endRun();
    const size = Math.max(piece.length, Math.min(LARGEST_BUFFER, Math.max(FIRST_BUFFER, 2 * this.#lastBuffer)));
    this.#run = Buffer.allocUnsafeSlow(size);
    this.#runBytes = piece.copy(this.#run, 0);
    this.#lastBuffer = size;
  }

  /** Takes the oldest piece held. */
  shift(): Buffer | undefined {
    if (this.#pieces.length > 0) return this.#pieces.shift();
    const run = this.#run;
    if (run === null) return undefined;
    this.#run = null;
    return run.subarray(0, this.#runBytes);
  }

  #endRun(): void {
    if (this.#run === null) return;
    this.#pieces.push(this.#run.subarray(0, this.#runBytes));
    this.#run = null;
  }
}
