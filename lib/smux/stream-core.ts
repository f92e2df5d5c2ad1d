import type { Buffer } from 'node:buffer';
import type { SmuxChannelHandler, StreamTimeoutOptions } from './channel.js';
import { INITIAL_PEER_WINDOW } from './constants.js';
import { SmuxError } from './errors.js';
import { extendGrant, sendWindow, shouldSendUpdate, u32Add } from './flow-control.js';
import { PeerFinWatch } from './peer-fin-watch.js';
import { HeldPieces } from './held-pieces.js';
import { SendQueue } from './send-queue.js';
import { StreamTimeouts, type TimeoutOwner } from './stream-timeouts.js';
import { StreamWindowTuner } from './window-tuner.js';
import { CONTROL_FIN, CONTROL_UPD, type FrameSource, type PayloadSink } from './frame-source.js';
import type { StreamHost } from './stream-host.js';

// State bits. A stream is open until CLOSED; the two directions end independently:
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

/**
 * The engine of one smux stream — send queue, v2 windows, receive accounting, half-close, timeouts — behind
 * the public {@link SmuxChannel} (and so behind {@link SmuxStream}). The session feeds it frames
 * (`handle*`), the writer takes its frames through {@link FrameSource}; neither is reachable from the public
 * objects.
 */
export class StreamCore implements FrameSource, TimeoutOwner {
  readonly id: number;
  writerFlags = 0;
  controlBits = 0;
  readonly #host: StreamHost;
  #handler: SmuxChannelHandler | null = null;
  #flags: number;
  // receive side
  #held: HeldPieces | null = null; // received while paused, not consumed
  #heldBytes = 0;
  #numRead = 0; // u32, bytes consumed (v2 UPD `consumed`)
  #sinceUpdate = 0;
  #tuner: StreamWindowTuner | null = null; // v2 auto-tuning, from the second UPD on
  #granted = INITIAL_PEER_WINDOW; // u32: the furthest the peer may send (v2; flow-control.ts extendGrant)
  #lastWindow = INITIAL_PEER_WINDOW; // the window of our latest UPD (the peer's guess before the first)
  // send side
  #send: SendQueue | null = null; // made on the first write
  #queuedBytes = 0;
  #numWritten = 0; // u32
  #peerConsumed = 0; // u32
  #peerWindow = INITIAL_PEER_WINDOW; // u32
  #timeouts: StreamTimeouts | null = null;
  #finWatch: PeerFinWatch | null = null; // v2, after the peer's FIN: data waiting on a window nobody will open

  /**
   * @param host - the session's private host object
   * @param id - the stream id
   * @param openedByPeer - true for a stream the peer opened (held back until its first frame, see HOLD)
   */
  constructor(host: StreamHost, id: number, openedByPeer: boolean) {
    this.#host = host;
    this.id = id;
    // Paused until a handler is set: data that arrives first is held.
    this.#flags = PAUSED | (openedByPeer ? PEER_OPENED | (host.config.waitForOpenerData ? HOLD : 0) : 0);
  }

