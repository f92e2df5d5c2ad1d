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

/** Node's timers hold at most 2^31 − 1 ms (longer delays fire after 1 ms); longer ones are chained. */
const MAX_TIMER_MS = 0x7fff_ffff;

/** A timer longer than Node allows, re-armed in steps. */
interface LongTimer {
  timeout: NodeJS.Timeout;
}

function armLong(timer: LongTimer, fn: () => void, ms: number): void {
  const step = Math.min(ms, MAX_TIMER_MS);
  timer.timeout = setTimeout(() => (ms > MAX_TIMER_MS ? armLong(timer, fn, ms - MAX_TIMER_MS) : fn()), step);
  timer.timeout.unref();
}

/**
 * The real clock: `performance.now()` and unref'd Node timers (any delay, also beyond 2^31 − 1 ms). Frozen: it is
 * every session's default clock, so a change to it would reach every session of the process.
 */
export const systemClock: Clock = Object.freeze<Clock>({
  // The global `performance` (an accessor of globalThis on Node 20, slower to reach than the module's), because
  // Jest's fake timers replace the global: an app's tests that fake time then fake this clock's reads too.
  now: () => performance.now(),
  setTimeout(fn, ms) {
    if (ms <= MAX_TIMER_MS) {
      const t = setTimeout(fn, ms);
      t.unref();
      return t;
    }
    const timer = {} as LongTimer;
    armLong(timer, fn, ms);
    return timer;
  },
  clearTimeout(handle) {
    clearTimeout((handle as Partial<LongTimer>).timeout ?? (handle as NodeJS.Timeout));
  },
});
