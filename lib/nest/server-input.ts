import { isObservable } from 'rxjs';
import { SmuxError } from '../smux/index.js';
import { type CallMessage, Flag, Kind } from './call-codec.js';
import type { CallEndpoint } from './call-endpoint.js';
import { callerSourceFailed, handlerFacing } from './handler-facing-error.js';
import { attachDuplex, byteStreamViolation, deliverToDuplex, failDuplex, type RawCallOwner, SmuxDuplex } from './raw-duplex.js';
import { endPayload, failPayload, pushToPayload, SmuxStreamedPayload } from './streamed-input.js';

/** What a {@link ServerInput} reports to its call. */
export interface InputOwner {
  /** True while the call runs (input arriving later than that is ignored). */
  readonly running: boolean;
  /** A byte stream is complete: both directions ended. */
  answered(): void;
  /** Cancels the call: nothing more is written. */
  cancel(reason: SmuxError): void;
  /** Answers with an error value (Nest's `err`) and ends the call. */
  fail(error: unknown): void;
  /** Ends the call with a transport error. */
  end(error: SmuxError): void;
  /** Converts a thrown value into what the caller receives as `err`. */
  toRpcError(error: unknown): unknown;
}

/**
 * What a running call reads after its REQUEST, when it reads on: the items of a streamed request (DATA … END,
 * the handler's {@link SmuxStreamedPayload}), or a byte stream's bytes (RAW … END each way, the handler's
 * {@link SmuxDuplex}). A plain request has none: one message is the whole call. One class per kind, so that a
 * streamed request carries none of a byte stream's state (56 B of each held client stream or bidirectional call).
 */
export abstract class ServerInput {
  /** The input a REQUEST announces through its flags (STREAM, RAW), or null when the request is the whole call. */
  static open(flags: number, endpoint: CallEndpoint, owner: InputOwner, highWaterMark: number): ServerInput | null {
    if ((flags & Flag.STREAM) !== 0) return new StreamedRequestInput(endpoint, owner);
    if ((flags & Flag.RAW) !== 0) return new ByteStreamInput(endpoint, owner, highWaterMark);
    return null;
  }

  /** True for a byte stream (RAW … END each way), false for a streamed request's items. */
  abstract get isByteStream(): boolean;

  /** The handler's payload when the request streams, else null (also once released). */
  abstract get payload(): SmuxStreamedPayload | null;

  /** The handler's Duplex when the call is a byte stream, else null. */
  abstract get duplex(): SmuxDuplex | null;

  /** A message after the request: an item of a streamed request or its end, or a byte stream's RAW or END. */
  abstract deliver(message: CallMessage, size: number): void;

  /** The handler settled: from now on, a byte stream's Duplex being destroyed fails the call. */
  handlerSettled(): void {}

  /** The call is over (answered or refused): input still arriving is cut off, unless a byte stream completed. */
  abstract close(): void;

  /** The call is stopped (cancelled, timed out, shutting down): the handler's input errors with the reason. */
  abstract stop(reason: SmuxError): void;

  /**
   * The call is over and its handler returned: the input is let go. A failed payload or a destroyed Duplex keeps
   * what it buffered (Node's streams do not drop it), and the call itself lives on until the caller's FIN —
   * without this, a caller that never FINs would pin every such buffer past the connection's budget.
   */
  abstract release(): void;
}

/** A streamed request's items (REQUEST + STREAM, then DATA … END), read by the handler's payload. */
class StreamedRequestInput extends ServerInput {
  readonly #endpoint: CallEndpoint;
  readonly #owner: InputOwner;
  #payload: SmuxStreamedPayload | null;

  constructor(endpoint: CallEndpoint, owner: InputOwner) {
    super();
    this.#endpoint = endpoint;
    this.#owner = owner;
    this.#payload = new SmuxStreamedPayload(endpoint);
  }

  get isByteStream(): boolean {
    return false;
  }

  get payload(): SmuxStreamedPayload | null {
    return this.#payload;
  }

  get duplex(): null {
    return null;
  }

