import { setImmediate } from 'node:timers';
import type { Clock, TimerHandle } from './clock.js';
import { SmuxError } from './errors.js';

/** The error a session ends with when its peer was silent for `silentMs` (keepAliveTimeout `timeoutMs`). */
export function keepAliveTimeout(silentMs: number, timeoutMs: number): SmuxError {
  return new SmuxError('ERR_SMUX_KEEPALIVE_TIMEOUT', `no frame received for ${Math.round(silentMs)} ms (keepAliveTimeout ${timeoutMs} ms)`);
}

/**
 * Runs `judge` once the event loop has polled for I/O at least once more: an immediate set from the poll phase runs
 * before the next poll, so a second one is set from the first (a clock's timer may call from either phase).
 */
function afterNextPoll(judge: () => void): void {
  setImmediate(() => setImmediate(judge));
}

/** What {@link KeepAlive} asks of its session. */
export interface KeepAliveHost {
  /** Queue a NOP. */
  sendNop(): void;
  /** True while the session itself stopped reading (exhausted budget, full backlog): silence is expected then. */
  readonly readingPaused: boolean;
  /** Nothing arrived for a whole timeout: destroy the session. */
  onKeepAliveTimeout(silentMs: number): void;
}

/**
 * Keep-alive, as Go does it (PROTOCOL.md §4) with a tighter detector: a NOP every `interval`, and on the same
 * tick a check that some frame arrived within the last `timeout` ms. A dead peer is therefore detected between
 * `timeout` and `timeout + interval` after its last frame (Go: between 1× and 2× the timeout). While the session
 * paused reading on purpose, silence is expected and never times out; the silence clock restarts when
 * reading resumes. Go never answers a NOP, and neither do we: each side sends its own.
 *
 * A silence is judged after the event loop's next poll (`afterPoll`): when the loop itself was stalled (a long
 * synchronous task, a stopped process), the timer fires before the frames that arrived meanwhile are read, and a
 * live peer was cut off — or a peer that hung up was reported as silent instead of gone.
 */
export class KeepAlive {
  readonly #clock: Clock;
  readonly #host: KeepAliveHost;
  readonly #interval: number;
  readonly #timeout: number;
  #lastFrameAt: number;
  #timer: TimerHandle | null = null;
  #running = false;
  readonly #afterPoll: (judge: () => void) => void;

  /**
   * @param clock - time source
   * @param host - the session
   * @param interval - ms between NOPs and checks
   * @param timeout - ms of silence that kill the session
   * @param afterPoll - runs the judgement of a silence after the event loop's next poll (real immediates: it is about
   *   what the socket has not read yet, not about time); a unit test without sockets may run it at once
   */
  constructor(clock: Clock, host: KeepAliveHost, interval: number, timeout: number, afterPoll = afterNextPoll) {
    this.#afterPoll = afterPoll;
    this.#clock = clock;
    this.#host = host;
    this.#interval = interval;
    this.#timeout = timeout;
    this.#lastFrameAt = clock.now();
  }

  /** Starts the ticks. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#lastFrameAt = this.#clock.now();
    this.#schedule();
  }

  /** Stops for good. */
  stop(): void {
    this.#running = false;
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** A frame arrived now (called once per socket chunk that completed a header), or reading resumed. */
  activity(): void {
    this.#lastFrameAt = this.#clock.now();
  }

  #schedule(): void {
    this.#timer = this.#clock.setTimeout(() => this.#tick(), this.#interval);
  }

  #tick(): void {
    this.#timer = null;
    if (!this.#running) return;
    if (this.#silentTooLong() === null) return this.#next();
    this.#afterPoll(() => {
      if (!this.#running) return; // stopped meanwhile (the peer's hang-up, read in that poll, ended the session)
      const silent = this.#silentTooLong();
      if (silent === null) return this.#next(); // frames were waiting to be read
      this.#running = false;
      this.#host.onKeepAliveTimeout(silent);
    });
  }

  /** The silence so far when it is a whole timeout (and the session is not holding its reading on purpose), or null. */
  #silentTooLong(): number | null {
    const silent = this.#clock.now() - this.#lastFrameAt;
    return !this.#host.readingPaused && silent >= this.#timeout ? silent : null;
  }

  #next(): void {
    this.#host.sendNop();
    this.#schedule();
  }
}
