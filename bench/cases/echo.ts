import { closedLoop } from './closed-loop.js';
import { makePayload } from './payload.js';
import type { Driver, EchoSpec, RunResult } from './spec.js';

/**
 * Echo request/response: the string payload goes to the server's echo handler and back. Warm-up calls first
 * (same size, same concurrency), then `count` measured calls (more until `minMs`): calls/s, p50, p99.
 */
export async function runEcho(driver: Driver, spec: EchoSpec): Promise<RunResult> {
  const payload = makePayload(spec.size);
  const call = (done: (error?: unknown) => void): void => driver.echo(payload, done);
  const warm = await closedLoop({ call, count: spec.warmup, inFlight: spec.inFlight });
  if (warm.stalled)
    return {
      stalled: true,
      phase: 'warm-up',
      completed: warm.completed,
      errors: warm.errors,
      ...(warm.firstError ? { firstError: warm.firstError } : {}),
    };
  const run = await closedLoop({ call, count: spec.count, inFlight: spec.inFlight, minMs: spec.minMs ?? 0 });
  return { ...run, phase: 'measure' };
}