  deliver(message: CallMessage, size: number): void {
    const payload = this.#payload;
    if (!this.#owner.running || payload === null) return;
    if (message.kind === Kind.DATA) return pushToPayload(payload, message.body, size);
    this.#endpoint.stopReading();
    if (message.kind === Kind.END && (message.flags & Flag.ERROR) === 0) endPayload(payload);
    else if (message.kind === Kind.END) failPayload(payload, callerSourceFailed(message.body));
    else this.#owner.end(new SmuxError('ERR_SMUX_PROTOCOL', `a streamed request carries DATA and END messages, got kind ${message.kind}`));
  }

  close(): void {
    if (this.#payload !== null) failPayload(this.#payload, handlerFacing(new SmuxError('ERR_SMUX_CANCELLED', 'the call is over')));
  }

  stop(reason: SmuxError): void {
    if (this.#payload !== null) failPayload(this.#payload, reason);
  }

  release(): void {
    this.#payload = null;
    this.#endpoint.hold(0);
  }
}

/** A byte stream (REQUEST + RAW, then RAW … END each way), read and written through the handler's Duplex. */
export class ByteStreamInput extends ServerInput implements RawCallOwner {
  readonly #endpoint: CallEndpoint;
  readonly #owner: InputOwner;
  #duplex: SmuxDuplex | null;
  #released = false;
  #ends = 0; // 1: our END + LAST is out; 2: the caller's END arrived; 3: both (the call is complete)
  #handlerDone = false; // the handler's promise settled (its error, if any, is the call's)
  #destroyed: { error: Error | null } | null = null; // the handler destroyed its Duplex before it finished
  #taken = false; // the handler asked for its Duplex (ctx.getDuplex())

  constructor(endpoint: CallEndpoint, owner: InputOwner, highWaterMark: number) {
    super();
    this.#endpoint = endpoint;
    this.#owner = owner;
    this.#duplex = new SmuxDuplex(highWaterMark);
    // A handler that does not listen for 'error' must not crash the process when the caller cancels: the cancel
    // reaches it through ctx.signal, its reads and pipeline() anyway.
    this.#duplex.on('error', ignore);
    attachDuplex(this.#duplex, endpoint, this); // the input is the Duplex's owner: no object of closures per call
  }

  get isByteStream(): boolean {
    return true;
  }

  get payload(): null {
    return null;
  }

  /** @throws SmuxError `ERR_SMUX_STREAM_CLOSED` once released (the call is over) */
  get duplex(): SmuxDuplex | null {
    if (this.#released) {
      throw new SmuxError('ERR_SMUX_STREAM_CLOSED', 'the byte stream is closed: the call is over and its handler returned');
    }
    this.#taken = true;
    return this.#duplex;
  }

  deliver(message: CallMessage): void {
    const duplex = this.#duplex;
    if (!this.#owner.running || duplex === null) return;
    const violation = byteStreamViolation(message);
    if (violation !== null) return this.#owner.end(violation);
    // The caller's END is its direction's last message: what follows it is not read (whatever the framing).
    if (message.kind !== Kind.END) return deliverToDuplex(duplex, message);
    this.#endpoint.stopReading();
    if ((message.flags & Flag.ERROR) === 0) return deliverToDuplex(duplex, message);
    // END + ERROR: the caller's direction failed, so ours can no longer end normally (the Duplex is destroyed, its
    // end() refused) — the call fails now, whatever the handler does: its Duplex errors and ctx.signal aborts with
    // the same error, and the caller gets a transport error + LAST, then FIN. Waiting for both ends instead held the
    // call, its slot and inFlight until the connection closed (found by a hostile-peer trial). After our END + LAST
    // the caller has its answer: the call is only cancelled.
    const error = callerSourceFailed(message.body);
    if ((this.#ends & 1) !== 0) this.#owner.cancel(error);
    else this.#owner.end(error);
  }

  override handlerSettled(): void {
    this.#handlerDone = true;
  }

  /**
   * The handler returned: the call completes when both directions ended, and its result only reports failures
   * (an Observable that errors).
   */
  adoptByteStreamResult(result: unknown, onError: (error: unknown) => void): void {
    if (isObservable(result)) result.subscribe({ error: onError, complete: () => this.#abandoned() });
    else this.#abandoned();
  }

  close(): void {
    if (this.#ends === 3 || this.#duplex === null) return;
    failDuplex(this.#duplex, handlerFacing(new SmuxError('ERR_SMUX_CANCELLED', 'the call is over')));
  }

  stop(reason: SmuxError): void {
    if (this.#duplex !== null) failDuplex(this.#duplex, reason);
  }

  release(): void {
    this.#released = true;
    this.#duplex = null;
    this.#destroyed = null; // its error's stack holds the Duplex's frames
    this.#endpoint.hold(0);
  }

  // ── RawCallOwner: what the Duplex reports (its ends, a destroy by the handler) ─────────────────────────

  /** The server's END is the call's last message (LAST). */
  get lastEnd(): boolean {
    return true;
  }

  writableEnded(): void {
    this.#ended(1);
  }

  readableEnded(): void {
    this.#ended(2);
  }

  destroyed(error: Error | null): void {
    this.#destroyed = { error };
    // A handler that throws out of a `for await` destroys its Duplex first: its own error, coming next, wins.
    if (this.#handlerDone) this.#abandoned();
  }

  /**
   * The handler finished. If it never took its Duplex, it does not serve byte streams: the call fails at once
   * (it waited for ends that would never come, holding its slot — found by a hostile-peer trial). If its Duplex was
   * destroyed without both ends, the call fails with why.
   */
  #abandoned(): void {
    if (!this.#owner.running) return;
    if (!this.#taken) {
      const why = 'the handler returned without taking its byte stream (ctx.getDuplex()): it does not serve byte streams';
      return this.#owner.end(new SmuxError('ERR_SMUX_INVALID_ARGUMENT', why));
    }
    const destroyed = this.#destroyed;
    if (destroyed === null) return;
    if ((this.#ends & 1) !== 0) return this.#owner.cancel(new SmuxError('ERR_SMUX_CANCELLED', 'the handler destroyed its stream'));
    const { error } = destroyed;
    this.#owner.fail(error === null ? { status: 'error', message: 'the handler destroyed its stream' } : this.#owner.toRpcError(error));
  }

  #ended(end: 1 | 2): void {
    this.#ends |= end;
    if (this.#ends === 3) this.#owner.answered();
  }
}

/** The byte stream's 'error' listener: a handler that does not listen must not crash the process on a cancel. */
function ignore(): void {}
