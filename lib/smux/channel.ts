import type { SmuxConfig } from './config.js';
import { INITIAL_PEER_WINDOW } from './constants.js';
import { SmuxError } from './errors.js';
import { type ReceiveBucket, sendWindow, shouldSendUpdate, u32Add } from './flow-control.js';
import { StreamTimeouts, type TimeoutOwner } from './stream-timeouts.js';
import type { Session } from './session.js';
import type { FrameWriter, PayloadSink } from './writer.js';

/**
 * Callbacks of a {@link SmuxChannel}. One object may serve as the handler of one channel; calls are
 * synchronous and in order, and none follows `onClose`.
 */
export interface SmuxChannelHandler {
  /**
   * Stream data, in order. The buffer is a view into a received socket chunk; keep a reference as long as you
   * like (it is never reused), but copy it if you keep only a small part of a large chunk.
   */
  onData(data: Buffer): void;
  /** The peer sent FIN and every byte before it has been delivered. */
  onEnd(): void;
  /** Everything written so far has been handed to the socket (also after the FIN, once ended). */
  onDrain?(): void;
  /**
   * The channel is finished and unregistered. `error` is absent after a clean close (FIN sent, FIN received
   * and every byte delivered), after a local `destroy()` without an error, and when the session was destroyed
   * locally without one (check `finSent` / `peerEnded` to tell a complete stream from a cut-off one).
   */
  onClose(error?: SmuxError): void;
}

/** Idle timeouts of a stream, in milliseconds; 0 or absent turns one off. */
export interface StreamTimeoutOptions {
  /** Nothing arrived for this long while the stream wanted data. */
  read?: number;
  /** Queued data or FIN made no progress to the socket for this long. */
  write?: number;
}

/** @internal What a channel needs from its session. */
export interface ChannelHost {
  readonly config: Readonly<SmuxConfig>;
  readonly writer: FrameWriter;
  readonly bucket: ReceiveBucket;
  /** Forget the channel: frames for its id are dropped from now on. */
  release(channel: SmuxChannel): void;
  /** Consumed bytes returned tokens: reading may resume. */
  tokensReturned(): void;
  /** Received bytes were charged: reading may have to pause. */
  tokensCharged(): void;
}

// State bits. A channel is open until CLOSED; the two directions end independently:
//   local:  (open) ──end()──▶ LOCAL_END ──FIN handed to the socket──▶ FIN_SENT
//   remote: (open) ──FIN received──▶ REMOTE_FIN ──held data delivered──▶ EOF_DELIVERED
// FIN_SENT + EOF_DELIVERED closes it cleanly; destroy() or the session's death closes it at once.
const PEER_OPENED = 1 << 0;
const HOLD = 1 << 1; // peer-opened, nothing sent until the opener's first frame arrives (Go's OpenStream race)
const PAUSED = 1 << 2;
const LOCAL_END = 1 << 3;
const FIN_SENT = 1 << 4;
const REMOTE_FIN = 1 << 5;
const EOF_DELIVERED = 1 << 6;
const DESTROYED = 1 << 7; // destroy() called; FIN may still be waiting for HOLD to lift
const CLOSED = 1 << 8; // onClose called; no more callbacks

/** @internal Control frames a channel asks the writer for (bits of `controlBits`). */
export const CONTROL_SYN = 1;
/** @internal */
export const CONTROL_UPD = 2;
/** @internal A FIN sent ahead of (dropped) data by `destroy()`. */
export const CONTROL_FIN = 4;

/**
 * The lean face of a smux stream: callbacks instead of Node stream machinery. It carries the whole stream
 * engine — send queue, v2 windows, receive accounting, half-close, timeouts — and {@link SmuxStream} (a
 * `Duplex`) is built on it. Protocol layers with a call per stream (the Nest transport) use it directly:
 * a Duplex lifecycle costs several microseconds of stream-state ticks per stream, a channel almost nothing.
 *
 * Create with `session.openChannel()` or receive with `session.on('channel', …)`.
 */
