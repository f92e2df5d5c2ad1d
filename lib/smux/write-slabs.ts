import { Buffer } from 'node:buffer';
import type { Writable } from 'node:stream';
import { HEADER_SIZE } from './constants.js';
import { writeHeader } from './frame.js';
import { Fifo } from '../util/fifo.js';

/** Payload bytes per socket write, so a bulk stream does not build one huge batch. */
export const BATCH_BYTES = 256 * 1024;
/**
 * Batches are packed — headers and payloads — into one contiguous slab segment and written with a single
 * `write()`. Measured on Node 20: a corked group of writes (header, payload, header, payload → writev) costs
 * about 26 µs of JavaScript per 64 KiB, a single 64 KiB write about 6.5 µs, and copying the payloads into one
 * buffer first costs no more than that. So payloads are copied here, once, instead of being passed as views.
 *
 * Slabs grow on demand: a writer starts with none, takes a {@link MIN_SLAB} one for its first batch, and doubles
 * (up to {@link MAX_SLAB}, which holds the largest batch: `BATCH_BYTES` plus one frame plus headers) when a batch
 * does not fit — so a session that only exchanges small calls holds 16 KiB, and a bulk stream 512 KiB, as before.
 * {@link WriteSlabs.trim} releases them once the writer has been idle (the session trims on every keep-alive
 * tick): an idle session holds no write buffer at all. Without keep-alive (no timer at all, as Go's
 * `KeepAliveDisabled` intends) {@link WriteSlabs.shrink} keeps at most one smallest slab once no stream is left.
 */
const MIN_SLAB = 16 * 1024;
const MAX_SLAB = 2 * BATCH_BYTES;

/** A write buffer and how many socket writes still reference it. */
interface Slab {
  readonly buf: Buffer;
  writes: number;
}

const NO_SLAB: Slab = { buf: Buffer.alloc(0), writes: 0 };

/**
 * The memory a {@link FrameWriter} packs its batches into: a slab being filled (`buf` from `pos` on) and a spare
 * one, never rewritten while a socket write may still reference it. The writer writes frames at `pos` itself
 * (the hot path: no call per payload piece), after asking for {@link WriteSlabs.room}.
 */
export class WriteSlabs {
  /** The slab the batch is packed into. */
  buf: Buffer = NO_SLAB.buf;
  /** Its next free byte. */
  pos = 0;
  #slab: Slab = NO_SLAB; // none until the first batch (see MIN_SLAB)
  #spare: Slab | null = null; // the previous slab of the same size, reused once the socket is done with it
  #segment = 0; // start of the batch being built
  #lastBatch = 0; // bytes of the previous batch: room a new batch starts with
  #wrote = false; // a batch went out since the last trim()
  readonly #reusable: boolean;
  readonly #inFlight = new Fifo<Slab>(); // the slab of each write not yet completed, in write order
  readonly #onWritten = (): void => void this.#inFlight.shift()!.writes--;

  /** @param reusable - whether a slab may be rewritten once the socket completed the writes from it */
  constructor(reusable: boolean) {
    this.#reusable = reusable;
  }

  /** Bytes of slabs held: 0 before the first batch and after {@link trim}. */
  get bytes(): number {
    return this.#slab.buf.length + (this.#spare?.buf.length ?? 0);
  }

  /** Starts a batch at `pos`, with room for the previous batch's bytes (at least `minRoom`). */
  begin(minRoom: number): void {
    this.#wrote = true;
    // A new batch starts where the previous one would fit again, so mid-batch moves (a copy) stay rare.
    this.#segment = this.pos;
    this.room(this.#lastBatch > minRoom ? this.#lastBatch : minRoom);
  }

  /** Appends a frame header (the caller counts it). */
  header(version: number, cmd: number, length: number, streamId: number): void {
    writeHeader(this.buf, this.pos, version, cmd, length, streamId);
    this.pos += HEADER_SIZE;
  }

  /**
   * Makes room for `need` more bytes of the batch being built. When the slab lacks them, the batch moves to
   * the start of another slab (what it holds so far is copied): the spare one when every write from it has
   * completed (so its bytes are no longer referenced) and it is large enough, otherwise a new one — two slabs in
   * turn, no allocation per batch. A slab is made at least twice as large as the batch needs, from
   * {@link MIN_SLAB} up to {@link MAX_SLAB}.
   */
  room(need: number): void {
    const slab = this.#slab;
    if (slab.buf.length - this.pos >= need) return;
    const start = this.#segment;
    const built = this.pos - start;
    let size = slab.buf.length < MIN_SLAB ? MIN_SLAB : slab.buf.length;
    while (size < 2 * (built + need) && size < MAX_SLAB) size *= 2;
    const spare = this.#spare;
    const next =
      this.#reusable && spare !== null && spare.writes === 0 && spare.buf.length === size
        ? spare
        : { buf: Buffer.allocUnsafe(size), writes: 0 };
    if (built > 0) slab.buf.copy(next.buf, 0, start, this.pos);
    // The slab left behind is the next spare if it has the new size; a smaller one is dropped (its pending
    // writes keep their own views of it).
    this.#spare = slab.buf.length === size ? slab : null;
    this.#use(next);
    this.pos = built;
  }

  /** Hands the batch built since {@link begin} to `socket` as one write; returns what `write()` returned. */
  write(socket: Writable): boolean {
    const slab = this.#slab;
    this.#lastBatch = this.pos - this.#segment;
    slab.writes++;
    this.#inFlight.push(slab);
    return socket.write(slab.buf.subarray(this.#segment, this.pos), this.#onWritten);
  }

  /**
   * Releases the slabs if no batch went out since the previous call and the writer is `idle`; the next batch
   * allocates a small slab again. Returns true while slabs are still held.
   */
  trim(idle: boolean): boolean {
    if (!this.#wrote && idle) {
      this.#spare = null;
      this.#use(NO_SLAB);
    }
    this.#wrote = false;
    return this.bytes > 0;
  }

  /** Keeps at most one smallest slab ({@link MIN_SLAB}); call it only while no batch is being built or written. */
  shrink(): void {
    this.#spare = null;
    if (this.#slab.buf.length > MIN_SLAB) this.#use(NO_SLAB);
  }

  #use(slab: Slab): void {
    this.#slab = slab;
    this.buf = slab.buf;
    this.pos = this.#segment = 0;
    if (slab === NO_SLAB) this.#lastBatch = 0;
  }
}
