import { nextTick } from 'node:process';
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { createChannel, type SmuxChannel, type SmuxChannelHandler } from './channel.js';
import { type SmuxConfig, validateConfig } from './config.js';
import type { ProtocolVersion } from './constants.js';
import { type FrameSink, FrameDecoder } from './decoder.js';
import { asSmuxError, SmuxError } from './errors.js';
import { ReceiveBucket, streamAllowance } from './flow-control.js';
import { KeepAlive, type KeepAliveHost, keepAliveTimeout } from './keep-alive.js';
import { HELD_BY_BACKLOG, HELD_BY_BUDGET, ReadTurns } from './read-turns.js';
import { SmuxStream } from './stream.js';
import type { SessionEvents, SessionObserver, SessionStats } from './session-types.js';
import { StreamCore } from './stream-core.js';
import type { StreamHost } from './stream-host.js';
import { StreamAcceptor } from './stream-acceptor.js';
import { StreamIdAllocator } from './stream-ids.js';
import { StreamRefusals } from './stream-refusals.js';
import { SessionStreams } from './session-streams.js';
import { WindowBudget } from './window-tuner.js';
import { CONTROL_SYN } from './frame-source.js';
import { FrameWriter } from './writer.js';
import { closeAfterPeer } from './close-after-peer.js';
import { GracefulClose } from './graceful-close.js';
import { provideLayerAccess } from './session-layer.js';

const OPEN = 0;
const CLOSING = 1;
const CLOSED = 2;

/**
 * One smux session over a Duplex (a `net.Socket`, a `tls.TLSSocket`, a test pair), wire-compatible with Go's
 * xtaci/smux in protocol versions 1 and 2. See the README for the API and the differences from Go.
 */
export class Session extends EventEmitter<SessionEvents> {
  /** The validated configuration. */
  readonly config: Readonly<SmuxConfig>;
  /** Which end of the connection this is. */
  readonly role: 'client' | 'server';
  readonly #writer: FrameWriter;
  readonly #bucket: ReceiveBucket;
  readonly #windowBudget: WindowBudget | null;
  readonly #socket: Duplex;
  readonly #decoder: FrameDecoder;
  readonly #ids: StreamIdAllocator;
  readonly #keepAlive: KeepAlive | null;
  readonly #streams: SessionStreams;
  readonly #refusals: StreamRefusals;
  readonly #acceptor: StreamAcceptor;
  #version: ProtocolVersion | null;
  #state = OPEN;
  #error: SmuxError | null = null;
  readonly #turns: ReadTurns; // when it reads: held by the budget, the backlog or the layer; bounded streams per turn
  #closing: GracefulClose | null = null; // from close() on
  #closedBeforeClose: Promise<void> | null = null; // what close() returns when the session had ended without it
  #bytesIn = 0;
  readonly #observers: SessionObserver[] = [];

  static {
    provideLayerAccess({
      hold: (session, hold, standing) => session.#turns.holdForLayer(hold, standing),
      observe: (session, observer) => {
        session.#observers.push(observer);
        return () => {
          const at = session.#observers.indexOf(observer);
          if (at !== -1) session.#observers.splice(at, 1);
        };
      },
    });
  }

  /** Starts the client end of a session on `socket`. @throws SmuxError `ERR_SMUX_INVALID_CONFIG` */
  static client(socket: Duplex, config?: Partial<SmuxConfig>): Session {
    return new Session(socket, 'client', config);
  }

  /**
   * Starts the server end of a session on `socket`. With `version: 'auto'` the session speaks whichever
   * version (1 or 2) the client's first frame has, and sends nothing before it knows.
   * @throws SmuxError `ERR_SMUX_INVALID_CONFIG`
   */
  static server(socket: Duplex, config?: Partial<SmuxConfig>): Session {
    return new Session(socket, 'server', config);
  }