  get isClosed(): boolean {
    return (this.#flags & (CLOSED | DESTROYED)) !== 0;
  }
  get isEnded(): boolean {
    return (this.#flags & LOCAL_END) !== 0;
  }
  get finSent(): boolean {
    return (this.#flags & FIN_SENT) !== 0;
  }
  get peerEnded(): boolean {
    return (this.#flags & REMOTE_FIN) !== 0;
  }
  get openedByPeer(): boolean {
    return (this.#flags & PEER_OPENED) !== 0;
  }
  get isPaused(): boolean {
    return (this.#flags & PAUSED) !== 0;
  }
  get writableLength(): number {
    return this.#queuedBytes;
  }
  get readableLength(): number {
    return this.#heldBytes;
  }
  get writable(): boolean {
    return this.#queuedBytes < this.#host.config.streamHighWaterMark;
  }
  get handler(): SmuxChannelHandler | null {
    return this.#handler;
  }

  setHandler(handler: SmuxChannelHandler): void {
    this.#handler = handler;
    if ((this.#flags & CLOSED) === 0) this.resume();
  }

  write(data: Uint8Array | string): boolean {
    if ((this.#flags & (LOCAL_END | DESTROYED | CLOSED)) !== 0) {
      throw new SmuxError(
        'ERR_SMUX_STREAM_CLOSED',
        `stream ${this.id} is ${(this.#flags & LOCAL_END) !== 0 ? 'ended' : 'closed'}: cannot write`,
      );
    }
    const length = (this.#send ??= new SendQueue()).push(data);
    if (length > 0) {
      if (this.#queuedBytes === 0) this.#timeouts?.noteWrite();
      this.#queuedBytes += length;
      if ((this.#flags & REMOTE_FIN) !== 0 && this.#finWatch === null) this.#watchAfterFin();
      if ((this.#flags & HOLD) === 0) this.#host.writer.queueData(this);
    }
    return this.#queuedBytes < this.#host.config.streamHighWaterMark;
  }

  end(): void {
    if ((this.#flags & (LOCAL_END | DESTROYED | CLOSED)) !== 0) return;
    this.#flags |= LOCAL_END;
    this.#timeouts?.noteWrite();
    if ((this.#flags & HOLD) === 0) this.#host.writer.queueData(this);
  }

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

  pause(): void {
    this.#flags |= PAUSED;
  }

  resume(): void {
    if ((this.#flags & (CLOSED | DESTROYED)) !== 0 || this.#handler === null) return;
    if ((this.#flags & PAUSED) !== 0) this.#timeouts?.noteRead(); // silence while paused was ours
    this.#flags &= ~PAUSED;
    const held = this.#held;
    if (held !== null) {
      let returned = 0;
      while (held.length > 0 && (this.#flags & (PAUSED | CLOSED)) === 0) {
        const chunk = held.shift()!; // held.length > 0
        const before = this.#heldBytes;
        this.#heldBytes -= chunk.length;
        this.#host.bucket.update(before, this.#heldBytes, this.#tuner?.grown);
        returned += chunk.length;
        this.#consumed(chunk.length);
        this.#handler.onData(chunk);
      }
      if (held.length === 0) this.#held = null;
      if (returned > 0) this.#host.tokensReturned();
    }
    if ((this.#flags & (REMOTE_FIN | EOF_DELIVERED | PAUSED | CLOSED)) === REMOTE_FIN && this.#held === null) this.#deliverEnd();
  }

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

  // ── TimeoutOwner (for the idle timers) ─────────────────────────────────────────────────────────────────

  get awaitingData(): boolean {
    return (this.#flags & (REMOTE_FIN | CLOSED | DESTROYED | PAUSED)) === 0;
  }

  get writePending(): boolean {
    return (this.#flags & (CLOSED | DESTROYED)) === 0 && (this.#queuedBytes > 0 || (this.#flags & (LOCAL_END | FIN_SENT)) === LOCAL_END);
  }

  onIdleTimeout(kind: 'read' | 'write', ms: number): void {
    const what = kind === 'read' ? 'nothing received' : 'no write progress';
    this.destroy(new SmuxError('ERR_SMUX_TIMEOUT', `stream ${this.id}: ${what} for ${ms} ms`));
  }

  // ── Inbound frames (from the session) ──────────────────────────────────────────────────────────────────

  /** The opener's first frame arrived (or we learnt it is safe to speak): release what was held back. */
  releaseHold(): void {
    if ((this.#flags & HOLD) === 0) return;
    this.#flags &= ~HOLD;
    const writer = this.#host.writer;
    if (this.controlBits !== 0) writer.queueControl(this);
    if (this.#queuedBytes > 0 || (this.#flags & LOCAL_END) !== 0) writer.queueData(this);
    if ((this.#flags & DESTROYED) !== 0) this.#host.release(this);
  }

  /** PSH payload for this stream. */
  handleData(data: Buffer): void {
    if ((this.#flags & (REMOTE_FIN | DESTROYED | CLOSED)) !== 0) return; // after FIN or close: dropped, uncharged
    this.#timeouts?.noteRead();
    this.#tuner?.received(data.length, this.#host.config.clock);
    if ((this.#flags & PAUSED) !== 0 || this.#held !== null) {
      (this.#held ??= new HeldPieces()).push(data);
      const before = this.#heldBytes;
      this.#heldBytes += data.length;
      this.#host.bucket.update(before, this.#heldBytes, this.#tuner?.grown);
      this.#host.tokensCharged();
      return;
    }
    this.#consumed(data.length);
    this.#handler!.onData(data);
  }

  /** FIN for this stream. */
  handleFin(): void {
    if ((this.#flags & (DESTROYED | CLOSED)) !== 0) return;
    if ((this.#flags & REMOTE_FIN) !== 0) {
      // A second FIN: only a full close after a half-close sends one (Go's Close after CloseWrite, or the GC
      // finalizer of an accepted stream), and the peer then drops whatever we still send.
      if (this.#host.version === 2 && this.#queuedBytes > 0) {
        this.destroy(
          new SmuxError(
            'ERR_SMUX_STREAM_CLOSED',
            `stream ${this.id}: the peer closed the stream (a second FIN); ${this.#queuedBytes} queued bytes dropped`,
          ),
        );
      }
      return;
    }
    this.#flags |= REMOTE_FIN;
    this.#timeouts?.noteRead();
    if (this.#queuedBytes > 0) this.#watchAfterFin();
    if ((this.#flags & PAUSED) === 0 && this.#held === null) this.#deliverEnd();
    else this.#handler?.onFinHeld?.(); // the end waits behind held data; the FIN itself may matter now
  }

  /** UPD for this stream (v2): Go overwrites both values. */
  handleWindowUpdate(consumed: number, window: number): void {
    if ((this.#flags & (DESTROYED | CLOSED)) !== 0) return;
    this.#finWatch?.progress();
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
   * The session died (with `error`, or quietly when destroyed locally): nothing more is sent. A stream whose
   * peer already sent FIN still gets its held data and its end (they arrived whole), then `onClose(error)`.
   */
  terminate(error: SmuxError | undefined): void {
    if ((this.#flags & CLOSED) !== 0) return;
    this.#dropSendQueue();
    this.controlBits = 0;
    if ((this.#flags & (REMOTE_FIN | EOF_DELIVERED | DESTROYED)) === REMOTE_FIN && this.#handler !== null) {
      const held = this.#held;
      this.#held = null;
      if (held !== null) for (let chunk = held.shift(); chunk !== undefined; chunk = held.shift()) this.#handler.onData(chunk);
      this.#flags |= EOF_DELIVERED;
      this.#handler.onEnd();
    }
    // Held data before no FIN is never delivered: let it go now, not when the application drops the channel (a peer
    // that overran a paused stream's window held the whole receive budget there).
    this.#held = null;
    this.#heldBytes = 0;
    this.#flags |= DESTROYED;
    this.#finish(error);
  }

  // ── FrameSource (for the writer) ───────────────────────────────────────────────────────────────────────

  get numRead(): number {
    return this.#numRead;
  }

  /**
   * Read by the writer exactly when it encodes a UPD: the moment the window is advertised (auto-tuning times it), and
   * the moment the peer's grant grows. The peer cannot act on a UPD before it leaves, and it leaves in the write this
   * encoding goes into, so the grant is never recorded after the peer could use it (no false overrun); a UPD lost
   * with the session does not matter.
   */
  get window(): number {
    const window = this.#tuner === null ? this.#host.config.maxStreamBuffer : this.#tuner.advertise(this.#numRead, this.#host.config.clock);
    this.#granted = extendGrant(this.#granted, this.#numRead, window, this.#lastWindow);
    this.#lastWindow = window;
    return window;
  }

  /** Bytes received on the stream (consumed + held), modulo 2^32 (v2: `numRead` counts only there). */
  get received(): number {
    return u32Add(this.#numRead, this.#heldBytes);
  }

  /** The furthest the peer may send on the stream, in its byte count modulo 2^32 (v2). */
  get granted(): number {
    return this.#granted;
  }

  /** Bytes received past {@link granted} (v2): > 0 only from a peer that ignored the stream's window. */
  get overrun(): number {
    return (this.received - this.#granted) | 0;
  }

  get finReady(): boolean {
    return (this.#flags & (LOCAL_END | FIN_SENT | HOLD | DESTROYED)) === LOCAL_END && this.#queuedBytes === 0;
  }

  sendableBytes(limit: number): number {
    if (this.#queuedBytes === 0 || (this.#flags & HOLD) !== 0) return 0;
    let n = this.#queuedBytes < limit ? this.#queuedBytes : limit;
    if (this.#host.version === 2) {
      const available = sendWindow(this.#numWritten, this.#peerConsumed, this.#peerWindow);
      if (!(available > 0)) return 0;
      if (available < n) n = available;
    }
    return n;
  }

  takeData(n: number, sink: PayloadSink): void {
    this.#queuedBytes -= n;
    this.#send!.take(n, this.#queuedBytes, sink);
    this.#numWritten = u32Add(this.#numWritten, n);
  }

  markFinSent(): void {
    this.#flags |= FIN_SENT;
    this.controlBits &= ~CONTROL_FIN;
  }

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
    if (this.#host.version !== 2) return;
    this.#numRead = u32Add(this.#numRead, n);
    this.#sinceUpdate += n;
    // A UPD after the peer's FIN is useless (nothing more will be sent), so it is skipped.
    const every = this.#tuner === null ? this.#host.config.maxStreamBuffer : this.#tuner.updateEvery;
    if ((this.#flags & REMOTE_FIN) === 0 && shouldSendUpdate(this.#numRead, n, this.#sinceUpdate, every)) {
      this.#sinceUpdate = 0;
      if (this.#numRead !== n) this.#tune();
      this.controlBits |= CONTROL_UPD;
      if ((this.#flags & HOLD) === 0) this.#host.writer.queueControl(this);
    }
  }

  /** A UPD (not the first) is due: auto-tuning, where the session has it, may grow the window it carries. */
  #tune(): void {
    const budget = this.#host.windowBudget;
    if (budget === null) return;
    const c = this.#host.config;
    const now = c.clock.now();
    this.#tuner ??= new StreamWindowTuner(
      budget,
      c.maxStreamBuffer,
      c.maxStreamWindow,
      c.contendedStreamWindow,
      this.#numRead,
      this.#heldBytes,
      now,
    );
    this.#tuner.updateDue(this.#numRead, this.#heldBytes, now);
  }

  #deliverEnd(): void {
    this.#flags |= EOF_DELIVERED;
    this.#handler!.onEnd();
    if ((this.#flags & (FIN_SENT | CLOSED)) === FIN_SENT) {
      this.#host.release(this);
      this.#finish(undefined);
    }
  }

  /** Starts the `peerFinWriteTimeout` watch (v2): the peer sent FIN while data waits to go (peer-fin-watch.ts). */
  #watchAfterFin(): void {
    const ms = this.#host.config.peerFinWriteTimeout;
    if (this.#host.version !== 2 || ms === 0 || this.#finWatch !== null || (this.#flags & (DESTROYED | CLOSED)) !== 0) return;
    this.#finWatch = new PeerFinWatch(this, this.#host.config.clock, ms, () => (this.#finWatch = null));
  }

  /** For the FIN watch: the peer's window lets queued bytes go. */
  get peerWindowOpen(): boolean {
    return sendWindow(this.#numWritten, this.#peerConsumed, this.#peerWindow) > 0;
  }

  #dropSendQueue(): void {
    this.#send = null;
    this.#queuedBytes = 0;
  }

  #dropHeld(): void {
    if (this.#heldBytes > 0) {
      this.#host.bucket.update(this.#heldBytes, 0, this.#tuner?.grown);
      this.#heldBytes = 0;
      this.#host.tokensReturned();
    }
    this.#held = null;
  }

  #finish(error: SmuxError | undefined): void {
    if ((this.#flags & CLOSED) !== 0) return;
    this.#flags |= CLOSED;
    this.#timeouts?.stop();
    this.#tuner?.release();
    this.#finWatch?.stop();
    this.#finWatch = null;
    const handler = this.#handler;
    if (handler !== null) {
      if (error === undefined) handler.onClose();
      else handler.onClose(error);
    }
  }
}
