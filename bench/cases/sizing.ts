import type { System } from '../systems/system.js';
import { describe } from './closed-loop.js';
import type { SizedCase } from './plan.js';
import type { CaseSpec, RunResult } from './spec.js';

/**
 * Sizing runs by time (issue 11): a calibration per system and case gives the calls for `seconds` of measured
 * work; each round's run then confirms it (a run that measured less raises the count of the next rounds).
 */

/** Calls sized for this much more than the target time, so that a slightly faster round still measures enough. */
export const MARGIN = 1.15;
/** Calibration runs at most, per system and case (each one scaled from the last until one is long enough). */
const MAX_TRIES = 5;
/** The largest step from one calibration run to the next. */
const MAX_STEP = 20;

/** The calls a system makes in a sized case, as calibrated (and raised after short rounds). */
export interface Calibration {
  caseId: string;
  system: string;
  /** The calibrated rate (per second), or null when calibration failed (then `count` is a guess). */
  rate: number | null;
  /** Calls of a measured run, warm-up calls before it. */
  count: number;
  warmup: number;
  /** Calibration runs made, and the seconds the last one measured. */
  runs: number;
  lastSeconds: number | null;
  /** Times the count was raised after a round measured less than the target. */
  raised: number;
  failed?: string;
}

/** The seconds of measured work a run stands for: its own `ms`, or its completed calls at its rate (Go's bench-rr). */
export function measuredSeconds(result: RunResult): number | null {
  if (typeof result.ms === 'number' && result.ms > 0) return result.ms / 1000;
  const { completed, rate } = result;
  if (typeof completed === 'number' && typeof rate === 'number' && rate > 0) return completed / rate;
  return null;
}

/**
 * Short unrecorded runs of the case on the system, scaled until one measures `calibrationSeconds`; then the
 * calls for `seconds` (× {@link MARGIN}) and `warmupSeconds` at that run's rate. A failed calibration falls back
 * to 10 × the first count (a Node client still measures its full time: see `minMs` in closed-loop.ts).
 */
export async function calibrate(system: System, c: SizedCase): Promise<Calibration> {
  const { seconds, warmupSeconds, calibrationSeconds, firstCount } = c.sizing;
  const inFlight = 'inFlight' in c.spec ? c.spec.inFlight : 1;
  let count = firstCount;
  for (let runs = 1; runs <= MAX_TRIES; runs++) {
    const result = await system.run({ ...c.spec, count, warmup: 0 } as CaseSpec);
    const measured = measuredSeconds(result);
    if (result.stalled || result.failed !== undefined || measured === null || typeof result.rate !== 'number' || !(result.rate > 0)) {
      const why = result.stalled ? 'stalled' : result.failed !== undefined ? describe(result.failed) : 'no rate';
      return {
        caseId: c.id,
        system: system.name,
        rate: null,
        count: firstCount * 10,
        warmup: firstCount,
        runs,
        lastSeconds: null,
        raised: 0,
        failed: why,
      };
    }
    if (measured >= calibrationSeconds || runs === MAX_TRIES) {
      const rate = result.rate;
      return {
        caseId: c.id,
        system: system.name,
        rate,
        count: Math.max(2 * inFlight, Math.ceil(rate * seconds * MARGIN)),
        warmup: Math.max(inFlight, Math.ceil(rate * warmupSeconds)),
        runs,
        lastSeconds: measured,
        raised: 0,
      };
    }
    count = Math.ceil(count * Math.min(MAX_STEP, (calibrationSeconds * 1.2) / Math.max(measured, 0.001)));
  }
  throw new Error('unreachable');
}

/** The spec of a measured run: the calibrated counts, and `minMs` (a Node client keeps going until it has measured that long). */
export function sizedSpec(c: SizedCase, calibration: Calibration): CaseSpec {
  return { ...c.spec, count: calibration.count, warmup: calibration.warmup, minMs: c.sizing.seconds * 1000 } as CaseSpec;
}

/** After a round's run measured less than the target (a client without `minMs`, e.g. Go's): more calls next time (at most 4 × as many). */
export function raiseIfShort(c: SizedCase, calibration: Calibration, measured: number | null): void {
  if (measured === null || measured <= 0 || measured >= c.sizing.seconds) return;
  calibration.count = Math.min(4 * calibration.count, Math.ceil((calibration.count * c.sizing.seconds * MARGIN) / measured));
  calibration.raised++;
}
