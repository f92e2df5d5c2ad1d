import { Duplex } from 'node:stream';
import { SmuxError } from '../smux/index.js';
import { detached } from '../util/detached.js';
import { type CallMessage, encodeMessage, Flag, Kind } from './call-codec.js';
import type { CallEndpoint } from './call-endpoint.js';

/** Bytes per RAW message at most: a receiver holds one message whole, so big writes are cut. */
const RAW_CHUNK = 64 * 1024;

/** What the Duplex of a byte-stream call asks of its call. */
export interface RawCallOwner {
  /** Whether our END also ends the call (LAST): the server's does. */
  readonly lastEnd: boolean;
  /** Our direction ended (its END is queued). */
  writableEnded(): void;
  /** The peer's direction ended with END. */
  readableEnded(): void;
  /** The Duplex was destroyed locally (with `error`, or without: cancelled). */
  destroyed(error: Error | null): void;
}

// Set by SmuxDuplex's static block: how the transport drives a Duplex, kept off the object the app holds.
let attach: (duplex: SmuxDuplex, endpoint: CallEndpoint, owner: RawCallOwner) => void;
let deliver: (duplex: SmuxDuplex, message: CallMessage) => void;
let fail: (duplex: SmuxDuplex, error: unknown) => void;
let wrote: (duplex: SmuxDuplex) => boolean;

/**
 * A byte-stream call's Node `Duplex` (`client.openDuplex()`, `ctx.getDuplex()`): what is written travels as RAW
 * messages, what arrives is read; each direction ends with END, so a cut-off transfer errors instead of looking
 * complete. The stream's window is the backpressure: a write's callback waits for it, and a reader that does
 * not read stops the stream being read.
 */
export class SmuxDuplex extends Duplex {
  #endpoint: CallEndpoint | null = null;
  #owner: RawCallOwner | null = null;
  #waiting: (() => void) | null = null; // a write or the final waiting for the stream to exist
  #writeDone: ((error?: Error | null) => void) | null = null; // the write waiting for the window
  #reading = true;
  #external = false; // destroyed from outside (the peer, the call): not reported back to the owner
  #wrote = false; // a write reached _write (its bytes may be queued in the stream, unsent, whatever its callback said)

  /** @param highWaterMark - bytes buffered on each side before backpressure (the stream's high-water mark) */
  constructor(highWaterMark = 64 * 1024) {
    // Not autoDestroy: a `for await` over the Duplex would destroy it (AbortError) when the peer's direction ends
    // while ours is still open, and that cancels the call. It is destroyed once both sides are done instead.
    super({ allowHalfOpen: true, autoDestroy: false, readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark });
    // Judged by the stream's own state, not by counting events: anyone holding the Duplex can emit 'end' or
    // 'finish', and a destroy that looked complete would never be reported to the call.
    const sideDone = (): void => {
      if (this.readableEnded && this.writableFinished && !this.destroyed) {
        this.#external = true; // complete: nothing to report
        this.destroy();
      }
    };
    this.on('end', sideDone).on('finish', sideDone);
  }

  static {
    attach = (duplex, endpoint, owner) => duplex.#attach(endpoint, owner);
    deliver = (duplex, message) => duplex.#deliver(message);
    fail = (duplex, error) => duplex.#fail(error);
    wrote = (duplex) => duplex.#wrote;
  }

  /** Attaches the call's stream (the client's Duplex exists before its stream opens). */
  #attach(endpoint: CallEndpoint, owner: RawCallOwner): void {
    this.#endpoint = endpoint;
    this.#owner = owner;
    if (!this.#reading) endpoint.pause();
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting?.();
  }

