import { isObservable } from 'rxjs';
import { SmuxError } from '../smux/index.js';
import { type CallMessage, Flag, Kind } from './call-codec.js';
import type { CallEndpoint } from './call-endpoint.js';
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
 * {@link SmuxDuplex}). A plain request has none: one message is the whole call.
 */
export class ServerInput implements RawCallOwner {
  /** True for a byte stream (RAW … END each way), false for a streamed request's items. */
  readonly isByteStream: boolean;
  readonly #endpoint: CallEndpoint;
  #payload: SmuxStreamedPayload | null;
  #duplex: SmuxDuplex | null;
  #released = false;
  readonly #owner: InputOwner;
  #ends = 0; // byte streams — 1: our END + LAST is out; 2: the caller's END arrived; 3: both (the call is complete)
  #handlerDone = false; // the handler's promise settled (its error, if any, is the call's)
  #destroyed: { error: Error | null } | null = null; // the handler destroyed its Duplex before it finished

  /** The input a REQUEST announces through its flags (STREAM, RAW), or null when the request is the whole call. */
  static open(flags: number, endpoint: CallEndpoint, owner: InputOwner, highWaterMark: number): ServerInput | null {
    if ((flags & Flag.STREAM) !== 0) return new ServerInput(endpoint, owner, 'items', highWaterMark);
    if ((flags & Flag.RAW) !== 0) return new ServerInput(endpoint, owner, 'bytes', highWaterMark);
    return null;
  }

  private constructor(endpoint: CallEndpoint, owner: InputOwner, kind: 'items' | 'bytes', highWaterMark: number) {
    this.#endpoint = endpoint;
    this.#owner = owner;
    this.isByteStream = kind === 'bytes';
    if (kind === 'items') {
      this.#payload = new SmuxStreamedPayload(endpoint);
      this.#duplex = null;
    } else {
      this.#payload = null;
      this.#duplex = new SmuxDuplex(highWaterMark);
      // A handler that does not listen for 'error' must not crash the process when the caller cancels: the cancel
      // reaches it through ctx.signal, its reads and pipeline() anyway.
      this.#duplex.on('error', ignore);
      attachDuplex(this.#duplex, endpoint, this); // the input is the Duplex's owner: no object of closures per call
    }
  }

  /** The handler's payload when the request streams, else null (also once released). */
  get payload(): SmuxStreamedPayload | null {
    return this.#payload;
  }

  /**
   * The handler's Duplex when the call is a byte stream, else null.
   * @throws SmuxError `ERR_SMUX_STREAM_CLOSED` for a byte stream once released (the call is over)
   */
  get duplex(): SmuxDuplex | null {
    if (this.#released && this.isByteStream) {
      throw new SmuxError('ERR_SMUX_STREAM_CLOSED', 'the byte stream is closed: the call is over and its handler returned');
    }
    return this.#duplex;
  }

  /** A message after the request: an item of a streamed request or its end, or a byte stream's RAW or END. */
  deliver(message: CallMessage, size: number): void {
    if (!this.#owner.running) return;
    if (this.#duplex !== null) {
      const violation = byteStreamViolation(message);
      if (violation !== null) return this.#owner.end(violation);
      // The caller's END is its direction's last message: what follows it is not read (whatever the framing).
      if (message.kind === Kind.END) this.#endpoint.stopReading();
      return deliverToDuplex(this.#duplex, message);
    }
    const payload = this.#payload!;
    if (message.kind === Kind.DATA) return pushToPayload(payload, message.body, size);
    this.#endpoint.stopReading();
    if (message.kind === Kind.END && (message.flags & Flag.ERROR) === 0) endPayload(payload);
    else if (message.kind === Kind.END) failPayload(payload, message.body);
    else this.#owner.end(new SmuxError('ERR_SMUX_PROTOCOL', `a streamed request carries DATA and END messages, got kind ${message.kind}`));
  }

  /** The handler settled: from now on, its Duplex being destroyed fails the call. */
  handlerSettled(): void {
    this.#handlerDone = true;
  }

  /**
   * A byte-stream handler returned: the call completes when both directions ended, and its result only reports
   * failures (an Observable that errors).
   */
  adoptByteStreamResult(result: unknown, onError: (error: unknown) => void): void {
    if (isObservable(result)) result.subscribe({ error: onError, complete: () => this.#abandoned() });
    else this.#abandoned();
  }

  /** The call is over (answered or refused): input still arriving is cut off, unless a byte stream completed. */
  close(): void {
    if (this.#ends === 3) return;
    const over = new SmuxError('ERR_SMUX_CANCELLED', 'the call is over');
    if (this.#payload !== null) failPayload(this.#payload, over);
    if (this.#duplex !== null) failDuplex(this.#duplex, over);
  }

  /** The call is stopped (cancelled, timed out, shutting down): the handler's input errors with the reason. */
  stop(reason: SmuxError): void {
    if (this.#payload !== null) failPayload(this.#payload, reason);
    if (this.#duplex !== null) failDuplex(this.#duplex, reason);
  }

  /**
   * The call is over and its handler returned: the input is let go. A failed payload or a destroyed Duplex keeps
   * what it buffered (Node's streams do not drop it), and the call itself lives on until the caller's FIN —
   * without this, a caller that never FINs would pin every such buffer past the connection's budget.
   */
  release(): void {
    this.#released = true;
    this.#payload = null;
    this.#duplex = null;
    this.#destroyed = null; // its error's stack holds the Duplex's frames
    this.#endpoint.hold(0);
  }

  // ── RawCallOwner: what the Duplex of a byte-stream call reports (its ends, a destroy by the handler) ─────

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

  /** The handler finished; if its Duplex was destroyed without both ends, the call fails with why. */
  #abandoned(): void {
    const destroyed = this.#destroyed;
    if (destroyed === null || !this.#owner.running) return;
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
