import type { SmuxChannel, SmuxChannelHandler, SmuxError } from '../smux/index.js';
import type { CallMessage, MessagePiece } from './call-codec.js';
import type { ConnectionBudget } from './connection-budget.js';
import { type CallOwner, handlersOf, type OwnerHandlers } from './endpoint-owner.js';
import { type MessageLimit, MessageReader, type MessageSink } from './message-reader.js';

/** Where an endpoint counts the bytes of its call (the side's metrics recorder). */
export interface ByteCounter {
  bytesSent: number;
  bytesReceived: number;
}

/**
 * How a message over `maxMessageBytes` is named, and what fixes it, on each side: constants shared by every reader, not
 * strings built per call (48 B of a reading call).
 */
const LIMITS: Record<'server' | 'client', MessageLimit> = {
  server: {
    name: "the server's maxMessageBytes",
    remedy: ": stream larger data (client.send(pattern, source) or client.openDuplex()), or raise the server's maxMessageBytes",
  },
  client: {
    name: "the client's maxMessageBytes",
    remedy: ": have the handler stream it (an Observable or AsyncIterable of smaller items), or raise the client's maxMessageBytes",
  },
};

/**
 * One end of a call, the same on both sides: it owns the call's smux stream, turns its bytes into call
 * messages for the owner, writes the owner's messages, and knows the stream's ends — FIN after our last message,
 * FIN before the peer's last message (cancel), pause/resume of what we read (so a reader that does not take
 * items holds the peer back through the window), and waiting for the window when a source writes faster.
 */
export class CallEndpoint implements SmuxChannelHandler, MessageSink {
  /** The call's stream. */
  readonly channel: SmuxChannel;
  readonly #owner: object;
  readonly #handlers: OwnerHandlers<object>; // the owner's handlers, public or registered by its class
  readonly #budget: ConnectionBudget | null;
  // Counted here, not in a metered subclass: every side records metrics, so one class serves every call (the
  // subclass showed in `perf` as a generic construct per call; removing it measured neutral, and is simpler).
  readonly #bytes: ByteCounter | null;
  #reader: MessageReader | null;
  #drainWaiters: Array<() => void> | null = null;
  #inputCharge = 0; // bytes charged to the budget for what we hold of the peer's input
  #itemsHeld = 0; // items the handler has not taken yet
  #windowHeld = 0; // what a paused stream may hold in the session (its window)
  #replyCharge = 0; // our queued bytes, as last charged
  #replyHeld = 0; // reply bytes held before they are queued (a byte stream's writes waiting for the window)
  /** When the partial message being read started arriving (0: none is). */
  partialSince = 0;
  /** Index in the budget's endpoints that wrote this turn (owned by the ConnectionBudget). */
  writtenSlot = -1;

  /**
   * @param channel - the call's stream (the endpoint becomes its handler)
   * @param maxMessageBytes - largest message accepted (`ERR_SMUX_LIMIT` beyond, before it is buffered)
   * @param owner - the call (its handlers public, or registered by its class with `registerEndpointOwner` (endpoint-owner.ts))
   * @param side - whose limit `maxMessageBytes` is, for errors (`server`, `client`)
   * @param read - false: bytes are not read at all (a refused call: dropped, holding no memory)
   * @param budget - the connection's memory budget (the server's), charged with what this call holds
   * @param bytes - where the bytes written and received are counted (the side's metrics), or null
   */
  constructor(
    channel: SmuxChannel,
    maxMessageBytes: number,
    owner: CallOwner,
    side: 'server' | 'client',
    read = true,
    budget: ConnectionBudget | null = null,
    bytes: ByteCounter | null = null,
  ) {
    this.channel = channel;
    this.#bytes = bytes;
    this.#owner = owner;
    this.#handlers = handlersOf(owner);
    this.#budget = budget;
    this.#reader = read ? new MessageReader(maxMessageBytes, LIMITS[side]) : null;
    channel.setHandler(this);
  }

