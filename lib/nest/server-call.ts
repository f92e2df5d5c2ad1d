import { type SmuxChannel, SmuxError, type TimerHandle } from '../smux/index.js';
import { type CallMessage, encodeTransportError, Flag, Kind } from './call-codec.js';
import { CallEndpoint } from './call-endpoint.js';
import type { EndpointOwner } from './endpoint-owner.js';
import type { ConnectionBudget } from './connection-budget.js';
import type { SmuxCallFailure } from './metrics.js';
import type { CallHost } from './server-call-host.js';
import { handlerFacing } from './handler-facing-error.js';
import type { SmuxDuplex } from './raw-duplex.js';
import { adoptResult, answerReply, type ReplyOwner, ServerReply, stopReply } from './server-reply.js';
import type { CallControl } from './smux.context.js';
import { ByteStreamInput, type InputOwner, ServerInput } from './server-input.js';
import { controlRefusal } from './server-control.js';
import { releaseResult } from './sources.js';
import type { SmuxStreamedPayload } from './streamed-input.js';
import { type ServerSpan, serverSpanOf } from './tracing.js';

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

// Where the handler is: run() takes a call once (Nest's start hook may call its `done` again: that is a no-op).
const HANDLER_IDLE = 0;
const HANDLER_RUNNING = 1;
const HANDLER_RETURNED = 2;

type Handler = (data: unknown, ctx: unknown) => unknown;
type Feed = { bufferSize: number };

/**
 * The Nest semantics of one call on the server: it reads the request, lets the server run the handler, and
 * has its result written ({@link ServerReply}); a FIN from the caller before the last message cancels — the
 * handler's work is stopped, `ctx.signal` aborts, nothing more is written.
 */
export class ServerCall implements EndpointOwner, CallControl, ReplyOwner, InputOwner {
  /** The packet id of the request. */
  id: string | undefined;
  /** When the call's stream opened (the server's clock). */
  readonly openedAt: number;
  /** The server's record of the connection the call came on. */
  readonly connection: unknown;
  /** When the server stops waiting for the caller's FIN (its FIN sweep). */
  finDue = 0;
  /** Our bytes still queued at the last FIN sweep (progress means a slow reader, not a gone one). */
  finQueued = -1;
  /** Index in the FIN sweep's set (owned by it). */
  finSlot = -1;
  /** Index in its connection's set of calls (owned by it). */
  connectionSlot = -1;
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
  #input: ServerInput | null = null; // what a streamed request or a byte stream reads after its REQUEST
  #handler = HANDLER_IDLE;
  #span: ServerSpan | null = null;
  #failsWith: SmuxError | null = null; // see notByteStream()

  /**
   * @param host - the server
   * @param channel - the call's stream
   * @param connection - the server's record of the connection
   * @param refusal - set when the call must be refused (over a limit, shutting down): it is answered with this
   *   error as soon as the caller's first bytes arrive, and the request is never buffered
   */
  constructor(
    host: CallHost,
    channel: SmuxChannel,
    connection: unknown,
    refusal: SmuxError | null = null,
    budget: ConnectionBudget | null = null,
  ) {
    this.#host = host;
    this.connection = connection;
    this.#refusal = refusal;
    this.openedAt = host.clock.now();
    this.#endpoint = new CallEndpoint(channel, host.maxMessageBytes, this, 'server', refusal === null, budget, host.metrics ?? null);
    this.#reply = new ServerReply(this.#endpoint, host.codec, this, host.maxReplyBufferBytes);
  }

