import type { WritePacket } from '@nestjs/microservices';
import type { Unsubscribable } from 'rxjs';
import { type Clock, type SmuxChannel, SmuxError, type TimerHandle } from '../smux/index.js';
import type { AdmissionState } from './admission.js';
import { type CallMessage, decodeTransportError, Flag, Kind, type MessagePiece } from './call-codec.js';
import { CallEndpoint } from './call-endpoint.js';
import { registerEndpointOwner } from './endpoint-owner.js';
import { type ClientRawCall, rawCallAccess } from './client-raw-call.js';
import { deliverLater, isStarting } from './late-failure.js';
import { failureOf, type MetricsRecorder, type SmuxCallFailure } from './metrics.js';
import type { PacketCodec } from './packet-codec.js';
import { RequestSource } from './request-source.js';
import type { SmuxSource } from './sources.js';
import type { ClientSpan } from './tracing.js';

/** A call on its way: a request/response call or a byte stream. */
export type PendingCall = ClientCall | ClientRawCall;

/**
 * What the transport reaches of a call whose members are private — admission, the scheduler, a connection — as
 * functions given the call: the class's static block makes one table, so a call costs no object of its own.
 */
export interface CallAccess<C> {
  /** True once the call is over. */
  done(call: C): boolean;
  /** Whether it waits for a connection instead of failing fast while there is none. */
  waitForReady(call: C): boolean;
  /** Where it stands in admission (owned by {@link Admission}). */
  admission(call: C): AdmissionState;
  setAdmission(call: C, state: AdmissionState): void;
  /** Admission gave it a slot: connect it. */
  launch(call: C): void;
  /** Sends its request on a freshly opened stream. */
  open(call: C, channel: SmuxChannel): void;
  /** Fails it with `error` (and cancels it on the server if it was sent). */
  fail(call: C, error: unknown): void;
}

// Set by ClientCall's static block: the call is its subscription's teardown, which an app holds, so nothing of it but
// `unsubscribe()` is public.
let callAccess: CallAccess<ClientCall>;

/** What a {@link ClientCall} needs from the client. */
export interface ClientCallHost {
  readonly clock: Clock;
  readonly maxMessageBytes: number;
  /** Bytes an Observable source may have queued on its stream (it cannot be paused) before the call fails. */
  readonly maxSourceBufferBytes: number;
  readonly codec: PacketCodec;
  /** The call holds a slot: connect it (or fail it fast when there is no connection). */
  launch(call: PendingCall): void;
  /** The call is over (answered, failed or cancelled): its slot is free. */
  settled(call: PendingCall): void;
  /** The call was in flight when its connection died. */
  cutOff(): void;
  /** Why the client has no connection right now, if it has none (a deadline's `cause`). */
  connectError(): Error | null;
  /** The client's own `close()` is under way: a call its connection's end cuts off says so. */
  closing(): boolean;
  /** How many times the client's `close()` began: a call held back across one (tracing's lookup) fails, as queued ones do. */
  closes(): number;
  /** Where calls are counted, when the client keeps metrics. */
  readonly metrics?: MetricsRecorder;
}

/*
 * A call's life on the caller's side:
 *
 *   (new) ──admitted──▶ WAITING ──stream opened, REQUEST written──▶ OPEN ──LAST response──▶ DONE
 *     │ no slot                │ (connecting)                         │ error, EOF, deadline, unsubscribe
 *     ▼                        └──────────── fail / unsubscribe ──────┴──────────────────────▶ DONE
 *   QUEUED ──slot──▶ WAITING
 *
 * Admission's own bookkeeping (queued / holding a slot) is in `#admission`.
 */
const WAITING = 0;
const OPEN = 1;
const DONE = 2;

/**
 * One `send()` on the caller's side: it owns the call's stream, turns RESPONSE messages into Nest packets
 * for `callback` (Nest's `createObserver`), and is the Observable's teardown — unsubscribing before the last
 * response cancels the call (the stream is closed: smux has no RST, FIN before the end means cancel).
 */
export class ClientCall implements Unsubscribable {
  #admission: AdmissionState = 'none';
  readonly #host: ClientCallHost;
  readonly #callback: (packet: WritePacket) => void;
  readonly #request: MessagePiece[];
  readonly #timeout: number;
  /** Wait for a connection instead of failing fast while there is none. */
  readonly #waitForReady: boolean;
  #endpoint: CallEndpoint | null = null;
  #state = WAITING;
  #timer: TimerHandle | null = null;
  #delivering: Promise<void> | null = null; // custom deserializers may be async: keep responses in order
  #feedItems = 0; // feed items received (their sequence numbers tell how many were dropped)
  #source: RequestSource | null = null; // a streamed request's items, sent as DATA … END after the REQUEST
  #startedAt = 0; // on the metrics' clock
  readonly #span: ClientSpan | null;
  #late: Unsubscribable | null = null; // a failure decided inside the caller's subscribe(), told on a later turn

