/** An opaque timer handle returned by a {@link Clock}. */
export type TimerHandle = unknown;

/**
 * Time source for keep-alive and timeouts. The session never calls `Date.now()` or `setTimeout` directly,
 * so tests can drive time with a fake clock instead of sleeping.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale. */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds. The timer must not keep the process alive. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Cancels a timer from {@link Clock.setTimeout}; cancelling twice or after it fired is harmless. */
  clearTimeout(handle: TimerHandle): void;
}

/** The real clock: `performance.now()` and unref'd Node timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};
