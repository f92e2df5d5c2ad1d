import { Buffer } from 'node:buffer';
import { nextTick } from 'node:process';
import { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { Cmd, HEADER_SIZE, UPD_PAYLOAD_SIZE } from './constants.js';
import { CONTROL_FIN, CONTROL_SYN, CONTROL_UPD, type FrameSource, type PayloadSink } from './frame-source.js';
import { writeHeader } from './frame.js';
import { BATCH_BYTES, WriteSlabs } from './write-slabs.js';
import { Fifo } from '../util/fifo.js';

/**
 * Frames per socket write. Unbounded once-per-tick batches made both ends of a connection take turns
 * (each ≈ 50 % busy); bounded batches let them overlap (PERF-NOTES.md measured 16 calls per write, with one
 * frame per call). A smux call costs two or three frames per direction (SYN + PSH, or PSH + UPD) plus the FIN
 * that follows its last PSH uncounted, so 64 frames keep roughly that many calls per write.
 */
const BATCH_FRAMES = 64;
/** Room for the frames of one control entry (SYN + UPD with its payload + FIN) or a NOP. */
const CONTROL_ROOM = 3 * HEADER_SIZE + UPD_PAYLOAD_SIZE;
/** A NOP-only batch (an idle session's keep-alive) is this constant, per version: no slab for it. */
const NOP_FRAMES = [1, 2].map((version) => {
  const nop = Buffer.alloc(HEADER_SIZE);
  writeHeader(nop, 0, version, Cmd.NOP, 0, 0);
  return nop;
});

/** What a {@link FrameWriter} tells its owner, and how it may treat its slabs. */
export interface WriterHooks {
  /** A flush left nothing queued (a graceful close waits for it). */
  onIdle?: () => void;
  /**
   * Whether a slab may be rewritten once the socket completed the writes from it. Default: only for a
   * `net.Socket` (TLS included).
   */
  reusable?: boolean;
}

const IN_CONTROL = 1;
const IN_READY = 2;
const NOTIFY = 4;

/**
 * The session's only path to the socket. Control frames (NOP, SYN, UPD, and the FIN of a destroyed
 * stream) go first in FIFO order; then streams with data take turns, one frame each (round-robin), a
 * stream's ordered FIN right behind its last data. Frames are gathered into bounded batches, packed contiguously into a
 * slab (never reused while a write may reference it), and each batch is a single `write()`.
 *
 * A batch goes out at the end of the current tick, or at once when {@link BATCH_FRAMES} frames are waiting.
 * Writing stops while the socket reports backpressure (`write()` false) and resumes on `'drain'`; reading
 * never waits for writing.
 */
export class FrameWriter implements PayloadSink {
  /** Frames handed to the socket. */
  framesOut = 0;
  /** Bytes handed to the socket. */
  bytesOut = 0;
  readonly #socket: Writable;
  #version = 0;
  readonly #maxFrameSize: number;
  readonly #control = new Fifo<FrameSource>();
  readonly #ready = new Fifo<FrameSource>();
  #fins: number[] = []; // ids of refused streams that get a bare FIN (no stream object behind them)
  #finsHead = 0;
  #nop = false;
  readonly #slabs: WriteSlabs; // where batches are packed
  #shrinkWhenIdle = false; // shrink() was asked while frames were being written
  readonly #reusable: boolean;
  readonly #onIdle: () => void; // told when a flush leaves nothing queued (a graceful close waits for it)
  readonly #notify: FrameSource[] = [];
  #batchBytes = 0;
  #scheduled = false;
  #lazyScheduled = false;
  #flushing = false;
  #blocked = false;
  #closed = false;

  /**
   * @param socket - the transport
   * @param version - protocol version byte, or 0 while unknown (a server detecting it): nothing is written then
   * @param maxFrameSize - largest PSH payload to send
   * @param hooks - what the writer tells its owner, and whether its slabs may be reused
   */
  constructor(socket: Writable, version: number, maxFrameSize: number, hooks: WriterHooks = {}) {
    this.#socket = socket;
    this.#onIdle = hooks.onIdle ?? noop;
    // A net.Socket (TLS included) has copied the bytes to the kernel or to OpenSSL by the time a write's
    // callback runs, so the slab may be reused. Any other Duplex may still hold the chunk (a test pair that
    // push()es it to the other side): it gets fresh slabs.
    this.#reusable = hooks.reusable ?? socket instanceof Socket;
    this.#slabs = new WriteSlabs(this.#reusable);
    this.#version = version;
    this.#maxFrameSize = maxFrameSize;
  }

  /** Sets the protocol version once it is known (a server detecting the client's) and writes what waited. */
  setVersion(version: number): void {
    this.#version = version;
    this.flush();
  }

  /** True while waiting for the socket's `'drain'`. */
  get blocked(): boolean {
    return this.#blocked;
  }

  /** Bytes of write buffers (slabs) this writer holds: 0 before the first batch and after {@link trim}. */
  get bufferBytes(): number {
    return this.#slabs.bytes;
  }

  /**
   * Releases the write buffers if no batch went out since the previous call (a keep-alive NOP alone does not
   * count) and nothing is being written; the next batch allocates a small slab again. Returns true while the
   * writer still holds buffers.
   */
  trim(): boolean {
    return this.#slabs.trim(!this.#flushing && !this.#blocked && !this.pending);
  }

  /**
   * Keeps at most one smallest slab (16 KiB) — the owner has no stream left, so nothing large will be written
   * soon. While frames are being written it happens once they are out.
   */
  shrink(): void {
    if (this.#flushing || this.#blocked || this.pending) {
      this.#shrinkWhenIdle = true;
      return;
    }
    this.#shrinkWhenIdle = false;
    this.#slabs.shrink();
  }

  /** True while frames wait to be written (window-blocked streams excepted). */
  get pending(): boolean {
    return this.#nop || this.#controlCount > 0 || this.#ready.length > 0;
  }

  /** Control entries waiting: sources and bare FINs. */
  get #controlCount(): number {
    return this.#control.length + this.#fins.length - this.#finsHead;
  }

  /** Queues a keep-alive NOP (at most one is ever pending). */
  queueNop(): void {
    this.#nop = true;
    this.#kickLazily();
  }

  /**
   * Queues a source's control frames (its `controlBits`). They lead the next batch; on their own
   * they wait for the end of the event-loop turn, so the data a turn produces (replies computed in promise
   * callbacks after the UPDs and FINs a received chunk triggered) leaves in the same write.
   */
  queueControl(source: FrameSource): void {
    if ((source.writerFlags & IN_CONTROL) !== 0) return;
    source.writerFlags |= IN_CONTROL;
    this.#control.push(source);
    this.#kickLazily();
  }

  /**
   * Queues a FIN for a stream id that has no stream object (one the session refused): control order, 8 bytes,
   * nothing else kept.
   */
  queueFin(streamId: number): void {
    if (this.#closed) return;
    this.#fins.push(streamId);
    this.#kickLazily();
  }

  /** Queues a source that has data or an ordered FIN to send. */
  queueData(source: FrameSource): void {
    if ((source.writerFlags & IN_READY) !== 0) return;
    source.writerFlags |= IN_READY;
    this.#ready.push(source);
    this.#kick();
  }

  /** The socket drained: continue. */
  onDrain(): void {
    this.#blocked = false;
    this.flush();
  }

  /** Stops writing for good (the session is dead). */
  close(): void {
    this.#closed = true;
    this.#control.drain();
    this.#ready.drain();
    this.#fins = [];
    this.#finsHead = 0;
  }

  /** Writes everything that can go now, in bounded batches, until done or the socket pushes back. */
  flush(): void {
    this.#scheduled = false;
    if (this.#flushing) return; // a callback during a flush queued more: the running loop takes it
    this.#flushing = true;
    try {
      while (!this.#blocked && !this.#closed && this.#version !== 0 && (this.#nop || this.#controlCount > 0 || this.#ready.length > 0)) {
        if (this.#controlCount === 0 && this.#ready.length === 0) {
          if (!this.#writeNop()) this.#blocked = true;
          break;
        }
        if (this.#buildBatch() === 0) break;
        const ok = this.#slabs.write(this.#socket);
        this.#afterBatch();
        if (!ok) this.#blocked = true;
      }
    } finally {
      this.#flushing = false;
    }
    if (!this.#blocked && !this.#closed && !this.pending) {
      if (this.#shrinkWhenIdle) this.shrink();
      this.#onIdle();
    }
  }

  /** Appends a payload piece to the frame being built (room was reserved with its header). */
  appendPayload(piece: Buffer): void {
    const slabs = this.#slabs;
    slabs.buf.set(piece, slabs.pos);
    slabs.pos += piece.length;
  }

  /** Appends ASCII text to the frame being built (room was reserved with its header). */
  appendText(piece: string): void {
    const slabs = this.#slabs;
    slabs.pos += slabs.buf.write(piece, slabs.pos, piece.length, 'latin1');
  }

  #kick(): void {
    if (this.#closed || this.#blocked || this.#flushing) return;
    if (this.#controlCount + this.#ready.length >= BATCH_FRAMES) this.flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      nextTick(flushOnTick, this);
    }
  }

  #kickLazily(): void {
    if (this.#closed || this.#blocked || this.#flushing || this.#scheduled || this.#lazyScheduled) return;
    if (this.#controlCount >= BATCH_FRAMES) return this.#kick();
    this.#lazyScheduled = true;
    setImmediate(flushLazily, this);
  }

  /** The end-of-turn flush for control frames that no data flush took along. */
  flushLazy(): void {
    this.#lazyScheduled = false;
    if (!this.#scheduled) this.flush();
  }

  /** Writes a lone keep-alive NOP (an idle session's only traffic) from a constant buffer, without a slab. */
  #writeNop(): boolean {
    this.#nop = false;
    this.framesOut++;
    this.bytesOut += HEADER_SIZE;
    const nop = NOP_FRAMES[this.#version - 1];
    // A Duplex that may keep the chunk gets its own copy, as it gets fresh slabs.
    return this.#socket.write(this.#reusable ? nop : Buffer.from(nop));
  }

  /** Packs the next batch into the slab; returns its frame count. */
  #buildBatch(): number {
    let frames = 0;
    this.#batchBytes = 0;
    this.#slabs.begin(CONTROL_ROOM);
    if (this.#nop) {
      this.#nop = false;
      this.#header(Cmd.NOP, 0, 0);
      frames++;
    }
    if (this.#finsHead < this.#fins.length) frames += this.#bareFins(BATCH_FRAMES - frames);
    while (frames < BATCH_FRAMES && this.#batchBytes < BATCH_BYTES) {
      const control = this.#control.shift();
      if (control !== undefined) {
        control.writerFlags &= ~IN_CONTROL;
        this.#slabs.room(CONTROL_ROOM);
        frames += this.#controlFrames(control);
        continue;
      }
      const source = this.#ready.shift();
      if (source === undefined) break;
      source.writerFlags &= ~IN_READY;
      frames += this.#dataFrame(source);
    }
    return frames;
  }

  /** Emits up to `max` queued bare FINs; returns how many. */
  #bareFins(max: number): number {
    const fins = this.#fins;
    const end = Math.min(fins.length, this.#finsHead + max);
    const count = end - this.#finsHead;
    this.#slabs.room(count * HEADER_SIZE);
    for (let i = this.#finsHead; i < end; i++) this.#header(Cmd.FIN, 0, fins[i]);
    this.#finsHead = end;
    if (end === fins.length) {
      fins.length = 0;
      this.#finsHead = 0;
    } else if (end >= 1024 && end * 2 >= fins.length) {
      fins.splice(0, end); // a queue that never empties (a peer that does not read) keeps no dead prefix
      this.#finsHead = 0;
    }
    return count;
  }

  /** Emits a source's pending control frames; returns how many. */
  #controlFrames(source: FrameSource): number {
    const bits = source.controlBits;
    source.controlBits = 0;
    let frames = 0;
    if ((bits & CONTROL_SYN) !== 0) {
      this.#header(Cmd.SYN, 0, source.id);
      frames++;
    }
    if ((bits & CONTROL_UPD) !== 0) {
      this.#header(Cmd.UPD, UPD_PAYLOAD_SIZE, source.id);
      const slabs = this.#slabs;
      slabs.buf.writeUInt32LE(source.numRead, slabs.pos);
      slabs.buf.writeUInt32LE(source.window >>> 0, slabs.pos + 4);
      slabs.pos += UPD_PAYLOAD_SIZE;
      frames++;
    }
    if ((bits & CONTROL_FIN) !== 0) {
      this.#header(Cmd.FIN, 0, source.id);
      source.markFinSent();
      frames++;
    }
    return frames;
  }

  /**
   * Emits one PSH — with the ordered FIN right behind it when that was the stream's last data — or the FIN alone,
   * and re-queues the source if it has more; returns the frames that count towards {@link BATCH_FRAMES} (not that FIN).
   */
  #dataFrame(source: FrameSource): number {
    let frames = 0;
    const n = source.sendableBytes(this.#maxFrameSize);
    this.#slabs.room(2 * HEADER_SIZE + n);
    if (n > 0) {
      this.#header(Cmd.PSH, n, source.id);
      source.takeData(n, this);
      this.#batchBytes += n;
      frames++;
      // The stream's last data takes its FIN along at once (8 bytes, not counted in the batch's frames): left for
      // the next round of the ring, the FINs of a burst of replies spilled into a write of their own (23 % of a
      // server's writes at 64 B @64, docs/NOTES.md).
      if (source.finReady) {
        this.#header(Cmd.FIN, 0, source.id);
        source.markFinSent();
      }
    } else if (source.finReady) {
      this.#header(Cmd.FIN, 0, source.id);
      source.markFinSent();
      frames++;
    }
    if (frames > 0 && (source.writerFlags & NOTIFY) === 0) {
      source.writerFlags |= NOTIFY;
      this.#notify.push(source);
    }
    // Window-blocked sources leave the ring; a UPD (or new data) puts them back.
    if (source.finReady || source.sendableBytes(1) > 0) {
      source.writerFlags |= IN_READY;
      this.#ready.push(source);
    }
    return frames;
  }

  #header(cmd: number, length: number, streamId: number): void {
    this.#slabs.header(this.#version, cmd, length, streamId);
    this.framesOut++;
    this.bytesOut += HEADER_SIZE + length;
  }

  #afterBatch(): void {
    const notify = this.#notify;
    for (let i = 0; i < notify.length; i++) {
      const source = notify[i];
      source.writerFlags &= ~NOTIFY;
      source.afterFlush();
    }
    notify.length = 0;
  }
}

function noop(): void {}

function flushOnTick(writer: FrameWriter): void {
  writer.flush();
}

function flushLazily(writer: FrameWriter): void {
  writer.flushLazy();
}
