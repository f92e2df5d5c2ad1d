import { isObservable, type Observer, type Subscription } from 'rxjs';
import { type Clock, type SmuxChannel, SmuxError, type SmuxErrorCode, type TimerHandle } from '../smux/index.js';
import { type CallMessage, encodeTransportError, Flag, Kind } from './call-codec.js';
import { CallEndpoint, type EndpointOwner } from './call-endpoint.js';
import type { PacketCodec } from './packet-codec.js';
import { isAsyncIterable, pullSource, releaseSource } from './sources.js';
import { SmuxStreamedPayload } from './streamed-input.js';
import type { CallControl } from './smux.context.js';

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
 * writes the handler's values as RESPONSE messages — the last one with LAST (Nest's `isDisposed`), merged into
 * the final value as Nest's `send()` does — then FIN. A FIN from the caller before LAST cancels: the handler's
 * Observable is unsubscribed (its teardown runs), `ctx.signal` aborts, nothing more is written. The call is
 * its own Observer (no per-call closures).
 */
export class ServerCall implements EndpointOwner, CallControl, Observer<unknown> {
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
  readonly #refusal: SmuxError | null;
  #state = AWAITING;
  #subscription: Subscription | null = null;
  #controller: AbortController | null = null;
  #abortReason: SmuxError | null = null;
  #deadline: number | undefined;
  #timer: TimerHandle | null = null;
  #pending: unknown;
  #hasPending = false;
  #flushScheduled = false;
  #values = 0; // values seen from the handler's Observable
  #endHook: (() => void) | null = null;
  #release: (() => void) | null = null; // frees a pulled AsyncIterable/Readable on cancel
  #input: SmuxStreamedPayload | null = null; // the items of a streamed request (DATA … END)

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
  }

  /** The call's stream. */
  get channel(): SmuxChannel {
    return this.#endpoint.channel;
  }

  /** The handler's payload when the request is streamed (its data arrives as DATA items), else null. */
  get input(): SmuxStreamedPayload | null {
    return this.#input;
  }

  /** True while the handler runs and the caller still waits. */
  get running(): boolean {
    return this.#state === RUNNING;
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
    const { kind } = message;
    if (kind === Kind.REQUEST && (message.flags & Flag.STREAM) !== 0) {
      const endpoint = this.#endpoint;
      this.#input = new SmuxStreamedPayload({
        pause: () => endpoint.pause(),
        resume: () => endpoint.resume(),
        abandon: () => endpoint.stopReading(),
      });
    } else {
      this.#endpoint.stopReading(); // one message is a whole call; what follows it is not read (whatever the framing)
    }
    if ((kind === Kind.REQUEST || kind === Kind.EVENT) && message.pattern === undefined && (message.flags & Flag.OPAQUE) === 0) {
      this.#refuse(new SmuxError('ERR_SMUX_PROTOCOL', 'a REQUEST or EVENT without a PATTERN field'));
    } else if (kind === Kind.REQUEST) {
      this.#state = RUNNING;
      this.id = message.id;
      if (message.timeout !== undefined && message.timeout > 0) this.#startDeadline(message.timeout);
      this.#host.dispatchRequest(this, message);
    } else if (kind === Kind.EVENT) {
      this.#state = EVENT;
      this.#endpoint.cancel(); // at most once: nothing goes back; forget the stream now
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
    this.#refuse(error); // too large or malformed
  }

  onPeerEnd(): void {
    if (this.#state === RUNNING)
      this.#abort(cancelled()); // a FIN before our last message
    else if (this.#state === AWAITING || this.#state === CONTROL) this.#endpoint.cancel(); // nothing to answer
  }

  onClosed(): void {
    if (this.#state === RUNNING) this.#abort(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed'));
    this.#host.callClosed(this);
  }

  // ── Running the handler ────────────────────────────────────────────────────────────────────────────────

  /**
   * Runs the handler and adopts its result. `endHook` (processing end hook) runs exactly once when the call
   * is over. A plain value is answered with one message; an Observable is subscribed; an AsyncIterable or
   * Readable is pulled with backpressure. A call cancelled before this point never runs its handler.
   */
  async run(handler: (data: unknown, ctx: unknown) => unknown, data: unknown, ctx: unknown, endHook: (() => void) | null): Promise<void> {
    this.#endHook = endHook;
    if (this.#state !== RUNNING) return this.#runEndHook();
    let result: unknown;
    try {
      result = await handler(data, ctx);
    } catch (error) {
      return this.error(this.#host.toRpcError(error));
    }
    if (this.#state !== RUNNING) {
      // Cancelled while guards or an async handler were pending: release the result as soon as it exists
      // (an Observable is unsubscribed, so the teardown of work the handler started runs).
      if (isObservable(result)) result.subscribe({ error: () => undefined }).unsubscribe();
      else if (isAsyncIterable(result)) releaseSource(result);
      return this.#runEndHook();
    }
    if (isObservable(result)) {
      this.#subscription = result.subscribe(this);
      if (this.#state !== RUNNING) this.#subscription.unsubscribe(); // ended synchronously, or cancelled meanwhile
    } else if (isAsyncIterable(result)) {
      await this.#pull(result);
    } else {
      this.#answer(result, Flag.LAST);
    }
  }

  /** Answers the call with an error at once (no handler, deserialization failed); `status` is Nest's `status`. */
  fail(error: unknown, status?: string): void {
    if (this.#state === RUNNING) this.#answer(error, Flag.LAST | Flag.ERROR, status);
  }

  /** Ends a running call with a transport error written by the server itself (deadline, shutdown, limit). */
  end(code: SmuxErrorCode, message: string): void {
    if (this.#state !== RUNNING) return;
    const error = new SmuxError(code, message);
    this.#dropSubscription(error);
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

  // ── Observer: values of the handler's Observable ───────────────────────────────────────────────────────

  next(value: unknown): void {
    if (this.#state !== RUNNING) return;
    if (this.#hasPending) this.#send(this.#pending, 0);
    this.#pending = value;
    this.#hasPending = true;
    // An AsyncIterable as the only value is what an interceptor makes of a handler's async generator or
    // Readable: complete() pulls it rather than writing it as JSON, so it must wait.
    if (++this.#values === 1 && isAsyncIterable(value)) return;
    // Like Nest's send(): a completion within the same tick merges LAST into this value.
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      process.nextTick(flushPending, this);
    }
  }

  error(error: unknown): void {
    if (this.#state !== RUNNING) return;
    this.flushPending();
    this.#answer(error, Flag.LAST | Flag.ERROR);
  }

  complete(): void {
    if (this.#state !== RUNNING) return;
    const value = this.#hasPending ? this.#pending : undefined;
    this.#hasPending = false;
    this.#pending = undefined;
    if (this.#values === 1 && isAsyncIterable(value)) {
      this.#subscription = null;
      void this.#pull(value);
      return;
    }
    this.#answer(value, Flag.LAST);
  }

  /** Writes a value that waited for a possible completion. */
  flushPending(): void {
    this.#flushScheduled = false;
    if (!this.#hasPending || this.#state !== RUNNING) return;
    const value = this.#pending;
    this.#hasPending = false;
    this.#pending = undefined;
    this.#send(value, 0);
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  async #pull(source: AsyncIterable<unknown>): Promise<void> {
    const live = (): boolean => this.#state === RUNNING;
    const outcome = await pullSource(
      this.#endpoint,
      source,
      (value) => this.#send(value, 0),
      live,
      (release) => (this.#release = release),
    );
    if (!live()) return this.#runEndHook();
    if (outcome.done) this.#answer(undefined, Flag.LAST);
    else this.error(this.#host.toRpcError(outcome.error));
  }

  /** A message after the request: an item of a streamed request, or its end. */
  #onInput(message: CallMessage, size: number): void {
    const input = this.#input;
    if (input === null || this.#state !== RUNNING) return;
    if (message.kind === Kind.DATA) return input.push(message.body, size);
    this.#endpoint.stopReading();
    if (message.kind === Kind.END && (message.flags & Flag.ERROR) === 0) input.end();
    else if (message.kind === Kind.END) input.fail(message.body);
    else this.end('ERR_SMUX_PROTOCOL', `a streamed request carries DATA and END messages, got kind ${message.kind}`);
  }

  /** Writes the call's last message and wraps up. */
  #answer(value: unknown, flags: number, status?: string): void {
    if (this.#send(value, flags, status)) this.#wrapUp(ANSWERED);
  }

  /**
   * Writes one RESPONSE; false when the call ended instead. A value JSON cannot carry (a BigInt, a cycle) fails the
   * call with an error rather than leaving the caller waiting; a reply outgrowing `maxReplyBufferBytes` fails it
   * with ERR_SMUX_LIMIT.
   */
  #send(value: unknown, flags: number, status?: string): boolean {
    let buffers: Buffer[];
    try {
      buffers = this.#host.codec.encodeResponse(this.id, value, flags, status);
    } catch (error) {
      this.#dropSubscription(new SmuxError('ERR_SMUX_ENCODING', 'the reply could not be encoded', { cause: error }));
      this.#hasPending = false;
      this.#endpoint.write(this.#host.codec.encodeResponse(this.id, this.#host.toRpcError(error), Flag.LAST | Flag.ERROR));
      this.#wrapUp(ANSWERED);
      return false;
    }
    this.#endpoint.write(buffers);
    if ((flags & Flag.LAST) === 0 && this.#endpoint.writableLength > this.#host.maxReplyBufferBytes) {
      this.end(
        'ERR_SMUX_LIMIT',
        `the reply exceeded ${this.#host.maxReplyBufferBytes} bytes buffered for a caller that does not read fast enough`,
      );
      return false;
    }
    return true;
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
    this.#input?.fail(new SmuxError('ERR_SMUX_CANCELLED', 'the call is over'));
    this.#host.callSettled(this);
    this.#clearTimer();
    this.#runEndHook();
    if (this.channel.isClosed) return;
    this.#endpoint.end();
    this.#host.awaitCallerFin(this);
  }

  #abort(reason: SmuxError): void {
    this.#dropSubscription(reason);
    this.#state = CANCELLED;
    this.#host.callSettled(this);
    this.#clearTimer();
    this.#runEndHook();
    this.#endpoint.cancel();
  }

  /** Stops the handler's work: aborts `ctx.signal`, releases a pulled source, unsubscribes the Observable. */
  #dropSubscription(reason: SmuxError): void {
    this.#abortReason = reason;
    this.#input?.fail(reason);
    this.#controller?.abort(reason);
    const release = this.#release;
    this.#release = null;
    release?.();
    const subscription = this.#subscription;
    this.#subscription = null;
    const state = this.#state;
    this.#state = CANCELLED; // values emitted during the teardown are dropped
    subscription?.unsubscribe();
    this.#state = state;
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

function cancelled(): SmuxError {
  return new SmuxError('ERR_SMUX_CANCELLED', 'the caller cancelled the call');
}

function flushPending(call: ServerCall): void {
  call.flushPending();
}
