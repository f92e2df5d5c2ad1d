import { Duplex } from 'node:stream';
import type { SmuxChannel, SmuxChannelHandler, StreamTimeoutOptions } from './channel.js';
import { SmuxError } from './errors.js';
import { detached } from '../util/detached.js';

type Callback = (error?: Error | null) => void;

/**
 * A smux stream as a Node `Duplex`, for code that wants Node stream semantics (`pipe`, `pipeline`,
 * async iteration). It is an adapter over a {@link SmuxChannel}:
 *
 * | Go smux | SmuxStream |
 * | --- | --- |
 * | `Write` | `write()`; the callback fires once the bytes are handed to the socket, or with the error if the stream ends first |
 * | `CloseWrite` (v1.5.54+) | `end()`: FIN after queued data; still readable (half-close) |
 * | `Read` → `io.EOF` | `'end'` after the peer's FIN and all data |
 * | `Close` | `destroy()`: queued data dropped, FIN sent, stream forgotten |
 * | `SetReadDeadline` / `SetWriteDeadline` | `setTimeouts({ read, write })`: idle timeouts → `ERR_SMUX_TIMEOUT` |
 *
 * Receive backpressure: when the readable buffer reaches `streamHighWaterMark` the stream stops consuming;
 * the peer's window (v2) or the session budget (v1) then holds the sender back. After FIN both ways and
 * 'end'/'finish', the stream closes itself (autoDestroy) without losing unread data. When the session ends after the
 * peer's FIN, the stream closes once the application has read to 'end': quietly, unless a write of ours was lost.
 */
export class SmuxStream extends Duplex {
  readonly #channel: SmuxChannel;
  #pendingWrite: Callback | null = null;
  #pendingFinal: Callback | null = null;
  #endPushed = false;
  #deadError: SmuxError | null = null; // the session died after our peer ended: later writes fail with it

  /**
   * Wraps a channel as a Node `Duplex` (it takes over the channel's handler). Streams also come ready-made from
   * `session.openStream()`, `acceptStream()` and the `'stream'` event.
   */
  constructor(channel: SmuxChannel, highWaterMark: number = channel.session.config.streamHighWaterMark) {
    super({ allowHalfOpen: true, readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark });
    this.#channel = channel;
    channel.setHandler(new SmuxStream.#Handler(this));
  }

  /** The stream id. */
  get id(): number {
    return this.#channel.id;
  }

  /** The engine underneath (for protocol code that wants callbacks; do not mix both faces for reading). */
  get channel(): SmuxChannel {
    return this.#channel;
  }

  /** Idle timeouts in milliseconds; see {@link SmuxChannel.setTimeouts}. The stream is destroyed with `ERR_SMUX_TIMEOUT`. */
  setTimeouts(timeouts: StreamTimeoutOptions): this {
    this.#channel.setTimeouts(timeouts);
    return this;
  }

  override _read(): void {
    this.#channel.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: Callback): void {
    this.#send([chunk], callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: Callback): void {
    this.#send(
      chunks.map((c) => c.chunk),
      callback,
    );
  }

  override _final(callback: Callback): void {
    if (this.#deadError !== null) return callback(this.#deadError);
    this.#channel.end();
    if (this.#channel.finSent) callback();
    else this.#pendingFinal = callback;
  }

  override _destroy(error: Error | null, callback: Callback): void {
    // A write or end() still waiting for its bytes to reach the socket will never get there: it fails (Go's Write
    // returns an error). Left unsettled, its callback never ran, nor did those of the writes Node queued behind it
    // (Node fails the queued ones only once the pending one settles): `await` on a write hung for good.
    const pending = this.#pendingWrite ?? this.#pendingFinal;
    this.#pendingWrite = this.#pendingFinal = null;
    this.#channel.destroy();
    pending?.(error ?? new SmuxError('ERR_SMUX_STREAM_CLOSED', 'the stream was destroyed before its data was sent'));
    callback(error);
  }

  /** Destroys the stream (quietly) once 'end' is emitted: data still buffered for the application stays readable. */
  #destroyAfterEnd(): void {
    if (this.readableEnded) this.destroy();
    else this.once('end', () => this.destroy());
  }

  #send(chunks: Buffer[], callback: Callback): void {
    if (this.#deadError !== null) return callback(this.#deadError);
    try {
      for (const chunk of chunks) this.#channel.write(chunk);
    } catch (error) {
      return callback(error as Error);
    }
    if (this.#channel.writableLength === 0) callback();
    else this.#pendingWrite = callback;
  }

  static readonly #Handler = class implements SmuxChannelHandler {
    readonly #stream: SmuxStream;

    constructor(stream: SmuxStream) {
      this.#stream = stream;
    }

    onData(data: Buffer): void {
      const stream = this.#stream;
      // Delivered at once, a view costs nothing; buffered until the application reads, a view of a small part of a
      // read would keep the whole read alive (held-pieces.ts says why), so that one is copied.
      const piece = stream.readableFlowing === true && stream.readableLength === 0 ? data : detached(data);
      if (!stream.push(piece)) stream.#channel.pause();
    }

    onEnd(): void {
      this.#stream.#endPushed = true;
      this.#stream.push(null);
    }

    onDrain(): void {
      const stream = this.#stream;
      const write = stream.#pendingWrite;
      stream.#pendingWrite = null;
      write?.();
      const final = stream.#pendingFinal;
      if (final !== null && stream.#channel.finSent) {
        stream.#pendingFinal = null;
        final();
      }
    }

    onClose(error?: SmuxError): void {
      const stream = this.#stream;
      if (stream.destroyed) return;
      if (!stream.#endPushed) {
        stream.destroy(error); // cut off before the peer's FIN: quietly when the session was destroyed without an error
        return;
      }
      if (stream.#channel.finSent) {
        this.onDrain(); // closed cleanly: our FIN went out
      } else {
        // The peer's data all arrived; only our direction failed. What was still in flight for it fails with the
        // session's error: a failed write destroys the stream with it (Node's rule), unread data included.
        error ??= new SmuxError('ERR_SMUX_SESSION_CLOSED', 'session closed');
        stream.#deadError = error;
        const pending = stream.#pendingWrite ?? stream.#pendingFinal;
        stream.#pendingWrite = stream.#pendingFinal = null;
        if (pending !== null) return pending(error);
        if (stream.writableLength > 0) return void stream.destroy(error); // corked writes: lost, so say so
      }
      // Nothing more can move either way, and nothing of ours was lost: close once the application has read to the
      // end, without an error even if the session failed — the read side completed normally, and an 'error' nobody
      // listens for would crash a process that did nothing wrong (later write()/end() calls still fail). Unless our
      // own end() is finishing: then autoDestroy closes it after 'finish'.
      if (!stream.writableEnded) stream.#destroyAfterEnd();
    }
  };
}
