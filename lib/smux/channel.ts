import { asSmuxError, type SmuxError } from './errors.js';
import type { Session } from './session.js';
import type { StreamCore } from './stream-core.js';

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
  /**
   * The peer's FIN arrived while data before it is held (the channel is paused, or delivering what it held), so
   * {@link onEnd} waits until that data is delivered. Not called when the end is delivered at once. For a protocol in
   * which an early FIN means something of its own — the Nest transport's calls: a caller's FIN before the answer
   * cancels — so that a reader that stopped reading does not hide it.
   */
  onFinHeld?(): void;
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

// Set by SmuxChannel's static block: the only way to construct one, kept out of the class's public surface.
let channelFactory: (core: StreamCore, session: Session) => SmuxChannel;

/**
 * The lean face of a smux stream: callbacks instead of Node stream machinery. It has the whole stream
 * engine — send queue, v2 windows, receive accounting, half-close, timeouts — and {@link SmuxStream} (a
 * `Duplex`) is built on it. Protocol layers with a call per stream (the Nest transport) use it directly:
 * a Duplex lifecycle costs several microseconds of stream-state ticks per stream, a channel almost nothing.
 *
 * Get one from `session.openChannel()` or the session's `'channel'` event.
 */
export class SmuxChannel {
  readonly #core: StreamCore;
  readonly #session: Session;

  private constructor(core: StreamCore, session: Session) {
    this.#core = core;
    this.#session = session;
  }

  static {
    channelFactory = (core, session) => new SmuxChannel(core, session);
  }

  /** The stream id. */
  get id(): number {
    return this.#core.id;
  }
  /** The session this stream belongs to. */
  get session(): Session {
    return this.#session;
  }
  /** True once the channel is finished (closed cleanly, destroyed, or its session died). */
  get isClosed(): boolean {
    return this.#core.isClosed;
  }
  /** True once `end()` was called (FIN queued or sent). */
  get isEnded(): boolean {
    return this.#core.isEnded;
  }
  /** True once our FIN has been handed to the socket. */
  get finSent(): boolean {
    return this.#core.finSent;
  }
  /** True once the peer's FIN arrived. */
  get peerEnded(): boolean {
    return this.#core.peerEnded;
  }
  /** True when the peer opened this stream. */
  get openedByPeer(): boolean {
    return this.#core.openedByPeer;
  }
  /** True while delivery is paused (by `pause()`, or before a handler is set). */
  get isPaused(): boolean {
    return this.#core.isPaused;
  }
  /** Bytes written but not yet handed to the socket. */
  get writableLength(): number {
    return this.#core.writableLength;
  }
  /** Bytes received and held because delivery is paused. */
  get readableLength(): number {
    return this.#core.readableLength;
  }
  /** True while queued bytes are below `streamHighWaterMark` (what `write()` returns). */
  get writable(): boolean {
    return this.#core.writable;
  }
  /** Sets the handler and starts delivery (data held until now is delivered at once). */
  setHandler(handler: SmuxChannelHandler): void {
    this.#core.setHandler(handler);
  }

  /**
   * Queues bytes to send. They leave in frames of at most `maxFrameSize`, in order, within the peer's
   * window (v2). The buffer is not copied: do not modify it until `onDrain`. A string is sent as UTF-8; ASCII
   * text is kept as it is and copied straight into the session's write buffer when its frames are built (no
   * buffer is allocated for it), which makes large text cheaper to send than encoding it first.
   *
   * @returns false once queued bytes reach `streamHighWaterMark` (wait for `onDrain`), as Node's `write()`
   * @throws SmuxError `ERR_SMUX_STREAM_CLOSED` after `end()` or when closed
   */
  write(data: Uint8Array | string): boolean {
    return this.#core.write(data);
  }

  /** Sends FIN after the queued bytes (half-close: the channel still receives). Idempotent. */
  end(): void {
    this.#core.end();
  }

  /**
   * Go `Close()` semantics: drops queued and held data, sends FIN, and unregisters the stream at once (later
   * frames for it are dropped without charging the session). `onClose(error)` follows synchronously.
   * Idempotent. Another `Error` than a SmuxError becomes an `ERR_SMUX_STREAM_CLOSED` with its message, itself the
   * `cause`.
   */
  destroy(error?: Error): void {
    this.#core.destroy(error === undefined ? undefined : asSmuxError(error, 'ERR_SMUX_STREAM_CLOSED'));
  }

  /** Stops delivering data: it is held (and charged to the session) until `resume()`. */
  pause(): void {
    this.#core.pause();
  }

  /** Delivers held data and continues delivering. */
  resume(): void {
    this.#core.resume();
  }

  /**
   * Idle timeouts in milliseconds (0 or absent = off): `read` passes when nothing arrives for that long while
   * the channel wants data (not paused, peer not ended); `write` when queued data or the FIN makes no
   * progress to the socket (closed peer window, peer not reading). Either destroys the channel with
   * `ERR_SMUX_TIMEOUT`. Calling again replaces both and restarts them.
   */
  setTimeouts(timeouts: StreamTimeoutOptions): void {
    this.#core.setTimeouts(timeouts);
  }
}

/** The public face of a stream engine (the session's use only: not exported from the package). */
export function createChannel(core: StreamCore, session: Session): SmuxChannel {
  return channelFactory(core, session);
}
