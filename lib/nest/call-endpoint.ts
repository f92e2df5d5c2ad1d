import type { SmuxChannel, SmuxChannelHandler, SmuxError } from '../smux/index.js';
import type { CallMessage } from './call-codec.js';
import { MessageReader } from './message-reader.js';

/** What an endpoint tells the call it serves (the server's or the client's Nest semantics). */
export interface EndpointOwner {
  /** A complete message arrived (`size`: its bytes on the wire). */
  onMessage(message: CallMessage, size: number): void;
  /** Bytes arrived while the endpoint does not read (they are dropped). */
  onUnreadData?(): void;
  /** Bytes that are not a valid message arrived (malformed, over the size limit): reading stops. */
  onReadError(error: SmuxError): void;
  /** The peer sent FIN (every message before it was delivered). */
  onPeerEnd(): void;
  /** The stream is finished (cleanly, destroyed, or its connection died: `error`). */
  onClosed(error: SmuxError | undefined): void;
}

/**
 * One end of a call, the same on both sides: it owns the call's smux stream, turns its bytes into call
 * messages for the owner, writes the owner's messages, and knows the stream's ends — FIN after our last message,
 * FIN before the peer's last message (cancel), pause/resume of what we read (so a reader that does not take
 * items holds the peer back through the window), and waiting for the window when a source writes faster.
 */
export class CallEndpoint implements SmuxChannelHandler {
  /** The call's stream. */
  readonly channel: SmuxChannel;
  readonly #owner: EndpointOwner;
  #reader: MessageReader | null;
  #drainWaiters: Array<() => void> | null = null;

  /**
   * @param channel - the call's stream (the endpoint becomes its handler)
   * @param maxMessageBytes - largest message accepted (`ERR_SMUX_LIMIT` beyond, before it is buffered)
   * @param owner - the call
   * @param side - whose limit `maxMessageBytes` is, for errors (`server`, `client`)
   * @param read - false: bytes are not read at all (a refused call: dropped, holding no memory)
   */
  constructor(channel: SmuxChannel, maxMessageBytes: number, owner: EndpointOwner, side: 'server' | 'client', read = true) {
    this.channel = channel;
    this.#owner = owner;
    this.#reader = read ? new MessageReader(maxMessageBytes, `the ${side}'s maxMessageBytes`) : null;
    channel.setHandler(this);
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
  }

  /** Holds what the peer sends (the window then holds the peer back) until {@link resume}. */
  pause(): void {
    this.channel.pause();
  }

  /** Delivers what was held and goes on reading. */
  resume(): void {
    this.channel.resume();
  }

  /** Queues one encoded message; false once queued bytes reach the high-water mark. Nothing is written once ended. */
  write(buffers: Buffer[]): boolean {
    if (this.ended) return false;
    for (const buffer of buffers) this.channel.write(buffer);
    return this.channel.writable;
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

  // ── SmuxChannelHandler ─────────────────────────────────────────────────────────────────────────────────

  onData(data: Buffer): void {
    const reader = this.#reader;
    if (reader === null) return this.#owner.onUnreadData?.();
    try {
      reader.push(data, this.#owner);
    } catch (error) {
      this.#reader = null;
      this.#owner.onReadError(error as SmuxError);
    }
  }

  onEnd(): void {
    this.#owner.onPeerEnd();
  }

  onDrain(): void {
    this.#wake();
  }

  onClose(error?: SmuxError): void {
    this.#wake();
    this.#owner.onClosed(error);
  }

  #wake(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = null;
    if (waiters !== null) for (const resolve of waiters) resolve();
  }
}
