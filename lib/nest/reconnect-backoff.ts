import { type Clock, SmuxError, type TimerHandle } from '../smux/index.js';
import type { ResolvedClientOptions } from './options.js';

/** While calls fail fast, the longest a connection waits after a failed attempt before its next one. */
const DEMAND_RETRY_MS = 1_000;

/**
 * When a connector tries again after failed attempts: `reconnect.initialDelay` × `factor` per failure up to
 * `maxDelay`, each ± `jitter` (clients that failed together do not retry together); `maxDelay` at once for a peer that
 * does not speak this transport. Calls waiting pull the next attempt closer ({@link ReconnectBackoff.hurry}).
 */
export class ReconnectBackoff {
  readonly #policy: ResolvedClientOptions['reconnect'];
  readonly #clock: Clock;
  readonly #retry: () => void;
  #failures = 0;
  #lastError: Error | null = null;
  #timer: TimerHandle | null = null;
  #hurriedAt = 0; // when the next attempt comes if calls hurry it: DEMAND_RETRY_MS (jittered) after the last failure
  #retryAt = 0; // when the next attempt is due

  /** @param retry - the next attempt, when its time comes */
  constructor(policy: ResolvedClientOptions['reconnect'], clock: Clock, retry: () => void) {
    this.#policy = policy;
    this.#clock = clock;
    this.#retry = retry;
  }

  /** Attempts failed in a row. */
  get failures(): number {
    return this.#failures;
  }

  /** Why the last attempt failed (cleared by {@link reset}). */
  get lastError(): Error | null {
    return this.#lastError;
  }

  /** An attempt failed: the next one comes after the backoff. */
  failed(error: Error): void {
    this.#failures++;
    this.#lastError = error;
    this.#hurriedAt = this.#clock.now() + this.#jittered(DEMAND_RETRY_MS);
    const { initialDelay, maxDelay, factor } = this.#policy;
    this.#retryIn(this.#jittered(hopeless(error) ? maxDelay : Math.min(maxDelay, initialDelay * factor ** (this.#failures - 1))));
  }

  /**
   * Calls are failing fast, or waiting: the next attempt comes at most {@link DEMAND_RETRY_MS} (± jitter) after the
   * last one failed, however long the backoff has grown. Without calls the backoff grows to `maxDelay`; with them, a
   * server back up is found within a second, at one attempt a second at most (a migration trial: calls failed for up
   * to 5.4 s after the server was listening again). Not for a peer that does not speak this transport.
   */
  hurry(): void {
    if (this.#timer === null || hopeless(this.#lastError) || this.#hurriedAt >= this.#retryAt) return;
    this.#clock.clearTimeout(this.#timer);
    this.#retryIn(Math.max(0, this.#hurriedAt - this.#clock.now()));
  }

  /** No attempt is due any more (one starts now, or the connector closed). */
  cancel(): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** A success, or a fresh start: the next failure backs off from `initialDelay` again. */
  reset(): void {
    this.#failures = 0;
    this.#lastError = null;
  }

  #retryIn(ms: number): void {
    this.#retryAt = this.#clock.now() + ms;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = null;
      this.#retry();
    }, ms);
  }

  /** `ms` ± the `reconnect.jitter` share of it. */
  #jittered(ms: number): number {
    return Math.max(0, Math.round(ms * (1 + this.#policy.jitter * (2 * Math.random() - 1))));
  }
}

/** A peer that does not speak this transport (or this smux version) will not change its mind soon. */
function hopeless(error: Error | null): boolean {
  return error instanceof SmuxError && error.code === 'ERR_SMUX_PROTOCOL';
}
