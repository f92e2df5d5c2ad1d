import type { Clock, TimerHandle } from './clock.js';
import { SmuxError } from './errors.js';

/** The error a session ends with when its peer was silent for `silentMs` (keepAliveTimeout `timeoutMs`). */
export function keepAliveTimeout(silentMs: number, timeoutMs: number): SmuxError {
  return new SmuxError('ERR_SMUX_KEEPALIVE_TIMEOUT', `no frame received for ${Math.round(silentMs)} ms (keepAliveTimeout ${timeoutMs} ms)`);
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
 */
export class KeepAlive {
  readonly #clock: Clock;
  readonly #host: KeepAliveHost;
  readonly #interval: number;
  readonly #timeout: number;
  #lastFrameAt: number;
  #timer: TimerHandle | null = null;
  #running = false;

  /**
   * @param clock - time source
   * @param host - the session
   * @param interval - ms between NOPs and checks
   * @param timeout - ms of silence that kill the session
   */
  constructor(clock: Clock, host: KeepAliveHost, interval: number, timeout: number) {
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
    const silent = this.#clock.now() - this.#lastFrameAt;
    if (!this.#host.readingPaused && silent >= this.#timeout) {
      this.#running = false;
      this.#host.onKeepAliveTimeout(silent);
      return;
    }
    this.#host.sendNop();
    this.#schedule();
  }
}