  /** True while the owner reads a byte stream (MessageSink: its RAW messages are taken in pieces). */
  get rawPieces(): boolean {
    return this.#handlers.rawPieces?.(this.#owner) === true;
  }

  /** True while part of a message is buffered (an end now would cut it). */
  get partial(): boolean {
    return this.#reader?.partial === true;
  }

  /** True once our FIN is queued or the stream is gone: nothing more can be written. */
  get ended(): boolean {
    return this.channel.isEnded || this.channel.isClosed;
  }

  /** False while our queued bytes are at the stream's high-water mark (the peer's window or the socket hold them). */
  get writable(): boolean {
    return this.channel.writable;
  }

  /** Bytes queued and not yet handed to the socket. */
  get writableLength(): number {
    return this.channel.writableLength;
  }

  /** Stops reading: later bytes are delivered by the stream and dropped (so they hold no memory). */
  stopReading(): void {
    this.#reader?.stop();
    this.#reader = null;
    this.partialSince = 0;
    this.#windowHeld = 0; // a stream nobody reads drops what arrives
    this.#chargeHeld();
  }

  /**
   * Holds what the peer sends (the window then holds the peer back) until {@link resume}. A paused stream may
   * hold up to its window in the session: that is charged to the connection's budget, and a pause that does not
   * fit fails the call (`ERR_SMUX_LIMIT`) rather than let unread input grow.
   */
  pause(): void {
    this.channel.pause();
    const session = this.channel.session;
    this.#windowHeld = session.version === 2 ? session.config.maxStreamBuffer : 0;
    this.#chargeHeld();
  }

  /** Delivers what was held and goes on reading. */
  resume(): void {
    this.#windowHeld = 0;
    this.channel.resume();
    this.#chargeHeld();
  }

  /** Bytes of the peer's items the call holds and its handler has not taken yet: charged to the budget. */
  hold(bytes: number): void {
    this.#itemsHeld = bytes;
    this.#chargeHeld();
  }

  /** Queues one encoded message; false once queued bytes reach the high-water mark. Nothing is written once ended. */
  write(buffers: MessagePiece[]): boolean {
    if (this.ended) return false;
    const bytes = this.#bytes;
    for (const buffer of buffers) {
      this.channel.write(buffer);
      if (bytes !== null) bytes.bytesSent += buffer.length; // a text piece is ASCII: its length is its bytes
    }
    if (this.#budget !== null) {
      this.refreshReplyCharge();
      this.#budget.written(this);
    }
    return this.channel.writable;
  }

  /** May a reply of `bytes` be queued within the connection's budget? */
  admitsReply(bytes: number): boolean {
    return this.#budget === null || this.#budget.admitsReply(this, bytes);
  }

  /** Counts a reply that waits for room in the connection's budget (ConnectionBudget.holdWaiting); false past it. */
  holdWaitingReply(bytes: number): boolean {
    return this.#budget === null || this.#budget.holdWaiting(bytes);
  }

  /** Ends what {@link holdWaitingReply} counted. */
  releaseWaitingReply(bytes: number): void {
    this.#budget?.releaseWaiting(bytes);
  }

  /** Resolves once the connection's reply budget has room again (at once without a budget). */
  replyRoom(): Promise<void> {
    return this.#budget === null ? Promise.resolve() : this.#budget.whenRoom();
  }

  /** The budget's reply error for `bytes`. */
  replyRefusal(bytes: number): SmuxError | null {
    return this.#budget?.replyRefusal(bytes) ?? null;
  }

  /**
   * Reply bytes the call holds before it queues them, charged with the queue: a byte stream's Duplex whose write
   * waits for the window lets Node buffer up to its high-water mark behind it (a stalled caller's 51 byte streams
   * held 3.25 MiB so, uncounted, in the raw-stall attack).
   */
  holdReply(bytes: number): void {
    this.#replyHeld = bytes;
    this.refreshReplyCharge();
  }