  /** A message of the peer's direction: RAW bytes, or END (with ERROR: the peer's direction failed). */
  #deliver(message: CallMessage): void {
    const violation = byteStreamViolation(message);
    if (violation !== null) {
      this.#fail(violation);
    } else if (message.kind === Kind.RAW) {
      // Read at once, a view costs nothing; buffered, a view of a small part of a read would keep the read alive.
      const bytes = message.body as Buffer;
      const more = this.push(this.readableFlowing === true && this.readableLength === 0 ? bytes : detached(bytes));
      this.#endpoint?.hold(this.readableLength); // unread bytes count against the connection's budget
      if (!more) this.#pause();
    } else if (message.kind === Kind.END && (message.flags & Flag.ERROR) === 0) {
      this.push(null);
      this.#owner?.readableEnded();
    } else {
      this.#fail(message.body); // END + ERROR: the other direction failed
    }
  }

  /** Ends the Duplex with an error that did not start here (the peer's, the call's). */
  #fail(error: unknown): void {
    if (this.destroyed) return;
    this.#external = true;
    this.destroy(error as Error); // a handler's error may be a plain object, as Nest delivers it
  }

  override _read(): void {
    this.#reading = true;
    this.#endpoint?.hold(this.readableLength);
    this.#endpoint?.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#wrote = true;
    this.#whenAttached(() => {
      const endpoint = this.#endpoint!;
      // The server's side: bytes for a caller that is behind on this connection (its replies unread) fail the
      // write with ERR_SMUX_LIMIT, as any reply would, instead of queueing on every stalled stream.
      if (!endpoint.admitsReply(chunk.length)) return callback(endpoint.replyRefusal(chunk.length));
      for (let at = 0; at < chunk.length; at += RAW_CHUNK) {
        endpoint.write(encodeMessage(Kind.RAW, 0, chunk.subarray(at, Math.min(chunk.length, at + RAW_CHUNK))));
      }
      if (endpoint.ended) return callback(new SmuxError('ERR_SMUX_STREAM_CLOSED', 'the byte stream is closed'));
      if (endpoint.writable) return callback();
      this.#writeDone = callback;
      endpoint.holdReply(this.writableHighWaterMark); // what Node may buffer behind this write meanwhile
      void endpoint.drained().then(() => this.#finishWrite());
    });
  }

  /** The write waiting for the window completes (once: on drain, or when the Duplex is destroyed). */
  #finishWrite(): void {
    const done = this.#writeDone;
    this.#writeDone = null;
    if (done !== null) this.#endpoint?.holdReply(0);
    done?.();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#whenAttached(() => {
      const owner = this.#owner;
      if (owner === null) return callback(new SmuxError('ERR_SMUX_STREAM_CLOSED', 'the byte stream is closed'));
      this.#endpoint!.write(encodeMessage(Kind.END, owner.lastEnd ? Flag.LAST : 0, undefined));
      owner.writableEnded();
      callback();
    });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#waiting = null;
    // Node drops the writes buffered behind a pending one only once that one's callback ran; without this they stay
    // until the window opens, which a caller that never reads never does.
    this.#finishWrite();
    const owner = this.#owner;
    this.#owner = null;
    if (!this.#external) owner?.destroyed(error);
    callback(error);
  }

  #pause(): void {
    this.#reading = false;
    this.#endpoint?.pause();
  }

  #whenAttached(then: () => void): void {
    if (this.#endpoint !== null) then();
    else this.#waiting = then;
  }
}

/** Attaches `duplex` to its call's stream; `owner` hears of its ends and of a local destroy. */
export function attachDuplex(duplex: SmuxDuplex, endpoint: CallEndpoint, owner: RawCallOwner): void {
  attach(duplex, endpoint, owner);
}

/** A message of the peer's direction for `duplex`: RAW bytes, or END (with ERROR: the peer's direction failed). */
export function deliverToDuplex(duplex: SmuxDuplex, message: CallMessage): void {
  deliver(duplex, message);
}

/** Ends `duplex` with an error that did not start there (the peer's, the call's); its owner is not told. */
export function failDuplex(duplex: SmuxDuplex, error: unknown): void {
  fail(duplex, error);
}

/** True once anything was written to `duplex` (what its callbacks said sent may still have been queued when it died). */
export function duplexWrote(duplex: SmuxDuplex): boolean {
  return wrote(duplex);
}

/**
 * Why a message cannot be part of a byte stream, or null: only RAW messages with bytes (a RAW message of another
 * encoding would otherwise vanish, and a cut transfer look complete) and END.
 */
export function byteStreamViolation(message: CallMessage): SmuxError | null {
  if (message.kind === Kind.RAW) {
    return message.body instanceof Uint8Array
      ? null
      : new SmuxError('ERR_SMUX_PROTOCOL', 'a RAW message must carry bytes (body encoding 2)');
  }
  if (message.kind === Kind.END) return null;
  return new SmuxError('ERR_SMUX_PROTOCOL', `a byte stream carries RAW and END messages, got kind ${message.kind}`);
}
