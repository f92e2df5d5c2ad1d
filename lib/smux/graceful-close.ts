import { performance } from 'node:perf_hooks';
import type { Clock, TimerHandle } from './clock.js';
import { SmuxError } from './errors.js';
import type { FrameWriter } from './writer.js';

/** What a {@link GracefulClose} needs of its session. */
export interface GracefulCloseHost {
  readonly writer: FrameWriter;
  /** The session's socket: ended (FIN) once everything is flushed, then unref'd while the peer finishes. */
  readonly socket: { end(): unknown; unref?(): unknown };
  readonly clock: Clock;
  /** Some stream still has data queued behind a v2 window (it goes out as the peer reads; the timer bounds it). */
  windowBoundData(): boolean;
  /** Nothing may be written any more: keep-alive stops. */
  stopWriting(): void;
  /** Our side is done: read on until the peer closes, whatever held reading. */
  readToEnd(): void;
  /** Destroys the stream holding the most unread data (the application stopped reading while we linger). */
  dropUnread(): void;
  /** Ends the session (with an error when the close could not flush in time). */
  destroy(error?: SmuxError): void;
}

/** Lingering with the receive budget spent, how long the application may read nothing before unread data is dropped. */
const UNREAD_MS = 1_000;

/**
 * A session's graceful close once it started: flush everything — data a v2 peer's window holds back goes out as the
 * peer reads — then end the connection (TCP half-close), and read on until the peer closes too (destroying a socket
 * with unread input would make the kernel reset the connection and discard our own unsent tail). Should the receive
 * budget be spent meanwhile with the application reading none of it, the stream holding the most is destroyed
 * (quietly, as a local destroy is) rather than hold reading until the timer ({@link GracefulClose.budgetSpent}).
 * Bounded by one timer: a flush that does not finish in time destroys the session with `ERR_SMUX_TIMEOUT`; a peer
 * that never closes after our FIN (Go does not react to EOF) is cut off quietly.
 *
 *   constructed ──everything flushed──▶ ENDED (socket.end()) ──'finish'──▶ LINGERING (done resolves) ──peer closes──▶ destroyed
 *      └───────────────────── the timer: destroyed (with ERR_SMUX_TIMEOUT unless LINGERING) ─────────────────────┘
 */
export class GracefulClose {
  readonly #host: GracefulCloseHost;
  readonly #done: Promise<void>;
  #resolve: () => void = noop;
  #timer: TimerHandle | null = null;
  #ended = false; // socket.end() called
  #lingering = false; // our side is closed, reading until the peer closes
  #unreadTimer: TimerHandle | null = null; // lingering with the receive budget spent: see budgetSpent()
  #lingerStart = 0; // when it began (performance.now(): the socket's time, not the application's clock)

  /**
   * @param host - the session
   * @param timeoutMs - how long the flush and the peer's close may take in all
   */
  constructor(host: GracefulCloseHost, timeoutMs: number) {
    this.#host = host;
    this.#done = new Promise((resolve) => (this.#resolve = resolve));
    this.#timer = host.clock.setTimeout(
      () =>
        this.#lingering
          ? host.destroy()
          : host.destroy(new SmuxError('ERR_SMUX_TIMEOUT', 'graceful close could not flush within the timeout')),
      timeoutMs,
    );
    host.writer.flush();
    this.maybeEnd();
  }

  /** Resolves once everything, our FIN included, was handed to the socket (or the session ended otherwise). */
  get done(): Promise<void> {
    return this.#done;
  }

  /** True once our side is closed: the session only reads until the peer closes. */
  get lingering(): boolean {
    return this.#lingering;
  }

  /** Milliseconds since our side was closed (0 before). */
  get lingeredMs(): number {
    return this.#lingering ? performance.now() - this.#lingerStart : 0;
  }

  /** Ends the connection if nothing is left to write (called whenever the writer or a stream may be done). */
  maybeEnd(): void {
    const writer = this.#host.writer;
    if (this.#ended || writer.blocked || writer.pending || this.#host.windowBoundData()) return;
    this.#ended = true;
    // Nothing may be written after end(): no more UPDs for what we still read, no NOPs.
    writer.close();
    this.#host.stopWriting();
    this.#host.socket.end(); // its 'finish' completes our side
  }

  /** The socket's `'finish'`: everything we had to send, and our FIN, reached the kernel. */
  halfClosed(): void {
    this.#lingering = true;
    this.#lingerStart = performance.now();
    this.#resolve();
    this.#host.socket.unref?.();
    // Keep reading until the peer closes ('end' or 'close' then destroys), so the kernel never resets.
    this.#host.readToEnd();
  }

  /**
   * The receive budget is spent, so the session holds its reading. While lingering that also leaves the peer's FIN
   * unread, and the close waiting for its timer: if the application reads nothing for {@link UNREAD_MS}, the stream
   * holding the most unread data is destroyed (its data dropped, its budget returned) and reading goes on. A stream
   * being read, however slowly, is never cut: its reads return tokens ({@link budgetMoved}), which restart the wait.
   */
  budgetSpent(): void {
    if (!this.#lingering || this.#unreadTimer !== null) return;
    this.#unreadTimer = this.#host.clock.setTimeout(() => {
      this.#unreadTimer = null;
      this.#host.dropUnread();
    }, UNREAD_MS);
  }

  /** The application read held data (tokens returned): the wait of {@link budgetSpent} starts over. */
  budgetMoved(): void {
    if (this.#unreadTimer === null) return;
    this.#host.clock.clearTimeout(this.#unreadTimer);
    this.#unreadTimer = null;
  }

  /** The session was destroyed (by the timer, the peer or its owner): the timers stop, `done` resolves. */
  ended(): void {
    if (this.#timer !== null) this.#host.clock.clearTimeout(this.#timer);
    this.#timer = null;
    this.budgetMoved();
    this.#resolve();
  }
}

function noop(): void {}