  /** Re-reads our queued bytes into the budget (the writer drains them without telling us until empty). */
  refreshReplyCharge(): void {
    const queued = this.channel.isClosed ? 0 : this.channel.writableLength + this.#replyHeld;
    const delta = queued - this.#replyCharge;
    this.#replyCharge = queued;
    this.#budget?.chargeReply(this, delta);
  }

  /** Our queued reply bytes, as last charged to the budget. */
  get replyCharge(): number {
    return this.#replyCharge;
  }

  /** Resolves once the queue has drained below the high-water mark, or the stream is ended or gone. */
  drained(): Promise<void> {
    if (this.channel.writable || this.ended) return Promise.resolve();
    return new Promise((resolve) => (this.#drainWaiters ??= []).push(resolve));
  }

  /** FIN after what is queued (our direction is done; the peer's may go on). Idempotent. */
  end(): void {
    if (!this.ended) this.channel.end();
    this.#wake(); // a source waiting for the window stops waiting: nothing more will be written
  }

  /** Go's `Close`: drop what is queued, FIN, forget the stream — before the peer's last message it cancels. */
  cancel(): void {
    this.channel.destroy();
  }

  // ── MessageSink: the reader's messages, for the owner ──────────────────────────────────────────────────

  onMessage(message: CallMessage, size: number): void {
    this.#handlers.onMessage(this.#owner, message, size);
  }

  // ── SmuxChannelHandler ─────────────────────────────────────────────────────────────────────────────────

  onData(data: Buffer): void {
    if (this.#bytes !== null) this.#bytes.bytesReceived += data.length;
    const reader = this.#reader;
    if (reader === null) return this.#handlers.onUnreadData?.(this.#owner);
    try {
      reader.push(data, this);
    } catch (error) {
      return this.#failRead(error as SmuxError);
    }
    if (this.#reader !== reader) return; // the owner stopped reading meanwhile
    if (reader.bufferedBytes === 0) this.partialSince = 0;
    else if (this.partialSince === 0) this.partialSince = this.channel.session.config.clock.now();
    this.#chargeHeld();
  }

  onEnd(): void {
    this.#handlers.onPeerEnd(this.#owner);
  }

  onFinHeld(): void {
    this.#handlers.onPeerEndHeld?.(this.#owner);
  }

  onDrain(): void {
    if (this.#replyCharge !== 0) {
      this.refreshReplyCharge();
      this.#budget?.settle();
    }
    this.#wake();
  }

  onClose(error?: SmuxError): void {
    this.#reader = null;
    this.partialSince = 0;
    this.#itemsHeld = this.#windowHeld = 0;
    this.#chargeHeld();
    const charged = this.#replyCharge;
    this.#replyCharge = this.#replyHeld = 0;
    this.#budget?.chargeReply(this, -charged);
    this.#wake();
    this.#handlers.onClosed(this.#owner, error);
  }

  /** Charges what the call holds of the peer's input: items, a paused window, a partial message. */
  #chargeHeld(): void {
    const budget = this.#budget;
    if (budget === null) return;
    const total = this.#itemsHeld + this.#windowHeld + (this.#reader?.bufferedBytes ?? 0);
    const error = budget.chargeInput(total - this.#inputCharge);
    if (error === null) this.#inputCharge = total;
    else if (this.#reader !== null) this.#failRead(error);
  }

  /** Reading failed (malformed, too large, over the budget): reading stops, what is held is released. */
  #failRead(error: SmuxError): void {
    this.#reader?.stop();
    this.#reader = null;
    this.partialSince = 0;
    this.#windowHeld = 0;
    this.channel.resume(); // a paused stream's data is dropped by a reader that is gone
    this.#chargeHeld();
    this.#handlers.onReadError(this.#owner, error);
  }

  #wake(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = null;
    if (waiters !== null) for (const resolve of waiters) resolve();
  }
}
