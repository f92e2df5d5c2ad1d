import { closedLoop, describe, type LoopResult } from './closed-loop.js';
import { makePayload } from './payload.js';
import type { Driver, HolSpec, RunResult } from './spec.js';

/**
 * The warm-up's big reply is this fraction of the measured one. Warming up with small calls alone left the big
 * reply's path (encoding a Buffer value, bulk frames, joining a 64 KiB value on the client) to the JIT during the
 * measured reply: the first round of a run measured ≈ 150 MB/s against ≈ 500 in the next ones (docs/NOTES.md).
 */
const WARM_BIG_SHARE = 8;

/** What one big reply with small calls beside it came to. */
interface BigRun {
  during: LoopResult;
  items: number;
  bytes: number;
  ms: number;
  done: boolean;
  /** Why the big reply failed (an error, or fewer bytes than asked). */
  failure: string | undefined;
}

/**
 * Head-of-line blocking: the p99 of small echo calls alone, then the p99 of small echo calls made while one
 * call on the same connection streams `items` × `itemBytes` back as Observable values. Small calls keep going
 * (at `inFlight`) for as long as the big reply runs. The warm-up runs both shapes (small calls, then a smaller big
 * reply with small calls beside it). A big reply that ends with an error, or delivers fewer bytes, makes the run
 * `failed` (with the reason): it is left out of the medians and listed in the notes.
 */
export async function runHol(driver: Driver, spec: HolSpec): Promise<RunResult> {
  if (driver.big === undefined) throw new Error('this system has no big reply');
  const payload = makePayload(spec.size);
  const call = (done: (error?: unknown) => void): void => driver.echo(payload, done);
  const warm = await closedLoop({ call, count: spec.warmup, inFlight: spec.inFlight });
  if (warm.stalled) return { stalled: true, phase: 'warm-up' };
  const warmBig = await bigWithSmallCalls(driver, spec, Math.max(1, Math.floor(spec.items / WARM_BIG_SHARE)), call);
  if (warmBig.during.stalled || !warmBig.done) return { stalled: true, phase: 'warm-up with big reply' };
  if (warmBig.failure !== undefined) return { stalled: false, phase: 'warm-up with big reply', failed: `warm-up ${warmBig.failure}` };
  const alone = await closedLoop({ call, count: spec.count, inFlight: spec.inFlight });
  if (alone.stalled) return { stalled: true, phase: 'alone' };

  const big = await bigWithSmallCalls(driver, spec, spec.items, call);
  const during = big.during;
  return {
    ...(big.failure === undefined ? {} : { failed: big.failure }),
    stalled: during.stalled || !big.done,
    phase: 'with big reply',
    rate: during.rate,
    p50: during.p50,
    p99: during.p99,
    p50Alone: alone.p50,
    p99Alone: alone.p99,
    rateAlone: alone.rate,
    p99Ratio: during.p99 / alone.p99,
    smallCalls: during.completed,
    bigItems: big.items,
    bigBytes: big.bytes,
    bigMs: big.ms,
    bigMBps: big.bytes / 1e3 / big.ms,
    errors: alone.errors + during.errors,
    ...((during.firstError ?? alone.firstError) ? { firstError: during.firstError ?? alone.firstError } : {}),
  };
}

/** One big reply of `items` values, with small calls made beside it (at `spec.inFlight`) until it ends. */
async function bigWithSmallCalls(
  driver: Driver,
  spec: HolSpec,
  items: number,
  call: (done: (error?: unknown) => void) => void,
): Promise<BigRun> {
  let received = 0;
  let bytes = 0;
  let done = false;
  let error: string | undefined;
  let ms = 0;
  const started = performance.now();
  const finished = new Promise<void>((resolve) =>
    driver.big!(
      items,
      spec.itemBytes,
      (n) => {
        received++;
        bytes += n;
      },
      (failure) => {
        done = true;
        ms = performance.now() - started;
        if (failure !== undefined) error = describe(failure);
        resolve();
      },
    ),
  );
  const during = await closedLoop({
    call,
    count: spec.maxSmall,
    inFlight: spec.inFlight,
    keepGoing: () => !done,
    progress: () => received,
  });
  if (!during.stalled && !done) await Promise.race([finished, new Promise((r) => setTimeout(r, 5_000).unref())]);
  const expected = items * spec.itemBytes;
  // A big reply that failed ends the small calls too (same connection): such a run has no p99 to compare.
  const failure =
    error !== undefined
      ? `big reply: ${error} after ${received} of ${items} items`
      : done && bytes !== expected
        ? `big reply: ${bytes} of ${expected} bytes`
        : undefined;
  return { during, items: received, bytes, ms, done, failure };
}
