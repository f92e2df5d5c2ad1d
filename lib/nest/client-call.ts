import type { WritePacket } from '@nestjs/microservices';
import type { Unsubscribable } from 'rxjs';
import { type Clock, type SmuxChannel, type SmuxChannelHandler, SmuxError, type TimerHandle } from '../smux/index.js';
import { type CallMessage, Flag, Kind, MessageReader } from './call-codec.js';

/** @internal What a {@link ClientCall} needs from the client. */
export interface ClientCallHost {
  readonly clock: Clock;
  readonly maxMessageBytes: number;
  /** Turns a RESPONSE into Nest's packet (through the configured deserializer). */
  toPacket(message: CallMessage): WritePacket | Promise<WritePacket>;
  /** The call is over (answered, failed or cancelled): its slot is free. */
  settled(call: ClientCall): void;
}

const QUEUED = 0; // waiting for a connection or a free slot
const OPEN = 1; // REQUEST sent, waiting for the LAST response
const DONE = 2;

/**
 * One `send()` on the caller's side: it owns the call's stream, turns RESPONSE messages into Nest packets
 * for `callback` (Nest's `createObserver`), and is the Observable's teardown — unsubscribing before the last
 * response cancels the call (the stream is closed: smux has no RST, FIN before the end means cancel).
 */
export class ClientCall implements SmuxChannelHandler, Unsubscribable {
  readonly #host: ClientCallHost;
  readonly #callback: (packet: WritePacket) => void;
  readonly #reader: MessageReader;
  #channel: SmuxChannel | null = null;
  #state = QUEUED;
  #timer: TimerHandle | null = null;
  #delivering: Promise<void> | null = null; // custom deserializers may be async: keep responses in order
  /** The encoded REQUEST, sent once a stream is open. */
  request: Buffer[] = [];
  /** The call's deadline budget in ms (0 = none). */
  timeout = 0;
  /** True once the call took a concurrency slot (it was not only queued). */
  launched = false;
  /** True while the call waits in the client's queue for a slot. */
  queued = false;

  /**
   * @param host - the client
   * @param callback - receives Nest packets (`createObserver(observer)` or a `publish()` callback)
   */
  constructor(host: ClientCallHost, callback: (packet: WritePacket) => void) {
    this.#host = host;
    this.#callback = callback;
    this.#reader = new MessageReader(host.maxMessageBytes);
  }

  /** True once the call is over. */
  get done(): boolean {
    return this.#state === DONE;
  }

  /** Starts the deadline (from when the call was made, queueing included). */
  startTimer(): void {
    if (this.timeout <= 0 || this.#state === DONE) return;
    const ms = this.timeout;
    this.#timer = this.#host.clock.setTimeout(() => {
      this.#timer = null;
      this.fail(new SmuxError('ERR_SMUX_TIMEOUT', `the call did not complete within its deadline of ${ms} ms`));
    }, ms);
  }

  /** Sends the request on a freshly opened stream. */
  open(channel: SmuxChannel): void {
    if (this.#state !== QUEUED) {
      channel.destroy();
      return;
    }
    this.#state = OPEN;
    this.#channel = channel;
    channel.setHandler(this);
    for (const buffer of this.request) channel.write(buffer);
    this.request = [];
  }

  /** Fails the call with `error` (and cancels it on the server if it was sent). */
  fail(error: unknown): void {
    if (this.#state === DONE) return;
    this.#settle();
    this.#callback({ err: error, isDisposed: true } as WritePacket);
  }

  /** Teardown of the caller's subscription: cancels the call unless it is over. */
  unsubscribe(): void {
    if (this.#state !== DONE) this.#settle();
  }

  // ── SmuxChannelHandler ─────────────────────────────────────────────────────────────────────────────────

  onData(data: Buffer): void {
    if (this.#state !== OPEN) return;
    try {
      this.#reader.push(data, this);
    } catch (error) {
      this.fail(error);
    }
  }

  onEnd(): void {
    if (this.#state === OPEN)
      this.#failAfterDeliveries(new SmuxError('ERR_SMUX_STREAM_CLOSED', 'the server ended the stream before the call completed'));
  }

  onClose(error?: SmuxError): void {
    if (this.#state === OPEN)
      this.#failAfterDeliveries(error ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed before the call completed'));
  }

  /** Fails the call — after responses still being deserialized (async deserializer), which may complete it. */
  #failAfterDeliveries(error: SmuxError): void {
    if (this.#delivering === null) this.fail(error);
    else void this.#delivering.then(() => this.fail(error));
  }

  /** @internal A complete message (MessageReader sink). */
  onMessage(message: CallMessage): void {
    if (this.#state !== OPEN) return;
    if (message.kind !== Kind.RESPONSE) {
      this.fail(new SmuxError('ERR_SMUX_PROTOCOL', `unexpected message kind ${message.kind} on a call`));
      return;
    }
    const last = (message.flags & Flag.LAST) !== 0;
    const packet = this.#host.toPacket(message);
    if (this.#delivering === null && !(packet instanceof Promise)) {
      this.#deliver(packet, last);
      return;
    }
    const previous = this.#delivering ?? Promise.resolve();
    this.#delivering = previous
      .then(() => packet)
      .then(
        (p) => this.#deliver(p, last),
        (error: unknown) => this.fail(error),
      );
  }

  #deliver(packet: WritePacket, last: boolean): void {
    if (this.#state === DONE) return;
    // Settle before the terminal callback: the subscriber's teardown then sees a finished call, not a cancel.
    if (last) this.#settle();
    this.#callback(last && packet.isDisposed !== true ? { ...packet, isDisposed: true } : packet);
  }

  #settle(): void {
    const wasOpen = this.#state === OPEN;
    this.#state = DONE;
    if (this.#timer !== null) this.#host.clock.clearTimeout(this.#timer);
    this.#timer = null;
    // Our FIN: after the last response it completes the call; before it, it cancels the call (Go's Close).
    if (wasOpen) this.#channel?.destroy();
    this.#channel = null;
    this.#host.settled(this);
  }
}
