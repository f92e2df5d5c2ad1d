import { latencyPercentiles } from '../lib/stats.js';
import type { Done } from './spec.js';

/** How long without a single completion counts as a stall (the definition). */
export const STALL_MS = 5_000;

/** With `minMs`, a loop makes at most this many times its `count` calls. */
export const MAX_OVERRUN = 20;

export interface LoopOptions {
  /** One call; it must call `done` exactly once. */
  call: (done: Done) => void;
  /** Calls to make (at least, with `minMs`). */
  count: number;
  /**
   * Keeps issuing calls past `count` until the loop has run this long (at most {@link MAX_OVERRUN} × `count`
   * calls): a run sized by a calibration that came out slow still measures its full time. Default 0.
   */
  minMs?: number;
  /** With `minMs`, the most calls the loop makes. Default {@link MAX_OVERRUN} × `count`. */
  maxCount?: number;
  /** Calls in flight at once. */
  inFlight: number;
  /** Checked before each new call: false stops issuing (the calls in flight still finish). */
  keepGoing?: () => boolean;
  /** Extra progress to watch besides completed calls (e.g. items of a big reply). */
  progress?: () => number;
  /** No progress for this long is a stall. Default {@link STALL_MS}. */
  stallMs?: number;
}

export interface LoopResult {
  stalled: boolean;
  completed: number;
  ms: number;
  /** Completed calls per second. */
  rate: number;
  p50: number;
  p99: number;
  errors: number;
  firstError?: string;
}

/**
 * A closed loop: `inFlight` calls at once, each completion starting the next, until `count` calls are done and
 * `minMs` has passed (or `keepGoing()` says stop). Every call's latency is taken with performance.now() around it. With no completion
 * (and no other progress) for `stallMs`, the loop gives up and reports a stall; late completions are ignored.
 */
export function closedLoop(options: LoopOptions): Promise<LoopResult> {
  const { call, count, inFlight, keepGoing = () => true, progress = () => 0, stallMs = STALL_MS, minMs = 0 } = options;
  const most = minMs > 0 ? Math.max(count, options.maxCount ?? count * MAX_OVERRUN) : count;
  let latencies = new Float64Array(count);
  let issued = 0;
  let completed = 0;
  let errors = 0;
  let firstError: string | undefined;
  let over = false;
  const started = performance.now();
  return new Promise<LoopResult>((resolve) => {
    let lastSeen = -1;
    let lastChange = started;
    const watchdog = setInterval(() => {
      const seen = completed + progress();
      const now = performance.now();
      if (seen !== lastSeen) {
        lastSeen = seen;
        lastChange = now;
      } else if (now - lastChange >= stallMs) finish(true);
    }, 100);

    const finish = (stalled: boolean): void => {
      if (over) return;
      over = true;
      clearInterval(watchdog);
      const ms = performance.now() - started;
      const { p50, p99 } = latencyPercentiles(latencies, completed);
      resolve({
        stalled,
        completed,
        ms,
        rate: (completed / ms) * 1000,
        p50,
        p99,
        errors,
        ...(firstError === undefined ? {} : { firstError }),
      });
    };

    const next = (): void => {
      if (over) return;
      const more = issued < count || (issued < most && performance.now() - started < minMs);
      if (!more || !keepGoing()) {
        if (completed === issued) finish(false);
        return;
      }
      issued++;
      const t0 = performance.now();
      let called = false;
      call((error?: unknown) => {
        if (called || over) return;
        called = true;
        if (completed === latencies.length) {
          const grown = new Float64Array(Math.min(most, latencies.length * 2));
          grown.set(latencies);
          latencies = grown;
        }
        latencies[completed++] = performance.now() - t0;
        if (error !== undefined) {
          errors++;
          firstError ??= describe(error);
        }
        next();
      });
    };
    const first = Math.min(inFlight, count);
    for (let i = 0; i < first && !over; i++) next();
    if (first === 0) finish(false);
  });
}

/** A readable one-line description of whatever a transport failed with. */
export function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 300);
  try {
    return JSON.stringify(error).slice(0, 300);
  } catch {
    return String(error).slice(0, 300);
  }
}
