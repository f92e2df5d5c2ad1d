import { isObservable, type Observer, type Subscription } from 'rxjs';
import { type Clock, type SmuxChannel, type SmuxChannelHandler, SmuxError, type SmuxErrorCode, type TimerHandle } from '../smux/index.js';
import { type CallMessage, encodeTransportError, Flag, Kind, MessageReader } from './call-codec.js';
import type { CallControl } from './smux.context.js';

/** What a {@link ServerCall} needs from the server. */
export interface CallHost {
  readonly clock: Clock;
  readonly maxMessageBytes: number;
  readonly maxReplyBufferBytes: number;
  /** A REQUEST arrived: route it and run the handler (then `call.run(...)`), or fail it. */
  dispatchRequest(call: ServerCall, message: CallMessage): void;
  /** An EVENT arrived (the call is already closed). */
  dispatchEvent(call: ServerCall, message: CallMessage): void;
  /** A HELLO arrived: the stream is the connection's control stream, not a call. Answer it, or refuse it. */
  openControl(call: ServerCall, message: CallMessage): void;
  /** Encodes a RESPONSE (through the configured serializer). */
  encodeResponse(id: string | undefined, value: unknown, flags: number, status?: string): Buffer[];
  /** Converts a thrown value into what the caller receives as `err` (Nest's exception-filter defaults). */
  toRpcError(error: unknown): unknown;
  /** The call stopped running (answered, cancelled or failed). */
  callSettled(call: ServerCall): void;
  /** The call wrote its last message and FIN: watch for the caller's FIN for a while. */
  awaitCallerFin(call: ServerCall): void;
  /** The call is over: it no longer counts against the connection's limit. */
  callClosed(call: ServerCall): void;
}

const AWAITING = 0; // no complete first message yet
const RUNNING = 1; // handler dispatched; no LAST written
const REPLIED = 2; // LAST written (then FIN)
const CANCELLED = 3; // caller cancelled, deadline, shutdown or a failure: nothing more is written
const CONTROL = 4; // the connection's control stream (HELLO): not a call

/**
 * One call on the server: a smux stream whose first message is a REQUEST (or an EVENT). It reads the
 * request, lets the server run the handler, and writes the handler's values as RESPONSE messages — the last
 * one with LAST (Nest's `isDisposed`), merged into the final value as Nest's `send()` does — then FIN.
 *
 * A FIN from the caller before LAST means cancel: the handler's Observable is unsubscribed (its teardown
 * runs), `ctx.signal` aborts, and nothing more is written. The call is its own Observer (no per-call closures).
 */
export class ServerCall implements SmuxChannelHandler, CallControl, Observer<unknown> {
  /** The packet id of the request. */
  id: string | undefined;
  /** The call's stream. */
  readonly channel: SmuxChannel;
  /** The server's record of the connection the call came on. */
  readonly connection: unknown;
  /** When the server stops waiting for the caller's FIN (its FIN sweep). */
  finDue = 0;
  /** Our bytes still queued at the last FIN sweep (progress means a slow reader, not a gone one). */
  finQueued = -1;
  readonly #host: CallHost;
  #reader: MessageReader | null; // null: refused before its request was read (over the connection's limit)
  #refusal: SmuxError | null;
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
  #drainWaiter: (() => void) | null = null;
  #release: (() => void) | null = null; // frees a pulled AsyncIterable/Readable on cancel

  /**
   * @param host - the server
   * @param channel - the call's stream
   * @param connection - the server's record of the connection
   * @param refusal - set when the call must be refused (connection at its limit): it is answered with this
   *   error as soon as the caller's first bytes arrive, and the request is never buffered
   */
  constructor(host: CallHost, channel: SmuxChannel, connection: unknown, refusal: SmuxError | null = null) {
    this.#host = host;
    this.channel = channel;
    this.connection = connection;
    this.#refusal = refusal;
    this.#reader = refusal === null ? new MessageReader(host.maxMessageBytes) : null;
    channel.setHandler(this);
  }

  /** True while the handler runs and the caller still waits. */
  get running(): boolean {
    return this.#state === RUNNING;
  }

  // ── CallControl ────────────────────────────────────────────────────────────────────────────────────────

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

  // ── SmuxChannelHandler ─────────────────────────────────────────────────────────────────────────────────

