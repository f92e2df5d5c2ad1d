import { closedLoop } from './closed-loop.js';
import type { Driver, MemorySpec, RunResult } from './spec.js';

/**
 * Memory: `calls` calls open at once, each held by the server's handler on a Subject. The server takes a
 * baseline after GC when armed, measures heap and RSS after GC once all of them are open, then releases them;
 * the figures come back through one more call. Reported per open call.
 */
export async function runMemory(driver: Driver, spec: MemorySpec): Promise<RunResult> {
  if (driver.holdBegin === undefined || driver.hold === undefined || driver.holdReport === undefined)
    throw new Error('this system has no memory case');
  await driver.holdBegin(spec.calls);
  const held = await closedLoop({ call: (done) => driver.hold!(done), count: spec.calls, inFlight: spec.calls });
  if (held.stalled) return { stalled: true, phase: 'holding', completed: held.completed };
  const figures = await driver.holdReport();
  const open = figures.open ?? 0;
  return {
    stalled: false,
    ...figures,
    heapPerCall: (figures.heapUsed - figures.baseHeapUsed) / open,
    rssPerCall: (figures.rss - figures.baseRss) / open,
    errors: held.errors,
    ...(held.firstError ? { firstError: held.firstError } : {}),
  };
}