  private constructor(socket: Duplex, role: 'client' | 'server', config?: Partial<SmuxConfig>) {
    super();
    this.config = validateConfig(config);
    const c = this.config;
    if (c.version === 'auto' && role === 'client') {
      throw new SmuxError(
        'ERR_SMUX_INVALID_CONFIG',
        "smux config: version 'auto' (detect the peer's version) is for server sessions only; a client must choose 1 or 2",
      );
    }
    this.role = role;
    this.#socket = socket;
    this.#version = c.version === 'auto' ? null : c.version;
    this.#ids = new StreamIdAllocator(role, c.firstStreamId);
    this.#bucket = new ReceiveBucket(c.maxReceiveBuffer, this.#version === null ? 0 : streamAllowance(this.#version, c.maxStreamBuffer));
    this.#windowBudget =
      c.maxStreamWindow > c.maxStreamBuffer || (c.contendedStreamWindow > 0 && c.contendedStreamWindow < c.maxStreamBuffer)
        ? new WindowBudget(this.#bucket, c.maxReceiveBuffer, () => this.#tokensReturned())
        : null;
    this.#writer = new FrameWriter(socket, this.#version ?? 0, c.maxFrameSize, { onIdle: () => this.#maybeEnd() });
    this.#streamHost = {
      config: c,
      writer: this.#writer,
      bucket: this.#bucket,
      windowBudget: this.#version === 2 ? this.#windowBudget : null,
      version: this.#version ?? 0,
      release: (core) => this.#release(core),
      tokensReturned: () => this.#tokensReturned(),
      tokensCharged: () => {
        if (!this.#bucket.exhausted) return;
        const overrun = this.#version === 2 ? this.#streams.windowOverrun(c.maxReceiveBuffer) : null;
        if (overrun !== null) return this.destroy(overrun);
        this.#turns.hold(HELD_BY_BUDGET);
        this.#closing?.budgetSpent(); // lingering: what stays unread is dropped, so the peer's FIN is read
      },
    };
    this.#refusals = new StreamRefusals(c, this.#writer);
    this.#streams = new SessionStreams(this.#refusals, this.#windowBudget);
    this.#decoder = new FrameDecoder(this.#version ?? 0, this.#frames);
    this.#turns = new ReadTurns({
      decoder: this.#decoder,
      socket,
      closed: () => this.#state === CLOSED,
      ownStreams: () => this.#streams.own,
      resumedAfterHold: () => this.#keepAlive?.activity(), // the silence while reading was held was ours
    });
    this.#acceptor = new StreamAcceptor(c.acceptBacklog, {
      open: (core) => this.#peerStream(core),
      pauseReading: () => this.#turns.hold(HELD_BY_BACKLOG),
      resumeReading: () => this.#turns.release(HELD_BY_BACKLOG),
    });
    this.#keepAlive = c.keepAliveDisabled ? null : new KeepAlive(c.clock, this.#keepAliveHost, c.keepAliveInterval, c.keepAliveTimeout);
    (socket as Partial<{ setNoDelay(v: boolean): void }>).setNoDelay?.(true); // frames are batched already; Nagle only adds latency
    socket.on('data', (chunk: Buffer) => this.#receive(chunk));
    socket.on('drain', () => this.#drained());
    socket.on('finish', () => this.#state === CLOSING && this.#closing?.halfClosed());
    // A peer that hangs up with no stream open ended the session, as Go's sess.Close() does (smux has no frame that
    // says so): nothing was lost, so it is not a failure. With streams open, those streams were cut off.
    socket.on('end', () =>
      this.#state === CLOSING || this.#streams.size === 0
        ? this.destroy()
        : this.destroy(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the peer closed the connection')),
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
    return this.#streams.size;
  }

  /** Of {@link numStreams}, those the peer opened: what `maxStreams` bounds when the peer opens another. */
  get numPeerStreams(): number {
    return this.#streams.peer;
  }

  /** The protocol version in use; `null` on a `version: 'auto'` server until the client's first frame arrived. */
  get version(): ProtocolVersion | null {
    return this.#version;
  }

  /** Stream ids this side can still open before `ERR_SMUX_GOAWAY`. */
  get streamIdsLeft(): number {
    return this.#ids.remaining;
  }

  /** Traffic and stream counters. */
  get stats(): SessionStats {
    return {
      bytesIn: this.#bytesIn,
      bytesOut: this.#writer.bytesOut,
      framesIn: this.#decoder.framesDecoded,
      framesOut: this.#writer.framesOut,
      streamsOpened: this.#streams.opened,
      streamsAccepted: this.#streams.accepted,
      streamsRefused: this.#refusals.count,
      receiveBudgetLeft: this.#bucket.tokens,
      receiveWindowGrowth: this.#windowBudget?.reserved ?? 0,
      writeBlocked: this.#writer.blocked,
      writeBufferBytes: this.#writer.bufferBytes,
    };
  }

  /**
   * Opens a stream as a lean {@link SmuxChannel}. It is registered before its SYN is queued, so nothing the
   * peer sends back can arrive for an unknown id. Data written at once follows the SYN.
   *
   * @throws SmuxError `ERR_SMUX_SESSION_CLOSED`/`ERR_SMUX_SHUTTING_DOWN` when closed or closing, `ERR_SMUX_LIMIT`
   *   with `maxStreams` streams of this side open, `ERR_SMUX_GOAWAY` when stream ids are exhausted
   */
  openChannel(handler?: SmuxChannelHandler): SmuxChannel {
    this.#assertOpen();
    const own = this.#streams.own;
    if (own >= this.config.maxStreams) {
      throw new SmuxError('ERR_SMUX_LIMIT', `session has ${own} streams of its own open (maxStreams ${this.config.maxStreams})`);
    }
    let id = this.#ids.next();
    while (this.#streams.has(id)) id = this.#ids.next(); // a peer may open ids of our parity (Go allows it): skip them
    const core = new StreamCore(this.#streamHost, id, false);
    this.#streams.addOwn(core);
    core.controlBits = CONTROL_SYN;
    this.#writer.queueControl(core);
    this.#turns.ownStreamsChanged();
    if (handler !== undefined) core.setHandler(handler);
    return createChannel(core, this);
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
    const stream = this.#acceptor.take();
    if (stream !== null) return Promise.resolve(stream);
    if (this.#state !== OPEN) return Promise.reject(this.#closedError());
    return this.#acceptor.wait();
  }

  /**
   * Graceful close: stops accepting streams, ends every stream (FIN after its queued data), flushes what can
   * be sent — data a v2 peer's window holds back goes out as the peer reads — then ends the connection (TCP
   * half-close). Resolves once all of it has been handed to the socket.
   * The session keeps reading what the peer still sends until the peer closes too — destroying a socket with
   * unread input would make the kernel reset the connection and discard our own unsent tail — and then emits
   * `'close'`; a stream the application stops reading meanwhile while the receive budget is spent (nothing read
   * for 1 s) is destroyed, its data dropped, so that the peer's FIN can be read. A peer that never closes (Go does
   * not react to EOF) is cut off after `keepAliveTimeout` (30 s when keep-alive is off; its socket stays at least
   * until 2 s after our FIN); meanwhile the socket does not keep the process alive. If the flush itself cannot
   * finish within that time (a peer that stopped reading), the session is destroyed with `ERR_SMUX_TIMEOUT`.
   * Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing !== null) return this.#closing.done;
    if (this.#state !== OPEN) return (this.#closedBeforeClose ??= Promise.resolve());
    this.#state = CLOSING;
    for (const core of this.#acceptor.close(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'session closed'))) core.destroy();
    for (const core of this.#streams.values()) core.end(); // a copy: ending may release a stream
    const c = this.config;
    this.#closing = new GracefulClose(
      {
        writer: this.#writer,
        socket: this.#socket,
        clock: c.clock,
        windowBoundData: () => this.#streams.some((core) => core.writableLength > 0),
        stopWriting: () => this.#keepAlive?.stop(),
        readToEnd: () => this.#turns.releaseAll(),
        dropUnread: () => this.#streams.mostUnread()?.destroy(),
        destroy: (error) => this.destroy(error),
      },
      c.keepAliveDisabled ? 30_000 : c.keepAliveTimeout,
    );
    return this.#closing.done;
  }

  /**
   * Hard close: the connection is destroyed and every open stream ends with `error` — or, for a local
   * destroy without one, quietly (as `http2` sessions do: a `SmuxStream` gets `'close'` without `'error'`, a
   * channel `onClose()` without an error). A stream whose peer already sent FIN keeps its received data
   * readable. Idempotent. After `close()` resolved (our FIN out), a destroy without `error` ends the streams at once
   * but leaves the socket reading, and discarding, until the peer hangs up or goes quiet for 50 ms — at most 2 s
   * after our FIN — so that the peer sees our FIN, not a reset; `'close'` comes at once. Another `Error` than a
   * SmuxError becomes an `ERR_SMUX_SESSION_CLOSED` with its message, itself the `cause`.
   */
  destroy(reason?: Error): void {
    if (this.#state === CLOSED) return;
    const error = reason === undefined ? undefined : asSmuxError(reason, 'ERR_SMUX_SESSION_CLOSED');
    this.#state = CLOSED;
    if (error !== undefined) this.#error = error;
    this.#keepAlive?.stop();
    this.#decoder.stop();
    this.#writer.close();
    this.#socket.on('error', ignore); // errors after our teardown have no one to go to
    if (error === undefined && this.#closing?.lingering === true) closeAfterPeer(this.#socket, this.#closing.lingeredMs);
    else this.#socket.destroy();
    const streams = this.#streams.clear();
    this.#refusals.clear();
    this.#acceptor.close(this.#closedError()); // its streams are among those terminated
    for (const core of streams) core.terminate(error);
    this.#closing?.ended();
    nextTick(() => {
      for (const observer of this.#observers.slice()) observer.close?.(error);
      this.emit('close', error);
    });
  }

  // ── private hosts: what the decoder, the streams and keep-alive may ask of the session ────────────────

  readonly #frames: FrameSink = {
    onVersion: (version) => this.#adoptVersion(version),
    onSyn: (streamId) => this.#onSyn(streamId),
    onFin: (streamId) => this.#streams.fin(streamId),
    onPsh: (streamId, data) => this.#streams.data(streamId, data),
    onNop: () => undefined,
    onUpd: (streamId, consumed, window) => this.#streams.windowUpdate(streamId, consumed, window),
    onProtocolError: (error) => this.destroy(error),
  };

  /**
   * What the session's streams read of it on every frame: plain data fields, which the session keeps current (the
   * version and the window budget change once, when a server learns the client's version). An object literal with
   * getters is kept in dictionary mode, and every read from it was a generic property lookup: 4–5 % of a server's
   * CPU at 64 B @64 (docs/NOTES.md).
   */
  readonly #streamHost: { -readonly [K in keyof StreamHost]: StreamHost[K] };

  /** A stream is done: frames for its id are dropped from now on. */
  #release(core: StreamCore): void {
    if (this.#streams.remove(core)) {
      if (!core.openedByPeer) this.#turns.ownStreamsChanged();
      // Without keep-alive ticks to release idle write buffers, a session with no stream keeps one small slab.
      if (this.#streams.size === 0 && this.#keepAlive === null) this.#writer.shrink();
    }
    this.#maybeEnd();
  }

  /** Consumed bytes returned tokens: reading may resume. */
  #tokensReturned(): void {
    this.#closing?.budgetMoved();
    if (this.#turns.isHeld(HELD_BY_BUDGET) && !this.#bucket.exhausted) this.#turns.release(HELD_BY_BUDGET);
  }

  readonly #keepAliveHost: KeepAliveHost = ((session: Session) => ({
    sendNop: () => {
      session.#writer.trim(); // write buffers unused since the previous tick are released
      session.#writer.queueNop();
    },
    get readingPaused() {
      return session.#turns.held;
    },
    onKeepAliveTimeout: (silentMs) => session.destroy(keepAliveTimeout(silentMs, session.config.keepAliveTimeout)),
  }))(this);

  #onSyn(streamId: number): void {
    if (this.#streams.has(streamId)) return; // duplicate SYN: ignored, as Go does
    if (this.#state !== OPEN) return this.#refusals.refuse(streamId);
    if (this.#streams.peer >= this.config.maxStreams) {
      if (this.#refusals.refuseOverLimit(streamId)) return;
      const c = this.config;
      const why = `the peer opened ${c.maxRefusedStreams + 1} streams in a row past maxStreams (${c.maxStreams} open; maxRefusedStreams ${c.maxRefusedStreams})`;
      return this.destroy(new SmuxError('ERR_SMUX_LIMIT', why));
    }
    this.#refusals.accepted();
    const core = new StreamCore(this.#streamHost, streamId, true);
    this.#streams.addPeer(core);
    this.#turns.streamOpened();
    let channel: SmuxChannel | null = null;
    for (const observer of this.#observers) if (observer.channel !== undefined) observer.channel((channel ??= createChannel(core, this)));
    if (this.listenerCount('channel') > 0) this.emit('channel', channel ?? createChannel(core, this));
    else if (channel !== null) return;
    else if (this.listenerCount('stream') > 0) this.emit('stream', this.#peerStream(core));
    else this.#acceptor.offer(core);
  }

  /** A stream the peer opened, as a Node `Duplex`. */
  #peerStream(core: StreamCore): SmuxStream {
    return new SmuxStream(createChannel(core, this), this.config.streamHighWaterMark);
  }

  /** A `version: 'auto'` server learnt the client's version from its first frame. */
  #adoptVersion(version: ProtocolVersion): void {
    this.#version = version;
    this.#streamHost.version = version;
    this.#streamHost.windowBudget = version === 2 ? this.#windowBudget : null;
    this.#bucket.setAllowance(streamAllowance(version, this.config.maxStreamBuffer));
    this.#writer.setVersion(version);
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  #receive(chunk: Buffer): void {
    if (this.#state === CLOSED) return; // a destroyed session's socket may still read, and discards (closeAfterPeer)
    this.#bytesIn += chunk.length;
    this.#turns.received(chunk.length);
    const framesBefore = this.#decoder.framesDecoded;
    this.#decoder.push(chunk);
    // Liveness is per chunk, not per frame: all frames of a chunk arrived at the same moment.
    if (this.#decoder.framesDecoded !== framesBefore) this.#keepAlive?.activity();
  }

  #drained(): void {
    this.#writer.onDrain();
    this.#maybeEnd();
  }

  /** A graceful close ends the connection once nothing is left to write. */
  #maybeEnd(): void {
    if (this.#state === CLOSING) this.#closing?.maybeEnd(); // null while close() is still ending the streams
  }

  #assertOpen(): void {
    if (this.#state === OPEN) return;
    if (this.#state === CLOSING && this.#closing?.lingering !== true) throw new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'session is closing');
    throw this.#closedError();
  }

  #closedError(): SmuxError {
    return this.#error ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', 'session closed');
  }
}

function ignore(): void {}
