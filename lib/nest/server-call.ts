import { isObservable } from 'rxjs';
import { type Clock, type SmuxChannel, SmuxError, type SmuxErrorCode, type TimerHandle } from '../smux/index.js';
import { type CallMessage, encodeTransportError, Flag, Kind } from './call-codec.js';
import { CallEndpoint, type EndpointOwner } from './call-endpoint.js';
import type { PacketCodec } from './packet-codec.js';
import { SmuxDuplex } from './raw-duplex.js';
import { type ReplyOwner, ServerReply } from './server-reply.js';
import type { CallControl } from './smux.context.js';
import { isAsyncIterable, releaseSource } from './sources.js';
import { SmuxStreamedPayload } from './streamed-input.js';

/** What a {@link ServerCall} needs from the server. */
export interface CallHost {
  readonly clock: Clock;
  readonly maxMessageBytes: number;
  readonly maxReplyBufferBytes: number;
  readonly codec: PacketCodec;
  /** A REQUEST arrived: route it and run the handler (then `call.run(...)`), or fail it. */
  dispatchRequest(call: ServerCall, message: CallMessage): void;
  /** An EVENT arrived (the stream is already closed). */
  dispatchEvent(call: ServerCall, message: CallMessage): void;
  /** A HELLO arrived: the stream is the connection's control stream, not a call. Answer it, or refuse it. */
  openControl(call: ServerCall, message: CallMessage): void;
  /** Converts a thrown value into what the caller receives as `err` (Nest's exception-filter defaults). */
  toRpcError(error: unknown): unknown;
  /** The call stopped running (answered, refused, cancelled or failed). */
  callSettled(call: ServerCall): void;
  /** The call wrote its last message and FIN: watch for the caller's FIN for a while. */
  awaitCallerFin(call: ServerCall): void;
  /** The call's stream is gone. */
  callClosed(call: ServerCall): void;
}

/*
 * A call on the server, one state machine:
 *
 *   AWAITING ──REQUEST──▶ RUNNING ──last message (value, error, transport error)──▶ ANSWERED ─┐
 *      │ ──EVENT──▶ EVENT (stream closed at once; the handlers run)        │ caller FIN / gone │
 *      │ ──HELLO──▶ CONTROL (the connection's control stream)             ▼                   │
 *      │                                                              CANCELLED              │
 *      └─ malformed, too large, over a limit, shutting down ──▶ REFUSED (transport error) ───┴─▶ wait for the
 *                                                                                      caller's FIN (bounded)
 * ANSWERED and REFUSED end the same way (FIN after the last message); CANCELLED writes nothing more.
 * A RUNNING call reads on only when its request streams: DATA … END (STREAM), or RAW … END (a byte stream,
 * which is ANSWERED once both directions ended).
 */
const AWAITING = 0;
const RUNNING = 1;
const ANSWERED = 2;
const REFUSED = 3;
const CANCELLED = 4;
const CONTROL = 5;
const EVENT = 6;

/**
 * The Nest semantics of one call on the server: it reads the request, lets the server run the handler, and
 * has its result written ({@link ServerReply}); a FIN from the caller before the last message cancels — the
 * handler's work is stopped, `ctx.signal` aborts, nothing more is written.
 */
export class ServerCall implements EndpointOwner, CallControl, ReplyOwner {
  /** The packet id of the request. */
  id: string | undefined;
  /** The server's record of the connection the call came on. */
  readonly connection: unknown;
  /** When the server stops waiting for the caller's FIN (its FIN sweep). */
  finDue = 0;
  /** Our bytes still queued at the last FIN sweep (progress means a slow reader, not a gone one). */
  finQueued = -1;
  readonly #host: CallHost;
  readonly #endpoint: CallEndpoint;
  readonly #reply: ServerReply;
  readonly #refusal: SmuxError | null;
  #state = AWAITING;
  #controller: AbortController | null = null;
  #abortReason: SmuxError | null = null;
  #deadline: number | undefined;
  #timer: TimerHandle | null = null;
  #endHook: (() => void) | null = null;
  #input: SmuxStreamedPayload | null = null; // the items of a streamed request (DATA … END)
  #raw: SmuxDuplex | null = null; // a byte-stream call's Duplex (RAW … END both ways)
  #rawEnds = 0; // 1: our END + LAST is out; 2: the caller's END arrived; 3: both (the call is complete)
  #handlerDone = false; // the handler's promise settled (its error, if any, is the call's)
  #rawDestroyed: { error: Error | null } | null = null; // the handler destroyed its Duplex before it finished