  /**
   * @param host - the client
   * @param callback - receives Nest packets (`createObserver(observer)` or a `publish()` callback)
   * @param request - the encoded REQUEST, written once a stream is open
   * @param timeout - the deadline in ms (0: none), counted from now (queueing and connecting included)
   * @param waitForReady - wait for a connection instead of failing fast
   * @param source - a streamed request's items (the REQUEST then carries the STREAM flag)
   * @param span - the call's trace span, ended when the call is over (its context is in `request`'s headers)
   */
  constructor(
    host: ClientCallHost,
    callback: (packet: WritePacket) => void,
    request: MessagePiece[],
    timeout: number,
    waitForReady: boolean,
    source: SmuxSource | null = null,
    span: ClientSpan | null = null,
  ) {
    if (host.metrics !== undefined) this.#startedAt = host.metrics.callStarted();
    this.#span = span;
    this.#host = host;
    this.#callback = callback;
    this.#request = request;
    this.#timeout = timeout;
    this.#waitForReady = waitForReady;
    if (timeout > 0) this.#timer = host.clock.setTimeout(() => this.#deadlinePassed(), timeout);
    if (source !== null) {
      const owner = { done: () => this.#state === DONE, fail: (error: unknown) => this.#fail(error) };
      this.#source = new RequestSource(source, owner, host.maxSourceBufferBytes);
    }
  }

  static {
    callAccess = {
      done: (call) => call.#state === DONE,
      waitForReady: (call) => call.#waitForReady,
      admission: (call) => call.#admission,
      setAdmission: (call, state) => (call.#admission = state),
      launch: (call) => call.#host.launch(call),
      open: (call, channel) => call.#open(channel),
      fail: (call, error) => call.#fail(error),
    };
    registerEndpointOwner(ClientCall, {
      onMessage: (call, message) => call.#onMessage(message),
      onReadError: (call, error) => call.#fail(error),
      onPeerEnd: (call) => call.#onPeerEnd(),
      onClosed: (call, error) => call.#onClosed(error),
    });
  }

  /** Teardown of the caller's subscription: cancels the call unless it is over; a failure not yet told never is. */
  unsubscribe(): void {
    if (this.#state !== DONE) this.#settle('ERR_SMUX_CANCELLED');
    this.#late?.unsubscribe();
  }

  // ── what the transport does with it (callAccess) ───────────────────────────────────────────────────────

  /** Sends the request on a freshly opened stream. */
  #open(channel: SmuxChannel): void {
    if (this.#state !== WAITING) {
      channel.destroy();
      return;
    }
    this.#state = OPEN;
    this.#endpoint = new CallEndpoint(channel, this.#host.maxMessageBytes, this, 'client', true, null, this.#host.metrics ?? null);
    this.#endpoint.write(this.#request);
    this.#source?.attach(this.#endpoint);
  }

  /** Fails the call with `error` (and cancels it on the server if it was sent): counted now, told later if starting. */
  #fail(error: unknown): void {
    if (this.#state === DONE) return;
    this.#settle(failureOf(error));
    const packet = { err: error, isDisposed: true } as WritePacket;
    // Inside the caller's subscribe(): told on a later turn (late-failure.ts says why).
    if (isStarting(this)) this.#late = deliverLater(this.#callback, packet);
    else this.#callback(packet);
  }

  // ── what its endpoint reports (registered handlers) ────────────────────────────────────────────────────

  #onPeerEnd(): void {
    if (this.#state === OPEN) {
      this.#failAfterDeliveries(new SmuxError('ERR_SMUX_STREAM_CLOSED', 'the server ended the stream before the call completed'));
    }
  }

  #onClosed(error: SmuxError | undefined): void {
    if (this.#state === OPEN) {
      if (error !== undefined) this.#host.cutOff();
      this.#failAfterDeliveries(error ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', `${closedBy(this.#host)} before the call completed`));
    }
  }

  /** A complete message. */
  #onMessage(message: CallMessage): void {
    if (this.#state !== OPEN) return;
    if (message.kind !== Kind.RESPONSE) {
      this.#fail(new SmuxError('ERR_SMUX_PROTOCOL', `unexpected message kind ${message.kind} on a call`));
      return;
    }
    if ((message.flags & Flag.TRANSPORT) !== 0) {
      // Written by the server's transport (deadline, shutdown, limit, malformed request): one error shape.
      this.#failAfterDeliveries(decodeTransportError(message.body));
      return;
    }
    const last = (message.flags & Flag.LAST) !== 0;
    let packet: WritePacket | Promise<WritePacket>;
    try {
      packet = this.#host.codec.decodeResponse(message);
      if ((message.flags & Flag.FEED) !== 0) packet = this.#feedItem(packet, message.seq ?? 0, message.timestamp ?? 0);
    } catch (error) {
      this.#fail(new SmuxError('ERR_SMUX_ENCODING', 'the deserializer rejected a response', { cause: error }));
      return;
    }
    if (this.#delivering === null && !(packet instanceof Promise)) {
      this.#deliver(packet, last);
      return;
    }
    const previous = this.#delivering ?? Promise.resolve();
    this.#delivering = previous
      .then(() => packet)
      .then(
        (p) => this.#deliver(p, last),
        (error: unknown) => this.#fail(new SmuxError('ERR_SMUX_ENCODING', 'the deserializer rejected a response', { cause: error })),
      );
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  /** A feed item as the caller sees it: the value with its sequence number, timestamp and the drops so far. */
  #feedItem(packet: WritePacket | Promise<WritePacket>, seq: number, timestamp: number): WritePacket | Promise<WritePacket> {
    const dropped = seq - 1 - this.#feedItems++;
    const wrap = (p: WritePacket): WritePacket => ({ ...p, response: { value: p.response as unknown, seq, timestamp, dropped } });
    return packet instanceof Promise ? packet.then(wrap) : wrap(packet);
  }

