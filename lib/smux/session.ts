import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { CONTROL_SYN, type ChannelHost, SmuxChannel, type SmuxChannelHandler } from './channel.js';
import { type SmuxConfig, validateConfig } from './config.js';
import { type FrameSink, FrameDecoder } from './decoder.js';
import { SmuxError } from './errors.js';
import { Fifo } from '../util/fifo.js';
import { ReceiveBucket, streamAllowance } from './flow-control.js';
import { KeepAlive, type KeepAliveHost } from './keep-alive.js';
import { SmuxStream } from './stream.js';
import { StreamIdAllocator } from './stream-ids.js';
import { FrameWriter } from './writer.js';

/** Counters of a session. */
export interface SessionStats {
  /** Bytes received from the socket. */
  bytesIn: number;
  /** Bytes handed to the socket. */
  bytesOut: number;
  /** Frames received. */
  framesIn: number;
  /** Frames handed to the socket. */
  framesOut: number;
  /** Streams this side opened. */
  streamsOpened: number;
  /** Streams the peer opened and this side accepted. */
  streamsAccepted: number;
  /** Streams the peer opened and this side refused (limit or closing). */
  streamsRefused: number;
}

/** Events of a {@link Session}. */
export interface SessionEvents {
  /** The peer opened a stream. Emitted when there is no `'channel'` listener. */
  stream: [stream: SmuxStream];
  /** The peer opened a stream; with a listener here, peer streams arrive as lean channels instead of `'stream'`. */
  channel: [channel: SmuxChannel];
  /** The session is over. `error` is absent after a local `close()` / `destroy()` without error. */
  close: [error: SmuxError | undefined];
}

const OPEN = 0;
const CLOSING = 1;
const CLOSED = 2;
const PAUSED_BY_BUDGET = 1;
const PAUSED_BY_BACKLOG = 2;
/** Refused streams wait (registered) for the opener's first frame; a peer that never sends one cannot grow this past the cap. */
const REFUSAL_SLACK = 1024;

/**
 * One smux session over a Duplex (a `net.Socket`, a `tls.TLSSocket`, a test pair), wire-compatible with Go's
 * xtaci/smux in protocol versions 1 and 2. See the README for the API and the differences from Go.
 */
export class Session extends EventEmitter<SessionEvents> implements ChannelHost, FrameSink, KeepAliveHost {
  /** The validated configuration. */
  readonly config: Readonly<SmuxConfig>;
  /** Which end of the connection this is. */
  readonly role: 'client' | 'server';
  /** @internal */
  readonly writer: FrameWriter;
  /** @internal */
  readonly bucket: ReceiveBucket;
  readonly #socket: Duplex;
  readonly #decoder: FrameDecoder;
  readonly #ids: StreamIdAllocator;
  readonly #keepAlive: KeepAlive | null;
  readonly #channels = new Map<number, SmuxChannel>();
  readonly #backlog = new Fifo<SmuxChannel>();
  #acceptWaiters: Array<{ resolve: (s: SmuxStream) => void; reject: (e: SmuxError) => void }> = [];
  #state = OPEN;
  #error: SmuxError | null = null;
  #readPause = 0;
  #closeTimer: unknown = null;
  #ended = false; // socket.end() called during a graceful close
  #lingering = false; // closed on our side, reading until the peer closes
  #closed: Promise<void> | null = null;
  #resolveClosed: (() => void) | null = null;
  #bytesIn = 0;
  #streamsOpened = 0;
  #streamsAccepted = 0;
  #streamsRefused = 0;

  /** Starts the client end of a session on `socket`. @throws SmuxError `ERR_SMUX_INVALID_CONFIG` */
  static client(socket: Duplex, config?: Partial<SmuxConfig>): Session {
    return new Session(socket, 'client', config);
  }

  /** Starts the server end of a session on `socket`. @throws SmuxError `ERR_SMUX_INVALID_CONFIG` */
  static server(socket: Duplex, config?: Partial<SmuxConfig>): Session {
    return new Session(socket, 'server', config);
  }

