import { type SmuxChannel, type SmuxChannelHandler, SmuxError } from '../smux/index.js';
import type { MessagePiece } from './call-codec.js';

/** Events sent since the last turn, to settle on the next one. */
let settling: Array<() => void> = [];

/**
 * Told when an event's stream opens and closes: a `SmuxConnection`'s own events, which its server's close waits for
 * (and fails at `closeTimeout` with {@link EventSend.fail}). A ClientSmux's events have none.
 */
export interface EventLedger {
  opened(event: EventSend): void;
  closed(event: EventSend): void;
}

/**
 * One event on its stream: EVENT then FIN, at most once. Its promise resolves once both were handed to the socket,
 * and rejects when the connection is lost before that. A class, not an object of closures: an event is a few
 * hundred bytes of work, and the handler is its largest object.
 */
export class EventSend implements SmuxChannelHandler {
  readonly #channel: SmuxChannel;
  readonly #resolve: () => void;
  readonly #reject: (error: unknown) => void;
  readonly #ledger: EventLedger | null;

  /**
   * Writes `buffers` and FIN on `channel`; `resolve` / `reject` settle the event's promise; `ledger`, when given, is
   * told of the stream's opening and closing.
   */
  constructor(
    channel: SmuxChannel,
    buffers: MessagePiece[],
    resolve: () => void,
    reject: (error: unknown) => void,
    ledger: EventLedger | null = null,
  ) {
    this.#channel = channel;
    this.#resolve = resolve;
    this.#reject = reject;
    this.#ledger = ledger;
    ledger?.opened(this);
    channel.setHandler(this);
    for (const buffer of buffers) channel.write(buffer);
    channel.end();
  }

  onData(): void {}

  onEnd(): void {}

  onDrain(): void {
    if (this.#channel.finSent) this.#channel.destroy(); // sent; the peer's FIN would find nothing to close
  }

  // Settled on the next turn: a loop of awaited emits must let timers and reads run (the socket takes the bytes at
  // once while the kernel has room, so settling at once would never yield).
  onClose(error?: SmuxError): void {
    this.#ledger?.closed(this);
    if (this.#channel.finSent) settleNextTurn(this.#resolve);
    else this.#reject(error ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed before the event was sent'));
  }

  /**
   * Gives up on the event with `error` (its server's close is out of time): what is still queued is dropped and the
   * stream ends, so the peer discards the part that went out (an incomplete message). An event whose FIN went out
   * already resolves as sent. @returns true when it had not gone out
   */
  fail(error: SmuxError): boolean {
    const unsent = !this.#channel.finSent;
    this.#channel.destroy(error);
    return unsent;
  }
}

/**
 * Settles `resolve` on the next turn of the event loop, together with every other event sent in this one: one
 * `setImmediate` each made the emits their callers chain on them start one turn apart, Node runs the microtasks
 * after each immediate, and so each went out in a socket write of its own (events 64 B @64: 42 % of the
 * client's time in writes; one turn for all of them: docs/NOTES.md).
 */
function settleNextTurn(resolve: () => void): void {
  if (settling.push(resolve) === 1) setImmediate(settleAll);
}

function settleAll(): void {
  const batch = settling;
  settling = [];
  for (const resolve of batch) resolve();
}