export class SmuxChannel implements TimeoutOwner {
  /** The stream id. */
  readonly id: number;
  /** @internal Bits owned by the frame writer (queued where). */
  writerFlags = 0;
  /** @internal Control frames requested: CONTROL_* bits. */
  controlBits = 0;
  readonly #host: ChannelHost;
  #handler: SmuxChannelHandler | null = null;
  #flags: number;
  // receive side
  #held: Buffer[] | null = null; // received while paused, not consumed
  #heldBytes = 0;
  #numRead = 0; // u32, bytes consumed (v2 UPD `consumed`)
  #sinceUpdate = 0;
  // send side
  #queue: Buffer[] | null = null;
  #queueHead = 0;
  #queueOffset = 0;
  #queuedBytes = 0;
  #numWritten = 0; // u32
  #peerConsumed = 0; // u32
  #peerWindow = INITIAL_PEER_WINDOW; // u32
  #timeouts: StreamTimeouts | null = null;

  /** @internal Use `session.openChannel()` or the session's `'channel'` event. */
  constructor(host: ChannelHost, id: number, openedByPeer: boolean) {
    this.#host = host;
    this.id = id;
    // Paused until a handler is set: data that arrives first is held.
    this.#flags = PAUSED | (openedByPeer ? PEER_OPENED | (host.config.waitForOpenerData ? HOLD : 0) : 0);
  }

  /** The session this stream belongs to. */
  get session(): Session {
    return this.#host as unknown as Session;
  }

