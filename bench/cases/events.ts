import { closedLoop, describe } from './closed-loop.js';
import { makePayload } from './payload.js';
import type { Driver, EventsSpec, RunResult } from './spec.js';

/**
 * Events: `count` emits (more until `minMs`) with `inFlight` outstanding (an emit is outstanding until the client says it is sent),
 * then one call asks the server how many arrived. events/s counts from the first emit until the server has
 * them all (or gave up waiting 3 s), so a client that only queues its events does not look faster than it is.
 */
export async function runEvents(driver: Driver, spec: EventsSpec): Promise<RunResult> {
  if (driver.emit === undefined || driver.eventsReceived === undefined) throw new Error('this system has no events');
  const payload = makePayload(spec.size);
  const call = (done: (error?: unknown) => void): void => driver.emit!(payload, done);
  const before = await driver.eventsReceived(0);
  const warm = await closedLoop({ call, count: spec.warmup, inFlight: spec.inFlight });
  if (warm.stalled) return { stalled: true, phase: 'warm-up', completed: warm.completed };
  const base = await driver.eventsReceived(before + warm.completed); // the warm-up's events have all arrived
  const started = performance.now();
  const run = await closedLoop({ call, count: spec.count, inFlight: spec.inFlight, minMs: spec.minMs ?? 0 });
  if (run.stalled) return { stalled: true, phase: 'measure', completed: run.completed, errors: run.errors };
  const emitMs = performance.now() - started;
  let received: number;
  try {
    received = (await driver.eventsReceived(base + run.completed)) - base;
  } catch (error) {
    return { stalled: false, errors: run.errors + 1, firstError: `counting events: ${describe(error)}` };
  }
  const ms = performance.now() - started;
  return {
    stalled: false,
    rate: (received / ms) * 1000,
    emitRate: (run.completed / emitMs) * 1000,
    sent: run.completed,
    received,
    lost: run.completed - received,
    ms,
    completed: received,
    p50: run.p50,
    p99: run.p99,
    errors: run.errors,
    ...(run.firstError ? { firstError: run.firstError } : {}),
  };
}