  /**
   * @param host - the server
   * @param channel - the call's stream
   * @param connection - the server's record of the connection
   * @param refusal - set when the call must be refused (over a limit, shutting down): it is answered with this
   *   error as soon as the caller's first bytes arrive, and the request is never buffered
   */
  constructor(host: CallHost, channel: SmuxChannel, connection: unknown, refusal: SmuxError | null = null) {
    this.#host = host;
    this.connection = connection;
    this.#refusal = refusal;
    this.#endpoint = new CallEndpoint(channel, host.maxMessageBytes, this, 'server', refusal === null);
    this.#reply = new ServerReply(this.#endpoint, host.codec, this, host.maxReplyBufferBytes);
  }

  /** The call's stream. */
  get channel(): SmuxChannel {
    return this.#endpoint.channel;
  }
  /** True while the handler runs and the caller still waits. */
  get running(): boolean {
    return this.#state === RUNNING;
  }
  /** The handler's payload when the request streams (its data arrives as DATA items), else null. */
  get input(): SmuxStreamedPayload | null {
    return this.#input;
  }
  get live(): boolean {
    return this.#state === RUNNING;
  }
  get duplex(): SmuxDuplex | null {
    return this.#raw;
  }
  get signal(): AbortSignal {
    if (this.#controller === null) {
      this.#controller = new AbortController();
      if (this.#abortReason !== null) this.#controller.abort(this.#abortReason);
    }
    return this.#controller.signal;
  }
  get remainingMs(): number | undefined {
    return this.#deadline === undefined ? undefined : Math.max(0, this.#deadline - this.#host.clock.now());
  }

  // ── EndpointOwner ──────────────────────────────────────────────────────────────────────────────────────

  onMessage(message: CallMessage, size: number): void {
    if (this.#state !== AWAITING) return this.#onInput(message, size);
    const { kind, flags } = message;
    const endpoint = this.#endpoint;
    if (kind === Kind.REQUEST && (flags & Flag.STREAM) !== 0) {
      this.#input = new SmuxStreamedPayload({
        pause: () => endpoint.pause(),
        resume: () => endpoint.resume(),
        abandon: () => endpoint.stopReading(),
      });
    } else if (kind === Kind.REQUEST && (flags & Flag.RAW) !== 0) {
      this.#raw = new SmuxDuplex(this.channel.session.config.streamHighWaterMark);
      // A handler that does not listen for 'error' must not crash the process when the caller cancels: the cancel
      // reaches it through ctx.signal, its reads and pipeline() anyway.
      this.#raw.on('error', () => undefined);
      this.#raw.attach(endpoint, this.#rawOwner);
    } else {
      endpoint.stopReading(); // one message is a whole call; what follows it is not read (whatever the framing)
    }
    if ((kind === Kind.REQUEST || kind === Kind.EVENT) && message.pattern === undefined && (flags & Flag.OPAQUE) === 0) {
      this.#refuse(new SmuxError('ERR_SMUX_PROTOCOL', 'a REQUEST or EVENT without a PATTERN field'));
    } else if (kind === Kind.REQUEST) {
      this.#state = RUNNING;
      this.id = message.id;
      if (message.timeout !== undefined && message.timeout > 0) this.#startDeadline(message.timeout);
      this.#host.dispatchRequest(this, message);
    } else if (kind === Kind.EVENT) {
      this.#state = EVENT;
      endpoint.cancel(); // at most once: nothing goes back; forget the stream now
      this.#host.dispatchEvent(this, message);
    } else if (kind === Kind.HELLO) {
      this.#state = CONTROL;
      this.#host.openControl(this, message);
    } else {
      this.#refuse(new SmuxError('ERR_SMUX_PROTOCOL', `a call must start with REQUEST or EVENT, got kind ${kind}`));
    }
  }