  /** True once the channel is finished (closed cleanly, destroyed, or its session died). */
  get isClosed(): boolean {
    return (this.#flags & (CLOSED | DESTROYED)) !== 0;
  }
  /** True once `end()` was called (FIN queued or sent). */
  get isEnded(): boolean {
    return (this.#flags & LOCAL_END) !== 0;
  }
  /** True once our FIN has been handed to the socket. */
  get finSent(): boolean {
    return (this.#flags & FIN_SENT) !== 0;
  }
  /** True once the peer's FIN arrived. */
  get peerEnded(): boolean {
    return (this.#flags & REMOTE_FIN) !== 0;
  }
  /** True when the peer opened this stream. */
  get openedByPeer(): boolean {
    return (this.#flags & PEER_OPENED) !== 0;
  }
  /** True while delivery is paused (by `pause()`, or before a handler is set). */
  get isPaused(): boolean {
    return (this.#flags & PAUSED) !== 0;
  }
  /** Bytes written but not yet handed to the socket. */
  get writableLength(): number {
    return this.#queuedBytes;
  }
  /** Bytes received and held because delivery is paused. */
  get readableLength(): number {
    return this.#heldBytes;
  }
  /** True while queued bytes are below `streamHighWaterMark` (what `write()` returns). */
  get writable(): boolean {
    return this.#queuedBytes < this.#host.config.streamHighWaterMark;
  }

  /** The current handler, if any. */
  get handler(): SmuxChannelHandler | null {
    return this.#handler;
  }

  /** Sets the handler and starts delivery (data held until now is delivered at once). */
  setHandler(handler: SmuxChannelHandler): void {
    this.#handler = handler;
    if ((this.#flags & CLOSED) === 0) this.resume();
  }

  /**
   * Queues bytes to send. They leave in frames of at most `maxFrameSize`, in order, within the peer's
   * window (v2). The buffer is not copied: do not modify it until `onDrain`.
   *
   * @returns false once queued bytes reach `streamHighWaterMark` (wait for `onDrain`), as Node's `write()`
   * @throws SmuxError `ERR_SMUX_STREAM_CLOSED` after `end()` or when closed
   */
  write(data: Uint8Array): boolean {
    if ((this.#flags & (LOCAL_END | DESTROYED | CLOSED)) !== 0) {
      throw new SmuxError(
        'ERR_SMUX_STREAM_CLOSED',
        `stream ${this.id} is ${(this.#flags & LOCAL_END) !== 0 ? 'ended' : 'closed'}: cannot write`,
      );
    }
    const length = data.byteLength;
    if (length > 0) {
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, length);
      if (this.#queue === null) this.#queue = [buf];
      else this.#queue.push(buf);
      if (this.#queuedBytes === 0) this.#timeouts?.noteWrite();
      this.#queuedBytes += length;
      if ((this.#flags & HOLD) === 0) this.#host.writer.queueData(this);
    }
    return this.#queuedBytes < this.#host.config.streamHighWaterMark;
  }

  /** Sends FIN after the queued bytes (half-close: the channel still receives). Idempotent. */
  end(): void {
    if ((this.#flags & (LOCAL_END | DESTROYED | CLOSED)) !== 0) return;
    this.#flags |= LOCAL_END;
    this.#timeouts?.noteWrite();
    if ((this.#flags & HOLD) === 0) this.#host.writer.queueData(this);
  }

  /**
   * Go `Close()` semantics: drops queued and held data, sends FIN, and unregisters the stream at once (later
   * frames for it are dropped without charging the session). `onClose(error)` follows synchronously.
   * Idempotent.
   */
  destroy(error?: SmuxError): void {
    if ((this.#flags & (DESTROYED | CLOSED)) !== 0) return;
    this.#flags |= DESTROYED;
    this.#dropSendQueue();
    this.#dropHeld();
    const hold = (this.#flags & HOLD) !== 0;
    if ((this.#flags & FIN_SENT) === 0) {
      this.controlBits = (this.controlBits & ~CONTROL_UPD) | CONTROL_FIN;
      if (!hold) this.#host.writer.queueControl(this);
    } else {
      this.controlBits = 0;
    }
    // A held stream stays registered until the opener's first frame proves Go registered it; then its FIN goes.
    if (!hold) this.#host.release(this);
    this.#finish(error);
  }

  /** Stops delivering data: it is held (and charged to the session) until `resume()`. */
  pause(): void {
    this.#flags |= PAUSED;
  }

  /** Delivers held data and continues delivering. */
  resume(): void {
    if ((this.#flags & (CLOSED | DESTROYED)) !== 0 || this.#handler === null) return;
    if ((this.#flags & PAUSED) !== 0) this.#timeouts?.noteRead(); // silence while paused was ours
    this.#flags &= ~PAUSED;
    const held = this.#held;
    if (held !== null) {
      let returned = 0;
      while (held.length > 0 && (this.#flags & (PAUSED | CLOSED)) === 0) {
        const chunk = held.shift()!;
        const before = this.#heldBytes;
        this.#heldBytes -= chunk.length;
        this.#host.bucket.update(before, this.#heldBytes);
        returned += chunk.length;
        this.#consumed(chunk.length);
        this.#handler.onData(chunk);
      }
      if (held.length === 0) this.#held = null;
      if (returned > 0) this.#host.tokensReturned();
    }
    if ((this.#flags & (REMOTE_FIN | EOF_DELIVERED | PAUSED | CLOSED)) === REMOTE_FIN && this.#held === null) this.#deliverEnd();
  }

  /**
   * Idle timeouts in milliseconds (0 or absent = off): `read` passes when nothing arrives for that long while
   * the channel wants data (not paused, peer not ended); `write` when queued data or the FIN makes no
   * progress to the socket (closed peer window, peer not reading). Either destroys the channel with
   * `ERR_SMUX_TIMEOUT`. Calling again replaces both and restarts them.
   */
  setTimeouts(timeouts: StreamTimeoutOptions): void {
    if (this.isClosed) return;
    const read = Math.max(0, timeouts.read ?? 0);
    const write = Math.max(0, timeouts.write ?? 0);
    if (this.#timeouts === null) {
      if (read === 0 && write === 0) return;
      this.#timeouts = new StreamTimeouts(this.#host.config.clock, this);
    }
    this.#timeouts.configure(read, write);
  }

  // ── TimeoutOwner ────────────────────────────────────────────────────────────────────────────────────────

  /** @internal */
  get awaitingData(): boolean {
    return (this.#flags & (REMOTE_FIN | CLOSED | DESTROYED | PAUSED)) === 0;
  }
  /** @internal */
  get writePending(): boolean {
    return (this.#flags & (CLOSED | DESTROYED)) === 0 && (this.#queuedBytes > 0 || (this.#flags & (LOCAL_END | FIN_SENT)) === LOCAL_END);
  }
  /** @internal */
  onIdleTimeout(kind: 'read' | 'write', ms: number): void {
    const what = kind === 'read' ? 'nothing received' : 'no write progress';
    this.destroy(new SmuxError('ERR_SMUX_TIMEOUT', `stream ${this.id}: ${what} for ${ms} ms`));
  }

  // ── Inbound frames (from the session) ──────────────────────────────────────────────────────────────────

  /** @internal The opener's first frame arrived (or we learnt it is safe to speak): release what was held back. */
  releaseHold(): void {
    if ((this.#flags & HOLD) === 0) return;
    this.#flags &= ~HOLD;
    const writer = this.#host.writer;
    if (this.controlBits !== 0) writer.queueControl(this);
    if (this.#queuedBytes > 0 || (this.#flags & LOCAL_END) !== 0) writer.queueData(this);
    if ((this.#flags & DESTROYED) !== 0) this.#host.release(this);
  }

  /** @internal PSH payload for this stream. */
  handleData(data: Buffer): void {
    if ((this.#flags & (REMOTE_FIN | DESTROYED | CLOSED)) !== 0) return; // after FIN or close: dropped, uncharged
    this.#timeouts?.noteRead();
    if ((this.#flags & PAUSED) !== 0 || this.#held !== null) {
      if (this.#held === null) this.#held = [data];
      else this.#held.push(data);
      const before = this.#heldBytes;
      this.#heldBytes += data.length;
      this.#host.bucket.update(before, this.#heldBytes);
      this.#host.tokensCharged();
      return;
    }
    this.#consumed(data.length);
    this.#handler!.onData(data);
  }

  /** @internal FIN for this stream. */
  handleFin(): void {
    if ((this.#flags & (REMOTE_FIN | DESTROYED | CLOSED)) !== 0) return;
    this.#flags |= REMOTE_FIN;
    this.#timeouts?.noteRead();
    if ((this.#flags & PAUSED) === 0 && this.#held === null) this.#deliverEnd();
  }

  /** @internal UPD for this stream (v2): Go overwrites both values. */
  handleWindowUpdate(consumed: number, window: number): void {
    if ((this.#flags & (DESTROYED | CLOSED)) !== 0) return;
    this.#peerConsumed = consumed;
    this.#peerWindow = window;
    const available = sendWindow(this.#numWritten, this.#peerConsumed, this.#peerWindow);
    if (Number.isNaN(available)) {
      this.destroy(new SmuxError('ERR_SMUX_PROTOCOL', `stream ${this.id}: peer consumed more than was sent`));
    } else if (available > 0 && this.#queuedBytes > 0 && (this.#flags & HOLD) === 0) {
      this.#host.writer.queueData(this);
    }
  }

  /**
   * @internal The session died (with `error`, or quietly when destroyed locally): nothing more is sent. A
   * stream whose peer already sent FIN still gets its held data and its end (they arrived whole), then
   * `onClose(error)`.
   */
  terminate(error: SmuxError | undefined): void {
    if ((this.#flags & CLOSED) !== 0) return;
    this.#dropSendQueue();
    this.controlBits = 0;
    if ((this.#flags & (REMOTE_FIN | EOF_DELIVERED | DESTROYED)) === REMOTE_FIN && this.#handler !== null) {
      const held = this.#held;
      this.#held = null;
      if (held !== null) for (const chunk of held) this.#handler.onData(chunk);
      this.#flags |= EOF_DELIVERED;
      this.#handler.onEnd();
    }
    this.#flags |= DESTROYED;
    this.#finish(error);
  }

  // ── Outbound (from the writer) ─────────────────────────────────────────────────────────────────────────

  /**
   * @internal Bytes the writer may put in the next PSH: queued, within the peer window (v2) and `limit`.
   * Zero while held back or window-blocked.
   */
  sendableBytes(limit: number): number {
    if (this.#queuedBytes === 0 || (this.#flags & HOLD) !== 0) return 0;
    let n = this.#queuedBytes < limit ? this.#queuedBytes : limit;
    if (this.#host.config.version === 2) {
      const available = sendWindow(this.#numWritten, this.#peerConsumed, this.#peerWindow);
      if (!(available > 0)) return 0;
      if (available < n) n = available;
    }
    return n;
  }

  /** @internal True when the ordered FIN (after all data) can go now. */
  get finReady(): boolean {
    return (this.#flags & (LOCAL_END | FIN_SENT | HOLD | DESTROYED)) === LOCAL_END && this.#queuedBytes === 0;
  }

  /** @internal Hands `n` queued bytes to the writer as payload pieces (views, no copies). */
  takeData(n: number, sink: PayloadSink): void {
    const queue = this.#queue!;
    let left = n;
    while (left > 0) {
      const buf = queue[this.#queueHead];
      const start = this.#queueOffset;
      const available = buf.length - start;
      if (available <= left) {
        sink.appendPayload(start === 0 ? buf : buf.subarray(start));
        left -= available;
        queue[this.#queueHead++] = undefined as unknown as Buffer;
        this.#queueOffset = 0;
      } else {
        sink.appendPayload(buf.subarray(start, start + left));
        this.#queueOffset += left;
        left = 0;
      }
    }
    this.#queuedBytes -= n;
    if (this.#queuedBytes === 0) {
      queue.length = 0;
      this.#queueHead = 0;
    } else if (this.#queueHead >= 1024 && this.#queueHead * 2 >= queue.length) {
      // A queue that never empties (a feed held back by the window) must not grow its dead prefix forever.
      queue.splice(0, this.#queueHead);
      this.#queueHead = 0;
    }
    this.#numWritten = u32Add(this.#numWritten, n);
  }

  /** @internal The writer put a FIN for this stream in the batch being written. */
  markFinSent(): void {
    this.#flags |= FIN_SENT;
    this.controlBits &= ~CONTROL_FIN;
  }

  /** @internal The UPD payload's `consumed` value. */
  get numRead(): number {
    return this.#numRead;
  }

  /** @internal Called after a batch with this stream's frames was handed to the socket. */
  afterFlush(): void {
    if ((this.#flags & CLOSED) !== 0) return;
    this.#timeouts?.noteWrite();
    if ((this.#flags & (FIN_SENT | EOF_DELIVERED)) === (FIN_SENT | EOF_DELIVERED)) {
      this.#host.release(this);
      this.#finish(undefined);
      return;
    }
    if (this.#queuedBytes === 0) this.#handler?.onDrain?.();
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  #consumed(n: number): void {
    if (this.#host.config.version !== 2) return;
    this.#numRead = u32Add(this.#numRead, n);
    this.#sinceUpdate += n;
    // A UPD after the peer's FIN is useless (nothing more will be sent), so it is skipped.
    if ((this.#flags & REMOTE_FIN) === 0 && shouldSendUpdate(this.#numRead, n, this.#sinceUpdate, this.#host.config.maxStreamBuffer)) {
      this.#sinceUpdate = 0;
      this.controlBits |= CONTROL_UPD;
      if ((this.#flags & HOLD) === 0) this.#host.writer.queueControl(this);
    }
  }

  #deliverEnd(): void {
    this.#flags |= EOF_DELIVERED;
    this.#handler!.onEnd();
    if ((this.#flags & (FIN_SENT | CLOSED)) === FIN_SENT) {
      this.#host.release(this);
      this.#finish(undefined);
    }
  }

  #dropSendQueue(): void {
    this.#queue = null;
    this.#queueHead = 0;
    this.#queueOffset = 0;
    this.#queuedBytes = 0;
  }

  #dropHeld(): void {
    if (this.#heldBytes > 0) {
      this.#host.bucket.update(this.#heldBytes, 0);
      this.#heldBytes = 0;
      this.#host.tokensReturned();
    }
    this.#held = null;
  }

  #finish(error: SmuxError | undefined): void {
    if ((this.#flags & CLOSED) !== 0) return;
    this.#flags |= CLOSED;
    this.#timeouts?.stop();
    const handler = this.#handler;
    if (handler !== null) {
      if (error === undefined) handler.onClose();
      else handler.onClose(error);
    }
  }
}