  private constructor(socket: Duplex, role: 'client' | 'server', config?: Partial<SmuxConfig>) {
    super();
    this.config = validateConfig(config);
    this.role = role;
    this.#socket = socket;
    this.#ids = new StreamIdAllocator(role, this.config.firstStreamId);
    this.bucket = new ReceiveBucket(this.config.maxReceiveBuffer, streamAllowance(this.config.version, this.config.maxStreamBuffer));
    this.writer = new FrameWriter(socket, this.config.version, this.config.maxFrameSize, this.config.maxStreamBuffer, () =>
      this.#endWhenFlushed(),
    );
    this.#decoder = new FrameDecoder(this.config.version, this);
    const c = this.config;
    this.#keepAlive = c.keepAliveDisabled ? null : new KeepAlive(c.clock, this, c.keepAliveInterval, c.keepAliveTimeout);
    (socket as Partial<{ setNoDelay(v: boolean): void }>).setNoDelay?.(true); // frames are batched already; Nagle only adds latency
    socket.on('data', (chunk: Buffer) => this.#receive(chunk));
    socket.on('drain', () => this.#drained());
    socket.on('finish', () => this.#state === CLOSING && this.#halfClosed());
    socket.on('end', () =>
      this.#state === CLOSING ? this.destroy() : this.destroy(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the peer closed the connection')),
    );
    socket.on('error', (cause: Error) =>
      this.destroy(new SmuxError('ERR_SMUX_SESSION_CLOSED', `connection error: ${cause.message}`, { cause })),
    );
    socket.on('close', () =>
      this.destroy(this.#state === CLOSING ? undefined : new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed')),
    );
    if (socket.destroyed) queueMicrotask(() => this.destroy(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection is already closed')));
    this.#keepAlive?.start();
  }

  /** True once `close()` or `destroy()` was called or the session failed: no new streams. */
  get isClosed(): boolean {
    return this.#state !== OPEN;
  }

  /** The error that ended the session, if it failed (sticky: the first one wins). */
  get error(): SmuxError | null {
    return this.#error;
  }

  /** Streams registered on the session (open ones, and destroyed ones still waiting to send their FIN). */
  get numStreams(): number {
    return this.#channels.size;
  }

  /** Stream ids this side can still open before `ERR_SMUX_GOAWAY`. */
  get streamIdsLeft(): number {
    return this.#ids.remaining;
  }

  /** Traffic and stream counters. */
  get stats(): SessionStats {
    return {
      bytesIn: this.#bytesIn,
      bytesOut: this.writer.bytesOut,
      framesIn: this.#decoder.framesDecoded,
      framesOut: this.writer.framesOut,
      streamsOpened: this.#streamsOpened,
      streamsAccepted: this.#streamsAccepted,
      streamsRefused: this.#streamsRefused,
    };
  }

  /**
   * Opens a stream as a lean {@link SmuxChannel}. It is registered before its SYN is queued, so nothing the
   * peer sends back can arrive for an unknown id. Data written at once follows the SYN.
   *
   * @throws SmuxError `ERR_SMUX_SESSION_CLOSED`/`ERR_SMUX_SHUTTING_DOWN` when closed or closing, `ERR_SMUX_LIMIT`
   *   at `maxStreams`, `ERR_SMUX_GOAWAY` when stream ids are exhausted
   */
  openChannel(handler?: SmuxChannelHandler): SmuxChannel {
    this.#assertOpen();
    if (this.#channels.size >= this.config.maxStreams) {
      throw new SmuxError('ERR_SMUX_LIMIT', `session has ${this.#channels.size} streams open (maxStreams ${this.config.maxStreams})`);
    }
    const channel = new SmuxChannel(this, this.#ids.next(), false);
    this.#channels.set(channel.id, channel);
    this.#streamsOpened++;
    channel.controlBits = CONTROL_SYN;
    this.writer.queueControl(channel);
    if (handler !== undefined) channel.setHandler(handler);
    return channel;
  }

  /** Opens a stream as a Node `Duplex`. Rejects with the errors {@link openChannel} throws. */
  openStream(): Promise<SmuxStream> {
    try {
      return Promise.resolve(new SmuxStream(this.openChannel(), this.config.streamHighWaterMark));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The next stream the peer opens (when no `'stream'`/`'channel'` listener takes them). Up to `acceptBacklog`
   * streams wait; while the backlog is full the session stops reading, as Go does.
   * Rejects with the session's error once it is closed.
   */
  acceptStream(): Promise<SmuxStream> {
    const channel = this.#backlog.shift();
    if (channel !== undefined) {
      if (this.#backlog.length < this.config.acceptBacklog) this.#resumeReading(PAUSED_BY_BACKLOG);
      return Promise.resolve(new SmuxStream(channel, this.config.streamHighWaterMark));
    }
    if (this.#state !== OPEN) return Promise.reject(this.#closedError());
    return new Promise((resolve, reject) => this.#acceptWaiters.push({ resolve, reject }));
  }

  /**
   * Graceful close: stops accepting streams, ends every stream (FIN after its queued data), flushes what can
   * be sent — data a v2 peer's window holds back goes out as the peer reads — then ends the connection (TCP
   * half-close). Resolves once all of it has been handed to the socket.
   * The session keeps reading what the peer still sends until the peer closes too — destroying a socket with
   * unread input would make the kernel reset the connection and discard our own unsent tail — and then emits
   * `'close'`. A peer that never closes (Go does not react to EOF) is cut off after `keepAliveTimeout` (30 s
   * when keep-alive is off); meanwhile the socket does not keep the process alive. If the flush itself cannot
   * finish within that time (a peer that stopped reading), the session is destroyed with `ERR_SMUX_TIMEOUT`.
   * Idempotent.
   */
  close(): Promise<void> {
    if (this.#closed !== null) return this.#closed;
    this.#closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    if (this.#state !== OPEN) {
      this.#resolveClosed!();
      return this.#closed;
    }
    this.#state = CLOSING;
    this.#rejectWaiters(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'session closed'));
    for (const channel of this.#backlog.drain()) channel.destroy();
    for (const channel of this.#channels.values()) channel.end();
    const c = this.config;
    this.#closeTimer = c.clock.setTimeout(
      () =>
        this.#lingering
          ? this.destroy()
          : this.destroy(new SmuxError('ERR_SMUX_TIMEOUT', 'graceful close could not flush within the timeout')),
      c.keepAliveDisabled ? 30_000 : c.keepAliveTimeout,
    );
    this.writer.flush();
    this.#endWhenFlushed();
    return this.#closed;
  }

  /**
   * Hard close: the connection is destroyed and every open stream ends with `error` — or, for a local
   * destroy without one, quietly (as `http2` sessions do: a `SmuxStream` gets `'close'` without `'error'`, a
   * channel `onClose()` without an error). A stream whose peer already sent FIN keeps its received data
   * readable. Idempotent.
   */
  destroy(error?: SmuxError): void {
    if (this.#state === CLOSED) return;
    this.#state = CLOSED;
    if (error !== undefined) this.#error = error;
    if (this.#closeTimer !== null) this.config.clock.clearTimeout(this.#closeTimer);
    this.#keepAlive?.stop();
    this.#decoder.stop();
    this.writer.close();
    this.#socket.on('error', ignore); // errors after our teardown have no one to go to
    this.#socket.destroy();
    const channels = [...this.#channels.values()];
    this.#channels.clear();
    this.#backlog.drain();
    for (const channel of channels) channel.terminate(error);
    this.#rejectWaiters(this.#closedError());
    this.#resolveClosed?.();
    process.nextTick(() => this.emit('close', error));
  }

  // ── FrameSink ──────────────────────────────────────────────────────────────────────────────────────────

  /** @internal */
  onSyn(streamId: number): void {
    if (this.#channels.has(streamId)) return; // duplicate SYN: ignored, as Go does
    const channel = new SmuxChannel(this, streamId, true);
    this.#channels.set(streamId, channel);
    if (this.#state !== OPEN || this.#channels.size > this.config.maxStreams) {
      if (this.#channels.size > this.config.maxStreams + REFUSAL_SLACK) {
        this.destroy(new SmuxError('ERR_SMUX_LIMIT', `peer opened more than ${this.config.maxStreams + REFUSAL_SLACK} streams`));
        return;
      }
      this.#streamsRefused++;
      channel.destroy(); // FIN once the opener's first frame shows Go registered the stream
      return;
    }
    this.#streamsAccepted++;
    if (this.listenerCount('channel') > 0) this.emit('channel', channel);
    else if (this.listenerCount('stream') > 0) this.emit('stream', new SmuxStream(channel, this.config.streamHighWaterMark));
    else if (this.#acceptWaiters.length > 0) this.#acceptWaiters.shift()!.resolve(new SmuxStream(channel, this.config.streamHighWaterMark));
    else {
      this.#backlog.push(channel);
      if (this.#backlog.length >= this.config.acceptBacklog) this.#pauseReading(PAUSED_BY_BACKLOG);
    }
  }

  /** @internal */
  onFin(streamId: number): void {
    const channel = this.#channels.get(streamId);
    if (channel === undefined) return;
    channel.releaseHold();
    channel.handleFin();
  }

  /** @internal */
  onPsh(streamId: number, data: Buffer): void {
    const channel = this.#channels.get(streamId);
    if (channel === undefined) return; // unknown or closed stream: dropped without tokens, as Go does
    channel.releaseHold();
    channel.handleData(data);
  }

  /** @internal */
  onNop(): void {}

  /** @internal */
  onUpd(streamId: number, consumed: number, window: number): void {
    const channel = this.#channels.get(streamId);
    if (channel === undefined) return;
    channel.releaseHold();
    channel.handleWindowUpdate(consumed, window);
  }

  /** @internal */
  onProtocolError(error: SmuxError): void {
    this.destroy(error);
  }

  // ── ChannelHost / KeepAliveHost ────────────────────────────────────────────────────────────────────────

  /** @internal */
  release(channel: SmuxChannel): void {
    if (this.#channels.get(channel.id) === channel) this.#channels.delete(channel.id);
    if (this.#state === CLOSING) this.#endWhenFlushed();
  }

  /** @internal */
  tokensReturned(): void {
    if ((this.#readPause & PAUSED_BY_BUDGET) !== 0 && !this.bucket.exhausted) this.#resumeReading(PAUSED_BY_BUDGET);
  }

  /** @internal */
  tokensCharged(): void {
    if (this.bucket.exhausted) this.#pauseReading(PAUSED_BY_BUDGET);
  }

  /** @internal */
  sendNop(): void {
    this.writer.queueNop();
  }

  /** @internal */
  get readingPaused(): boolean {
    return this.#readPause !== 0;
  }

  /** @internal */
  onKeepAliveTimeout(silentMs: number): void {
    this.destroy(
      new SmuxError(
        'ERR_SMUX_KEEPALIVE_TIMEOUT',
        `no frame received for ${Math.round(silentMs)} ms (keepAliveTimeout ${this.config.keepAliveTimeout} ms)`,
      ),
    );
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  #receive(chunk: Buffer): void {
    this.#bytesIn += chunk.length;
    const framesBefore = this.#decoder.framesDecoded;
    this.#decoder.push(chunk);
    // Liveness is per chunk, not per frame: all frames of a chunk arrived at the same moment.
    if (this.#decoder.framesDecoded !== framesBefore) this.#keepAlive?.activity();
  }

  #drained(): void {
    this.writer.onDrain();
    if (this.#state === CLOSING) this.#endWhenFlushed();
  }

  #endWhenFlushed(): void {
    if (this.#state !== CLOSING || this.#ended || this.writer.blocked || this.writer.pending) return;
    // Data waiting on a v2 window goes out as the peer reads (its UPDs re-flush); the close timer bounds it.
    for (const channel of this.#channels.values()) if (channel.writableLength > 0) return;
    this.#ended = true;
    // Nothing may be written after end(): no more UPDs for what we still read, no NOPs.
    this.writer.close();
    this.#keepAlive?.stop();
    this.#socket.end(); // its 'finish' completes our side
  }

  /** Everything we had to send, and our FIN, reached the kernel: close() is done on our side. */
  #halfClosed(): void {
    this.#lingering = true;
    this.#resolveClosed?.();
    (this.#socket as Partial<{ unref(): void }>).unref?.();
    // Keep reading until the peer closes ('end' or 'close' then destroys), so the kernel never resets.
    this.#readPause = 0;
    this.#decoder.resume();
    this.#socket.resume();
  }

  #pauseReading(reason: number): void {
    if (this.#readPause === 0) {
      this.#decoder.pause();
      this.#socket.pause();
    }
    this.#readPause |= reason;
  }

  #resumeReading(reason: number): void {
    if ((this.#readPause & reason) === 0) return;
    this.#readPause &= ~reason;
    if (this.#readPause !== 0 || this.#state === CLOSED) return;
    this.#keepAlive?.activity(); // the silence while paused was ours
    this.#decoder.resume();
    if (this.#readPause === 0) this.#socket.resume();
  }

  #assertOpen(): void {
    if (this.#state === OPEN) return;
    if (this.#state === CLOSING && !this.#lingering) throw new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'session is closing');
    throw this.#closedError();
  }

  #closedError(): SmuxError {
    return this.#error ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', 'session closed');
  }

  #rejectWaiters(error: SmuxError): void {
    const waiters = this.#acceptWaiters;
    this.#acceptWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }
}

function ignore(): void {}