  onUnreadData(): void {
    if (this.#state === AWAITING && this.#refusal !== null) this.#refuse(this.#refusal); // answered on its first bytes
  }

  onReadError(error: SmuxError): void {
    if (this.#state === RUNNING)
      this.end(error.code, error.message); // a streamed request's item too large, malformed
    else this.#refuse(error);
  }

  onPeerEnd(): void {
    if (this.#state === RUNNING) this.#abort(new SmuxError('ERR_SMUX_CANCELLED', 'the caller cancelled the call'));
    else if (this.#state === AWAITING || this.#state === CONTROL) this.#endpoint.cancel(); // nothing to answer
  }

  onClosed(): void {
    if (this.#state === RUNNING) this.#abort(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed'));
    this.#host.callClosed(this);
  }

  // ── Running the handler ────────────────────────────────────────────────────────────────────────────────

  /**
   * Runs the handler and adopts its result. `endHook` (processing end hook) runs exactly once when the call is
   * over; `feed` marks the reply as a real-time feed. A call cancelled before this point never runs its handler.
   */
  async run(
    handler: (data: unknown, ctx: unknown) => unknown,
    data: unknown,
    ctx: unknown,
    endHook: (() => void) | null,
    feed: { bufferSize: number } | null = null,
  ): Promise<void> {
    this.#endHook = endHook;
    if (this.#state !== RUNNING) return this.#runEndHook();
    let result: unknown;
    try {
      result = await handler(data, ctx);
    } catch (error) {
      this.#handlerDone = true;
      return this.#reply.error(this.#host.toRpcError(error));
    }
    this.#handlerDone = true;
    if (this.#state !== RUNNING) {
      // Cancelled while guards or an async handler were pending: release the result as soon as it exists
      // (an Observable is unsubscribed, so the teardown of work the handler started runs).
      if (isObservable(result)) result.subscribe({ error: () => undefined }).unsubscribe();
      else if (isAsyncIterable(result)) releaseSource(result);
      return this.#runEndHook();
    }
    // A byte-stream call completes when both directions ended; the handler's result only reports failures.
    if (this.#raw !== null) {
      if (isObservable(result))
        result.subscribe({ error: (error: unknown) => this.#reply.error(error), complete: () => this.#rawAbandoned() });
      else this.#rawAbandoned();
      return;
    }
    await this.#reply.adopt(result, feed === null ? null : { bufferSize: feed.bufferSize, clock: this.#host.clock });
  }

  /** Answers the call with an error at once (no handler, deserialization failed); `status` is Nest's `status`. */
  fail(error: unknown, status?: string): void {
    this.#reply.answer(error, Flag.LAST | Flag.ERROR, status);
  }

  /** Ends a running call with a transport error written by the server itself (deadline, shutdown, limit). */
  end(code: SmuxErrorCode, message: string): void {
    this.endWith(new SmuxError(code, message));
  }

  endWith(error: SmuxError): void {
    if (this.#state !== RUNNING) return;
    this.#stopWork(error);
    this.#endpoint.write(encodeTransportError(error));
    this.#wrapUp(ANSWERED);
  }

  /** Refuses the stream with a transport error (then FIN); whatever else the caller sends is ignored. */
  refuse(error: SmuxError): void {
    this.#refuse(error);
  }

  /**
   * The server is shutting down: a running call ends with the retryable ERR_SMUX_SHUTTING_DOWN, and so does one
   * whose request is still arriving (its first bytes are in, so writing is safe). A stream that sent nothing
   * yet gets nothing (Go's opener may not have registered it); the closing session ends it.
   */
  shutdown(): void {
    const message = 'the server is shutting down';
    if (this.#state === RUNNING) this.end('ERR_SMUX_SHUTTING_DOWN', message);
    else if (this.#state === AWAITING && this.#endpoint.partial) this.#refuse(new SmuxError('ERR_SMUX_SHUTTING_DOWN', message));
  }

  // ── ReplyOwner ─────────────────────────────────────────────────────────────────────────────────────────

  answered(): void {
    if (this.#state === RUNNING) this.#wrapUp(ANSWERED);
  }

  failed(reason: SmuxError): void {
    if (this.#state !== RUNNING) return;
    this.#stopWork(reason);
    this.#wrapUp(ANSWERED);
  }

  toRpcError(error: unknown): unknown {
    return this.#host.toRpcError(error);
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  /** A message after the request: an item of a streamed request or its end, or a byte stream's RAW or END. */
  #onInput(message: CallMessage, size: number): void {
    if (this.#state !== RUNNING) return;
    if (this.#raw !== null) return this.#raw.deliver(message);
    const input = this.#input;
    if (input === null) return;
    if (message.kind === Kind.DATA) return input.push(message.body, size);
    this.#endpoint.stopReading();
    if (message.kind === Kind.END && (message.flags & Flag.ERROR) === 0) input.end();
    else if (message.kind === Kind.END) input.fail(message.body);
    else this.end('ERR_SMUX_PROTOCOL', `a streamed request carries DATA and END messages, got kind ${message.kind}`);
  }

  /** What the Duplex of a byte-stream call reports: its ends, and a destroy by the handler. */
  readonly #rawOwner = {
    lastEnd: true,
    writableEnded: () => this.#rawEnded(1),
    readableEnded: () => this.#rawEnded(2),
    destroyed: (error: Error | null) => {
      this.#rawDestroyed = { error };
      // A handler that throws out of a `for await` destroys its Duplex first: its own error, coming next, wins.
      if (this.#handlerDone) this.#rawAbandoned();
    },
  };

  /** The handler finished; if its Duplex was destroyed without both ends, the call fails with why. */
  #rawAbandoned(): void {
    const destroyed = this.#rawDestroyed;
    if (destroyed === null || this.#state !== RUNNING) return;
    if ((this.#rawEnds & 1) !== 0) return this.#abort(new SmuxError('ERR_SMUX_CANCELLED', 'the handler destroyed its stream'));
    const { error } = destroyed;
    this.fail(error === null ? { status: 'error', message: 'the handler destroyed its stream' } : this.#host.toRpcError(error));
  }

  #rawEnded(end: 1 | 2): void {
    this.#rawEnds |= end;
    if (this.#rawEnds === 3) this.answered();
  }

  /** Too large, malformed, over a limit: answer with the error and FIN (refusal is a state, not a running call). */
  #refuse(error: SmuxError): void {
    if (this.#state !== AWAITING && this.#state !== CONTROL) return;
    this.#endpoint.stopReading();
    this.#endpoint.write(encodeTransportError(error));
    this.#wrapUp(REFUSED);
  }

  /** The one way out after the last message: FIN after it, then wait (bounded) for the caller's FIN. */
  #wrapUp(state: typeof ANSWERED | typeof REFUSED): void {
    this.#state = state;
    this.#endpoint.stopReading(); // the caller's stream, if any, is no longer wanted
    const over = new SmuxError('ERR_SMUX_CANCELLED', 'the call is over');
    this.#input?.fail(over);
    if (this.#rawEnds !== 3) this.#raw?.fail(over);
    this.#reply.stop();
    this.#host.callSettled(this);
    this.#clearTimer();
    this.#runEndHook();
    if (this.channel.isClosed) return;
    this.#endpoint.end();
    this.#host.awaitCallerFin(this);
  }

  #abort(reason: SmuxError): void {
    this.#stopWork(reason);
    this.#state = CANCELLED;
    this.#host.callSettled(this);
    this.#clearTimer();
    this.#runEndHook();
    this.#endpoint.cancel();
  }

  /** Stops the handler's work: aborts `ctx.signal`, fails its input, stops its reply. */
  #stopWork(reason: SmuxError): void {
    this.#abortReason = reason;
    this.#controller?.abort(reason);
    this.#input?.fail(reason);
    this.#raw?.fail(reason);
    this.#reply.stop();
  }

  #runEndHook(): void {
    const hook = this.#endHook;
    this.#endHook = null;
    hook?.();
  }

  #startDeadline(ms: number): void {
    const clock = this.#host.clock;
    this.#deadline = clock.now() + ms;
    this.#timer = clock.setTimeout(() => {
      this.#timer = null;
      this.end('ERR_SMUX_TIMEOUT', `the call's deadline of ${ms} ms passed`);
    }, ms);
  }

  #clearTimer(): void {
    if (this.#timer !== null) this.#host.clock.clearTimeout(this.#timer);
    this.#timer = null;
  }
}