  #deadlinePassed(): void {
    this.#timer = null;
    const cause = this.#state === WAITING ? this.#host.connectError() : null;
    this.#fail(
      new SmuxError(
        'ERR_SMUX_TIMEOUT',
        `the call did not complete within its deadline of ${this.#timeout} ms${cause === null ? '' : ` (no connection: ${cause.message})`}`,
        cause === null ? undefined : { cause },
      ),
    );
  }

  /** Fails the call — after responses still being deserialized (async deserializer), which may complete it. */
  #failAfterDeliveries(error: SmuxError): void {
    if (this.#delivering === null) this.#fail(error);
    else void this.#delivering.then(() => this.#fail(error));
  }

  #deliver(packet: WritePacket, last: boolean): void {
    if (this.#state === DONE) return;
    // Settle before the terminal callback: the subscriber's teardown then sees a finished call, not a cancel.
    if (last) this.#settle(packet.err ? 'handler' : null); // an error as Nest's observer tells one
    this.#callback(last && packet.isDisposed !== true ? { ...packet, isDisposed: true } : packet);
  }

  /** The call is over: `failure` null when it delivered its last value, else why not (for metrics and its span). */
  #settle(failure: SmuxCallFailure | null): void {
    const wasOpen = this.#state === OPEN;
    this.#state = DONE;
    this.#host.metrics?.callEnded(this.#startedAt, failure);
    this.#span?.end(failure);
    if (this.#timer !== null) this.#host.clock.clearTimeout(this.#timer);
    this.#timer = null;
    // Our FIN: after the last response it completes the call; before it, it cancels the call (Go's Close).
    if (wasOpen) this.#endpoint?.cancel();
    this.#endpoint = null;
    this.#source?.stop(); // the call is over: nothing more is taken from the source
    this.#source = null;
    this.#host.settled(this);
  }
}

/** True once `call` is over. */
export function callDone(call: PendingCall): boolean {
  return call instanceof ClientCall ? callAccess.done(call) : rawCallAccess.done(call);
}

/** Whether `call` waits for a connection instead of failing fast while there is none. */
export function callWaitsForReady(call: PendingCall): boolean {
  return call instanceof ClientCall ? callAccess.waitForReady(call) : rawCallAccess.waitForReady(call);
}

/** Where `call` stands in admission. */
export function callAdmission(call: PendingCall): AdmissionState {
  return call instanceof ClientCall ? callAccess.admission(call) : rawCallAccess.admission(call);
}

/** Sets where `call` stands in admission (admission's own bookkeeping). */
export function setCallAdmission(call: PendingCall, state: AdmissionState): void {
  if (call instanceof ClientCall) callAccess.setAdmission(call, state);
  else rawCallAccess.setAdmission(call, state);
}

/** Admission gave `call` a slot: connect it. */
export function launchCall(call: PendingCall): void {
  if (call instanceof ClientCall) callAccess.launch(call);
  else rawCallAccess.launch(call);
}

/** Sends `call`'s request on a freshly opened stream (a call that is over destroys it). */
export function openCall(call: PendingCall, channel: SmuxChannel): void {
  if (call instanceof ClientCall) callAccess.open(call, channel);
  else rawCallAccess.open(call, channel);
}

/** Fails `call` with `error` (and cancels it on the server if it was sent). */
export function failCall(call: PendingCall, error: unknown): void {
  if (call instanceof ClientCall) callAccess.fail(call, error);
  else rawCallAccess.fail(call, error);
}

const CLIENT_CLOSED = 'the client was closed';

/** What a call fails with when its client's `close()` ends it before it was sent (queued, waiting, held back). */
export function clientClosed(): SmuxError {
  return new SmuxError('ERR_SMUX_SESSION_CLOSED', CLIENT_CLOSED);
}

/** Who ended a connection that closed gracefully under a call: the client itself (its `close()`), or the other side. */
export function closedBy(host: ClientCallHost): string {
  return host.closing() ? CLIENT_CLOSED : 'the connection closed';
}
