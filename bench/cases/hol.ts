import { closedLoop, describe, type LoopResult } from './closed-loop.js';
import { makePayload } from './payload.js';
import type { Driver, HolSpec, RunResult } from './spec.js';

/**
 * The warm-up's big reply is this fraction of the measured one. Warming up with small calls alone left the big
 * reply's path (encoding a Buffer value, bulk frames, joining a 64 KiB value on the client) to the JIT during the
 * measured reply: the first round of a run measured ≈ 150 MB/s against ≈ 500 in the next ones (docs/NOTES.md).
 */
const WARM_BIG_SHARE = 8;

/** Big replies one phase makes at most, however fast they run (a bound on the loop). */
const MAX_REPLIES = 100;

/** What the big replies of a phase, with small calls beside them, came to. */
interface BigRun {
  during: LoopResult;
  /** Big replies made (the last one may have failed). */
  replies: number;
  /** Items and bytes received, over all the replies. */
  items: number;
  bytes: number;
  /** Time the replies took, summed (from each one's call to its end). */
  ms: number;
  done: boolean;
  /** Why a big reply failed (an error, or fewer bytes than asked). */
  failure: string | undefined;
}

/**
 * Head-of-line blocking: the p99 of small echo calls alone, then the p99 of small echo calls made while calls on
 * the same connection stream `items` × `itemBytes` back as Observable values. Both phases are sized by time
 * (issue 11): small calls alone for `seconds`, then big replies one after another until `seconds` have passed,
 * small calls (at `inFlight`) going on beside them until the last one ends. One 64 MiB reply lasts ≈ 0.2 s, and a
 * p99 of a phase that short was set by a single GC pause: the ratio of one round to the next swung 0.8 – 4.1 ×.
 * The warm-up runs both shapes (small calls, then a smaller big reply with small calls beside it). A big reply
 * that ends with an error, or delivers fewer bytes, makes the run `failed` (with the reason): it is left out of
 * the medians and listed in the notes.
 */
export async function runHol(driver: Driver, spec: HolSpec): Promise<RunResult> {
  if (driver.big === undefined) throw new Error('this system has no big reply');
  const payload = makePayload(spec.size);
  const call = (done: (error?: unknown) => void): void => driver.echo(payload, done);
  const warm = await closedLoop({ call, count: spec.warmup, inFlight: spec.inFlight });
  if (warm.stalled) return { stalled: true, phase: 'warm-up' };
  const warmItems = Math.max(1, Math.floor(spec.items / WARM_BIG_SHARE));
  const warmBig = await bigWithSmallCalls(driver, spec, warmItems, 0, call);
  if (warmBig.during.stalled || !warmBig.done) return { stalled: true, phase: 'warm-up with big reply' };
  if (warmBig.failure !== undefined) return { stalled: false, phase: 'warm-up with big reply', failed: `warm-up ${warmBig.failure}` };
  const ms = spec.seconds * 1000;
  const alone = await closedLoop({ call, count: spec.count, minMs: ms, maxCount: spec.maxSmall, inFlight: spec.inFlight });
  if (alone.stalled) return { stalled: true, phase: 'alone' };

  const big = await bigWithSmallCalls(driver, spec, spec.items, ms, call);
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
    bigReplies: big.replies,
    bigItems: big.items,
    bigBytes: big.bytes,
    bigMs: big.ms,
    bigMBps: big.bytes / 1e3 / big.ms,
    errors: alone.errors + during.errors,
    ...((during.firstError ?? alone.firstError) ? { firstError: during.firstError ?? alone.firstError } : {}),
  };
}

/**
 * Big replies of `items` values, one after another until `minMs` have passed (at least one, at most
 * {@link MAX_REPLIES}, none after a failure), with small calls made beside them (at `spec.inFlight`) until the
 * last one ends.
 */
async function bigWithSmallCalls(
  driver: Driver,
  spec: HolSpec,
  items: number,
  minMs: number,
  call: (done: (error?: unknown) => void) => void,
): Promise<BigRun> {
  let received = 0;
  let bytes = 0;
  let replies = 0;
  let done = false;
  let error: string | undefined;
  let ms = 0;
  const started = performance.now();
  const finished = new Promise<void>((resolve) => {
    const nextReply = (): void => {
      replies++;
      const replyStarted = performance.now();
      driver.big!(
        items,
        spec.itemBytes,
        (n) => {
          received++;
          bytes += n;
        },
        (failure) => {
          const now = performance.now();
          ms += now - replyStarted;
          if (failure !== undefined) error = describe(failure);
          const short = bytes !== replies * items * spec.itemBytes;
          if (error === undefined && !short && now - started < minMs && replies < MAX_REPLIES) return nextReply();
          done = true;
          resolve();
        },
      );
    };
    nextReply();
  });
  const during = await closedLoop({
    call,
    count: spec.maxSmall,
    inFlight: spec.inFlight,
    keepGoing: () => !done,
    progress: () => received,
  });
  if (!during.stalled && !done) await Promise.race([finished, new Promise((r) => setTimeout(r, 5_000).unref())]);
  const expected = replies * items * spec.itemBytes;
  // A big reply that failed ends the small calls too (same connection): such a run has no p99 to compare.
  const failure =
    error !== undefined
      ? `big reply ${replies}: ${error} after ${received} of ${replies * items} items`
      : done && bytes !== expected
        ? `big replies: ${bytes} of ${expected} bytes`
        : undefined;
  return { during, replies, items: received, bytes, ms, done, failure };
}