  /** The call's stream. */
  get channel(): SmuxChannel {
    return this.#endpoint.channel;
  }
  /**
   * True while the handler runs and the caller still waits — not once its work is being stopped: an abort listener
   * of the handler's (one that destroys its Duplex) must not answer a call that is ending (found in review: the call
   * was settled twice, `inFlight` went negative).
   */
  get running(): boolean {
    return this.#state === RUNNING && this.#abortReason === null;
  }
  /** The handler's payload when the request streams (its data arrives as DATA items), else null. */
  get input(): SmuxStreamedPayload | null {
    return this.#input?.payload ?? null;
  }
  get duplex(): SmuxDuplex | null {
    return this.#input?.duplex ?? null;
  }
  /** A byte stream's RAW messages are taken in pieces as they arrive (MessageSink). */
  get rawPieces(): boolean {
    return this.#input?.isByteStream === true;
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
    if (this.#state === CONTROL) {
      const refusal = controlRefusal(message.kind);
      return refusal === null ? this.#host.controlMessage(this, message) : this.refuse(refusal);
    }
    if (this.#state !== AWAITING) return this.#input?.deliver(message, size);
    const { kind, flags } = message;
    const endpoint = this.#endpoint;
    if (kind === Kind.REQUEST) {
      this.#input = ServerInput.open(flags, endpoint, this, this.channel.session.config.streamHighWaterMark);
    }
    // One message is a whole call unless its input streams: what follows it is not read (whatever the framing).
    if (this.#input === null && kind !== Kind.HELLO) endpoint.stopReading(); // the control stream reads on
    if ((kind === Kind.REQUEST || kind === Kind.EVENT) && message.pattern === undefined && (flags & Flag.OPAQUE) === 0) {
      this.refuse(new SmuxError('ERR_SMUX_PROTOCOL', 'a REQUEST or EVENT without a PATTERN field'));
    } else if (kind === Kind.REQUEST) {
      this.#state = RUNNING;
      this.#host.metrics?.callOpened();
      this.id = message.id;
      if (message.timeout !== undefined && message.timeout > 0) this.#startDeadline(message.timeout);
      this.#host.dispatchRequest(this, message);
    } else if (kind === Kind.EVENT) {
      this.#state = EVENT;
      this.#host.metrics?.eventReceived();
      endpoint.cancel(); // at most once: nothing goes back; forget the stream now
      this.#host.dispatchEvent(this, message, size);
    } else if (kind === Kind.HELLO) {
      this.#state = CONTROL;
      this.#host.openControl(this, message);
    } else {
      this.refuse(new SmuxError('ERR_SMUX_PROTOCOL', `a call must start with REQUEST or EVENT, got kind ${kind}`));
    }
  }

  onUnreadData(): void {
    if (this.#state === AWAITING && this.#refusal !== null) this.refuse(this.#refusal); // answered on its first bytes
  }

  onReadError(error: SmuxError): void {
    if (this.#state === RUNNING)
      this.end(error); // a streamed request's item too large, malformed
    else this.refuse(error);
  }

  onPeerEnd(): void {
    if (this.#state === RUNNING) this.cancel(new SmuxError('ERR_SMUX_CANCELLED', 'the caller cancelled the call'));
    else if (this.#state === AWAITING || this.#state === CONTROL)
      this.#endpoint.cancel(); // nothing to answer
    // Answered, and the caller closed before reading all of it (it refused a reply over its maxMessageBytes, or
    // gave up): what is still queued will never be read, so it goes now rather than pin the connection's budget.
    else if (this.#endpoint.writableLength > 0) this.#endpoint.cancel();
  }

  /**
   * The caller's FIN came while its request is paused unread (a handler that does not read its stream, or reads it
   * slowly): a FIN before the last message cancels whatever is still unread. Waiting for the handler to read up to it
   * held the call, its slot and its budget for good (found by a new-user trial: five such cancels filled a connection's
   * maxCallsPerConnection of 5). An answered call's caller is done: what it sent that nobody read goes too, rather than
   * wait in the budget for the FIN sweep.
   */
  onPeerEndHeld(): void {
    if (this.#state === RUNNING) this.onPeerEnd();
    else if (this.#state === ANSWERED) this.#endpoint.cancel();
  }

  onClosed(): void {
    if (this.#state === RUNNING) this.cancel(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed'));
    this.#host.callClosed(this);
  }

  // ── Running the handler ────────────────────────────────────────────────────────────────────────────────

  /**
   * Runs the handler and adopts its result. `endHook` (processing end hook) runs exactly once when the call is
   * over; `feed` marks the reply as a real-time feed. A call cancelled before this point never runs its handler.
   * With OpenTelemetry, handler and reply run inside the call's server span (tracing.ts), ended when the call is over.
   * Only the first run counts: a start hook that calls its `done` again gets a resolved promise, and nothing runs.
   */
  run(handler: Handler, data: unknown, ctx: unknown, endHook: (() => void) | null, feed: Feed | null = null): Promise<void> {
    if (this.#handler !== HANDLER_IDLE) return Promise.resolve();
    this.#endHook = endHook;
    if (this.#state !== RUNNING) {
      this.#handler = HANDLER_RETURNED; // cancelled before it ran: it never will
      return Promise.resolve(this.#runEndHook());
    }
    const span = (this.#span = serverSpanOf(ctx));
    return span === null ? this.#handle(handler, data, ctx, feed) : span.run(() => this.#handle(handler, data, ctx, feed));
  }

  /**
   * Runs the handler; its result is adopted once its promise settles. Chained with `then`, not an async function:
   * a handler that is still running (a client stream's `for await`) held a suspended async frame of ours
   * (≈ 0.5 KiB per open call) where a promise reaction is all that is needed.
   */
  #handle(handler: Handler, data: unknown, ctx: unknown, feed: Feed | null): Promise<void> {
    this.#handler = HANDLER_RUNNING;
    let result: unknown;
    try {
      result = handler(data, ctx);
    } catch (error) {
      return Promise.resolve(this.#handlerFailed(error));
    }
    return Promise.resolve(result).then(
      (value) => this.#adopt(value, feed),
      (error: unknown) => this.#handlerFailed(error),
    );
  }

  #handlerFailed(error: unknown): void {
    this.#handlerReturned();
    this.#reply.error(this.#host.toRpcError(error));
  }

  #adopt(result: unknown, feed: Feed | null): Promise<void> | void {
    this.#handlerReturned();
    if (this.#state !== RUNNING) {
      releaseResult(result); // cancelled while guards or an async handler were pending: stop what it started
      return this.#runEndHook();
    }
    // A byte-stream call completes when both directions ended; the handler's result only reports failures.
    if (this.#input instanceof ByteStreamInput) return this.#input.adoptByteStreamResult(result, (error) => this.#reply.error(error));
    return adoptResult(this.#reply, result, feed === null ? null : { bufferSize: feed.bufferSize, clock: this.#host.clock });
  }

  /** Answers the call with an error at once (no handler, deserialization failed); `status` is Nest's `status`. */
  fail(error: unknown, status?: string): void {
    answerReply(this.#reply, error, Flag.LAST | Flag.ERROR, status);
  }

  /** Ends a running call with a transport error written by the server itself (deadline, shutdown, limit). */
  end(error: SmuxError): void {
    if (this.#state !== RUNNING) return;
    if (error.code === 'ERR_SMUX_ENCODING') this.#host.replyUnencodable(this, error.cause);
    else if (error.code === 'ERR_SMUX_LIMIT') {
      // The handler has run: a retry would run it again (a streamed call's later item over maxPendingRequestBytes
      // comes here with the budget's retryable error, right only for a request that had not arrived whole).
      if (error.retryable) error = new SmuxError(error.code, error.message, { cause: error.cause });
      this.#host.limitReached(this, error);
    }
    this.#stopWork(error);
    this.#endpoint.write(encodeTransportError(error));
    this.#wrapUp(ANSWERED, error.code);
  }

  /**
   * Refuses the stream with a transport error, then FIN; whatever else the caller sends is ignored. Too large,
   * malformed, over a limit: refusal is a state, not a running call.
   */
  refuse(error: SmuxError): void {
    if (this.#state !== AWAITING && this.#state !== CONTROL) return;
    // A refusal decided as the stream opened (a refused connection, shutdown, maxCallsPerConnection) is logged there.
    if (error.code === 'ERR_SMUX_LIMIT' && error !== this.#refusal) this.#host.limitReached(this, error);
    this.#host.metrics?.callOpened(); // a stream refused before its request: a call that failed
    this.#endpoint.stopReading();
    this.#endpoint.write(encodeTransportError(error));
    this.#wrapUp(REFUSED, error.code);
  }

  /**
   * The server's periodic check: a request that has not arrived whole within `ms` of its stream opening, or a
   * streamed message that has been arriving for `ms`, fails with ERR_SMUX_TIMEOUT (a stream that sent nothing is
   * just closed: writing first could race Go's opener). Also refreshes the call's reply charge.
   */
  sweep(now: number, ms: number): void {
    const endpoint = this.#endpoint;
    endpoint.refreshReplyCharge();
    if (this.#state === AWAITING && now - this.openedAt >= ms) {
      if (!endpoint.partial) return endpoint.cancel();
      const error = new SmuxError('ERR_SMUX_TIMEOUT', `the request did not arrive whole within ${ms} ms (the server's requestTimeout)`);
      this.#host.limitReached(this, error);
      this.refuse(error);
    } else if (this.#state === RUNNING && endpoint.partialSince !== 0 && now - endpoint.partialSince >= ms) {
      const error = new SmuxError(
        'ERR_SMUX_TIMEOUT',
        `a streamed message did not arrive whole within ${ms} ms (the server's requestTimeout)`,
      );
      this.#host.limitReached(this, error);
      this.end(error);
    }
  }

  /**
   * The server is shutting down: a running call ends with the retryable ERR_SMUX_SHUTTING_DOWN, and so does one
   * whose request is still arriving (its first bytes are in, so writing is safe). A stream that sent nothing
   * yet gets nothing (Go's opener may not have registered it); the closing session ends it. `message`: why, when it
   * is not the whole server (a drained connection's grace period is over).
   */
  shutdown(message = 'the server is shutting down'): void {
    if (this.#state === RUNNING) this.end(new SmuxError('ERR_SMUX_SHUTTING_DOWN', message));
    else if (this.#state === AWAITING && this.#endpoint.partial) this.refuse(new SmuxError('ERR_SMUX_SHUTTING_DOWN', message));
  }

  // ── ReplyOwner ─────────────────────────────────────────────────────────────────────────────────────────

  /** The last message is written (`errored`: it is an error value). */
  answered(errored = false): void {
    if (this.#state === RUNNING) this.#wrapUp(ANSWERED, errored ? 'handler' : null);
  }

  toRpcError(error: unknown): unknown {
    return this.#host.toRpcError(error);
  }

  /** `ctx.getDuplex()` threw `refusal` (the call is not a byte stream): a failure of the handler ends the call with it. */
  notByteStream(refusal: SmuxError): void {
    this.#failsWith ??= refusal;
  }

  get failsWith(): SmuxError | null {
    return this.#failsWith;
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  /** The one way out after the last message: FIN after it, then wait (bounded) for the caller's FIN. */
  #wrapUp(state: typeof ANSWERED | typeof REFUSED, failure: SmuxCallFailure | null): void {
    this.#state = state;
    this.#endpoint.stopReading(); // the caller's stream, if any, is no longer wanted
    stopReply(this.#reply);
    this.#input?.close();
    const endedAt = this.#settled(failure);
    if (this.channel.isClosed) return;
    this.#endpoint.end();
    this.#host.awaitCallerFin(this, endedAt);
  }

  /** Cancels the call: the handler's work stops, nothing more is written (the caller FINed, the connection closed). */
  cancel(reason: SmuxError): void {
    this.#stopWork(reason);
    this.#state = CANCELLED;
    this.#settled(reason.code);
    this.#endpoint.cancel();
  }

  /**
   * The call stopped running (`failure` null: answered with a value): the server's count, the deadline, the
   * processing end hook, the input, its metrics and span. Returns the time it ended (one clock read per call).
   */
  #settled(failure: SmuxCallFailure | null): number {
    const endedAt = this.#host.clock.now();
    this.#host.metrics?.callEnded(this.openedAt, failure, endedAt);
    this.#span?.end(failure);
    if (this.#handler !== HANDLER_RUNNING) this.#freeSlot();
    else this.#host.callStopped(); // a close waiting for the running calls looks again (the slot waits for the handler)
    if (this.#timer !== null) this.#host.clock.clearTimeout(this.#timer);
    this.#timer = null;
    this.#runEndHook();
    return endedAt;
  }

  /** The handler's promise settled: a call that is over lets its input and its slot go now. */
  #handlerReturned(): void {
    this.#handler = HANDLER_RETURNED;
    this.#input?.handlerSettled();
    if (this.#state !== RUNNING) this.#freeSlot();
  }

  /**
   * The call is over and its handler is not running: its input goes, and its slot on the connection
   * (`maxCallsPerConnection`). A call cancelled while its async handler still runs keeps its slot until the handler
   * returns — else a caller cancelling each call at once (HTTP/2's "rapid reset") ran handlers without bound.
   */
  #freeSlot(): void {
    this.#input?.release();
    this.#host.callSettled(this);
  }

  /** True while the handler runs (also after the call was cancelled: it holds its slot until it returns). */
  get handlerRunning(): boolean {
    return this.#handler === HANDLER_RUNNING;
  }

  /**
   * Stops the handler's work: aborts `ctx.signal`, fails its input, stops its reply — with `reason` as handler code
   * receives it, which Nest's exception filter does not log when the handler lets it propagate (handler-facing-error.ts).
   */
  #stopWork(reason: SmuxError): void {
    const facing = handlerFacing(reason);
    this.#abortReason = facing;
    this.#controller?.abort(facing);
    stopReply(this.#reply); // first: the input's error must not run down the handler's reply as if it failed
    this.#input?.stop(facing);
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
      this.end(new SmuxError('ERR_SMUX_TIMEOUT', `the call's deadline of ${ms} ms passed`));
    }, ms);
  }
}
