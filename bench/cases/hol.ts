import { closedLoop, describe } from './closed-loop.js';
import { makePayload } from './payload.js';
import type { Driver, HolSpec, RunResult } from './spec.js';

/**
 * Head-of-line blocking: the p99 of small echo calls alone, then the p99 of small echo calls made while one
 * call on the same connection streams `items` × `itemBytes` back as Observable values. Small calls keep going
 * (at `inFlight`) for as long as the big reply runs. A big reply that ends with an error, or delivers fewer
 * bytes, makes the run `failed` (with the reason): it is left out of the medians and listed in the notes.
 */
export async function runHol(driver: Driver, spec: HolSpec): Promise<RunResult> {
  if (driver.big === undefined) throw new Error('this system has no big reply');
  const payload = makePayload(spec.size);
  const call = (done: (error?: unknown) => void): void => driver.echo(payload, done);
  const warm = await closedLoop({ call, count: spec.warmup, inFlight: spec.inFlight });
  if (warm.stalled) return { stalled: true, phase: 'warm-up' };
  const alone = await closedLoop({ call, count: spec.count, inFlight: spec.inFlight });
  if (alone.stalled) return { stalled: true, phase: 'alone' };

  let items = 0;
  let bytes = 0;
  let bigDone = false;
  let bigError: string | undefined;
  let bigMs = 0;
  const started = performance.now();
  const bigFinished = new Promise<void>((resolve) =>
    driver.big!(
      spec.items,
      spec.itemBytes,
      (n) => {
        items++;
        bytes += n;
      },
      (error) => {
        bigDone = true;
        bigMs = performance.now() - started;
        if (error !== undefined) bigError = describe(error);
        resolve();
      },
    ),
  );
  const during = await closedLoop({
    call,
    count: spec.maxSmall,
    inFlight: spec.inFlight,
    keepGoing: () => !bigDone,
    progress: () => items,
  });
  if (!during.stalled && !bigDone) await Promise.race([bigFinished, new Promise((r) => setTimeout(r, 5_000).unref())]);
  const expected = spec.items * spec.itemBytes;
  // A big reply that failed ends the small calls too (same connection): such a run has no p99 to compare.
  const bigFailure =
    bigError !== undefined
      ? `big reply: ${bigError} after ${items} of ${spec.items} items`
      : bigDone && bytes !== expected
        ? `big reply: ${bytes} of ${expected} bytes`
        : undefined;
  return {
    ...(bigFailure === undefined ? {} : { failed: bigFailure }),
    stalled: during.stalled || !bigDone,
    phase: 'with big reply',
    rate: during.rate,
    p50: during.p50,
    p99: during.p99,
    p50Alone: alone.p50,
    p99Alone: alone.p99,
    rateAlone: alone.rate,
    p99Ratio: during.p99 / alone.p99,
    smallCalls: during.completed,
    bigItems: items,
    bigBytes: bytes,
    bigMs,
    bigMBps: bytes / 1e3 / bigMs,
    errors: alone.errors + during.errors,
    ...((during.firstError ?? alone.firstError) ? { firstError: during.firstError ?? alone.firstError } : {}),
  };
}