  onData(data: Buffer): void {
    if (this.#state !== AWAITING) return; // the caller sends nothing after its request on these calls
    if (this.#reader === null) return this.#refuse(this.#refusal!);
    try {
      this.#reader.push(data, this);
    } catch (error) {
      this.#refuse(error as SmuxError);
    }
  }

  onEnd(): void {
    if (this.#state === AWAITING || this.#state === CONTROL) {
      this.channel.destroy(); // FIN without (or in the middle of) a request: nothing to answer; or the control stream ends
    } else if (this.#state === RUNNING) {
      this.#abort(new SmuxError('ERR_SMUX_CANCELLED', 'the caller cancelled the call'));
    }
  }

  onClose(): void {
    if (this.#state === RUNNING) this.#abort(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed'));
    this.#host.callClosed(this);
  }

  /** The stream's queue reached the socket: a pulling reply may continue. */
  onDrain(): void {
    const waiter = this.#drainWaiter;
    this.#drainWaiter = null;
    waiter?.();
  }

  /** A complete message (MessageReader sink). */
  onMessage(message: CallMessage): void {
    if (this.#state !== AWAITING) return;
    if (
      (message.kind === Kind.REQUEST || message.kind === Kind.EVENT) &&
      message.pattern === undefined &&
      (message.flags & Flag.OPAQUE) === 0
    ) {
      this.#refuse(new SmuxError('ERR_SMUX_PROTOCOL', 'a REQUEST or EVENT without a PATTERN field'));
    } else if (message.kind === Kind.REQUEST) {
      this.#state = RUNNING;
      this.id = message.id;
      if (message.timeout !== undefined && message.timeout > 0) this.#startDeadline(message.timeout);
      this.#host.dispatchRequest(this, message);
    } else if (message.kind === Kind.EVENT) {
      this.#state = REPLIED;
      this.channel.destroy(); // at most once: nothing goes back; forget the stream now
      this.#host.dispatchEvent(this, message);
    } else if (message.kind === Kind.HELLO) {
      this.#state = CONTROL;
      this.#reader = null; // what follows on the control stream is not read (yet: no control messages after HELLO)
      this.#host.openControl(this, message);
    } else {
      this.#refuse(new SmuxError('ERR_SMUX_PROTOCOL', `a call must start with REQUEST or EVENT, got kind ${message.kind}`));
    }
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
      this.error(this.#host.toRpcError(error));
      return;
    }
    if (this.#state !== RUNNING) {
      // Cancelled while guards or an async handler were pending: release the result as soon as it exists
      // (an Observable is unsubscribed, so the teardown of work the handler started runs).
      if (isObservable(result)) result.subscribe().unsubscribe();
      else if (isAsyncIterable(result)) release(result, undefined);
      this.#runEndHook();
      return;
    }
    if (isObservable(result)) {
      this.#subscription = result.subscribe(this);
      if (this.#state !== RUNNING) this.#subscription.unsubscribe(); // ended synchronously, or cancelled meanwhile
    } else if (isAsyncIterable(result)) {
      await this.#pull(result);
    } else {
      this.#write(result, Flag.LAST);
      this.#finish();
    }
  }

  /** Answers the call with an error at once (no handler, deserialization failed); `status` is Nest's `status`. */
  fail(error: unknown, status?: string): void {
    if (this.#state !== RUNNING) return;
    this.#write(error, Flag.LAST | Flag.ERROR, status);
    this.#finish();
  }

  /** Ends a running call with a transport error written by the server itself (deadline, shutdown, limit). */
  end(code: SmuxErrorCode, message: string): void {
    if (this.#state !== RUNNING) return;
    const error = new SmuxError(code, message);
    this.#dropSubscription(error);
    this.#hasPending = false;
    this.#writeTransportError(error);
    this.#finish();
  }

  /**
   * The server is shutting down: a running call ends with the retryable ERR_SMUX_SHUTTING_DOWN, and so does one
   * whose request is still arriving (its first bytes are in, so writing is safe). A stream that sent nothing
   * yet gets nothing (Go's opener may not have registered it); the closing session ends it.
   */
  shutdown(): void {
    const message = 'the server is shutting down';
    if (this.#state === RUNNING) this.end('ERR_SMUX_SHUTTING_DOWN', message);
    else if (this.#state === AWAITING && this.#reader?.partial === true) this.#refuse(new SmuxError('ERR_SMUX_SHUTTING_DOWN', message));
  }

  // ── Observer: values of the handler's Observable ───────────────────────────────────────────────────────

  next(value: unknown): void {
    if (this.#state !== RUNNING) return;
    if (this.#hasPending) this.#write(this.#pending, 0);
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
    this.#write(error, Flag.LAST | Flag.ERROR);
    this.#finish();
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
    this.#write(value, Flag.LAST);
    this.#finish();
  }

  /** Writes a value that waited for a possible completion. */
  flushPending(): void {
    this.#flushScheduled = false;
    if (!this.#hasPending || this.#state !== RUNNING) return;
    const value = this.#pending;
    this.#hasPending = false;
    this.#pending = undefined;
    this.#write(value, 0);
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  async #pull(source: AsyncIterable<unknown>): Promise<void> {
    const iterator = source[Symbol.asyncIterator]();
    // On cancel the source is released at once — a Readable idle in next() (a file, a cursor) would
    // otherwise stay open: an iterator's return() waits behind a pending next().
    this.#release = () => release(source, iterator);
    try {
      for (;;) {
        const step = await iterator.next();
        if (this.#state !== RUNNING) return this.#runEndHook();
        if (step.done === true) break;
        const value: unknown = step.value;
        this.#write(value, 0);
        if (!this.channel.writable) await new Promise<void>((resolve) => (this.#drainWaiter = resolve));
      }
    } catch (error) {
      this.#release = null;
      this.error(this.#host.toRpcError(error));
      return;
    }
    this.#release = null;
    if (this.#state !== RUNNING) return this.#runEndHook();
    this.#write(undefined, Flag.LAST);
    this.#finish();
  }

  /**
   * Writes one RESPONSE. Nothing is written on a stream that is already ended or gone (a session closing
   * gracefully ends every stream). A value JSON cannot carry (a BigInt, a cycle) fails the call with an error
   * instead of leaving the caller waiting; a reply outgrowing `maxReplyBufferBytes` fails it with ERR_SMUX_LIMIT.
   */
  #write(value: unknown, flags: number, status?: string): void {
    const channel = this.channel;
    if (channel.isClosed || channel.isEnded) return;
    let buffers: Buffer[];
    try {
      buffers = this.#host.encodeResponse(this.id, value, flags, status);
    } catch (error) {
      this.#dropSubscription(new SmuxError('ERR_SMUX_ENCODING', 'the reply could not be encoded', { cause: error }));
      this.#hasPending = false;
      buffers = this.#host.encodeResponse(this.id, this.#host.toRpcError(error), Flag.LAST | Flag.ERROR);
      for (const buffer of buffers) channel.write(buffer);
      this.#finish();
      return;
    }
    for (const buffer of buffers) channel.write(buffer);
    if ((flags & Flag.LAST) === 0 && channel.writableLength > this.#host.maxReplyBufferBytes) {
      this.end(
        'ERR_SMUX_LIMIT',
        `the reply exceeded ${this.#host.maxReplyBufferBytes} bytes buffered for a caller that does not read fast enough`,
      );
    }
  }

  /** The last message is written: FIN after it, then wait (bounded) for the caller's FIN. Runs once. */
  #finish(): void {
    if (this.#state !== RUNNING) return;
    this.#state = REPLIED;
    this.#host.callSettled(this);
    this.#clearTimer();
    this.onDrain(); // a pull loop waiting for the window lets go
    this.#runEndHook();
    if (this.channel.isClosed) return;
    if (!this.channel.isEnded) this.channel.end();
    this.#host.awaitCallerFin(this);
  }

  /** Refuses the stream with a transport error (then FIN); whatever else the caller sends is ignored. */
  refuse(error: SmuxError): void {
    this.#refuse(error);
  }

  #refuse(error: SmuxError): void {
    // Too large, malformed, or over a limit: answer with the error and FIN; whatever else the caller sends
    // is ignored (delivered and dropped, so it holds no memory).
    this.#reader = null;
    this.#state = RUNNING;
    this.#writeTransportError(error);
    this.#finish();
  }

  /** A refusal or ending written by the transport itself: native, whatever the serializer, flagged TRANSPORT. */
  #writeTransportError(error: SmuxError): void {
    const channel = this.channel;
    if (channel.isClosed || channel.isEnded) return;
    for (const buffer of encodeTransportError(error)) channel.write(buffer);
  }

  #abort(reason: SmuxError): void {
    this.#dropSubscription(reason);
    this.#state = CANCELLED;
    this.#host.callSettled(this);
    this.#clearTimer();
    this.onDrain();
    this.#runEndHook();
    this.channel.destroy();
  }

  #dropSubscription(reason: SmuxError): void {
    this.#abortReason = reason;
    this.#controller?.abort(reason);
    const subscription = this.#subscription;
    this.#subscription = null;
    const releaseSource = this.#release;
    this.#release = null;
    releaseSource?.();
    const state = this.#state;
    this.#state = CANCELLED; // so values emitted during teardown are dropped
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

function flushPending(call: ServerCall): void {
  call.flushPending();
}

/** Frees a reply source the caller no longer wants: `destroy()` a stream, else end the iterator. */
function release(source: AsyncIterable<unknown>, iterator: AsyncIterator<unknown> | undefined): void {
  const destroyable = source as Partial<{ destroy(): void }>;
  if (typeof destroyable.destroy === 'function') destroyable.destroy();
  else void Promise.resolve((iterator ?? source[Symbol.asyncIterator]()).return?.()).catch(() => undefined);
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return (
    typeof value === 'object' && value !== null && typeof (value as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] === 'function'
  );
}
