import { closedLoop } from './closed-loop.js';
import type { Driver, MemorySpec, RunResult } from './spec.js';

/**
 * Memory: `calls` calls of one kind open at once (unary: each handler returns a Subject; streamed kinds: each source
 * or Duplex sends one item and stays open). The server takes a baseline after GC when armed, measures heap and RSS
 * after GC once its handlers have seen all of them open, then releases them (the streamed kinds: the client ends
 * its sources when the server says it has measured); the figures come back through one more call, with what was
 * left once they were over. Reported per open call.
 */
export async function runMemory(driver: Driver, spec: MemorySpec): Promise<RunResult> {
  const call = spec.call ?? 'unary';
  if (driver.holdBegin === undefined || driver.hold === undefined || driver.holdReport === undefined || !driver.heldCalls?.includes(call))
    throw new Error(`this system cannot hold ${call} calls open`);
  await driver.holdBegin(spec.calls, call);
  const held = await closedLoop({
    call: (done) => driver.hold!(call, done),
    count: spec.calls,
    inFlight: spec.calls,
    // Streamed calls complete only after the measurement: the items they sent show progress while they open.
    progress: () => driver.holdProgress?.() ?? 0,
  });
  if (held.stalled) return { stalled: true, phase: 'holding', completed: held.completed };
  const figures = await driver.holdReport();
  const open = figures.open ?? 0;
  // The server's transport must have had every held call open when it measured, and none once they were over:
  // otherwise the figure is not per open call, or the next case inherits them.
  const counted = figures.serverCalls;
  if (counted !== undefined && Number.isFinite(counted) && counted !== spec.calls)
    throw new Error(`the server had ${counted} calls open when it measured, not ${spec.calls}`);
  if (figures.leftCalls !== undefined && Number.isFinite(figures.leftCalls) && figures.leftCalls !== 0)
    throw new Error(`${figures.leftCalls} of the ${spec.calls} held calls were still open on the server 5 s after their release`);
  return {
    stalled: false,
    ...figures,
    heapPerCall: (figures.heapUsed - figures.baseHeapUsed) / open,
    rssPerCall: (figures.rss - figures.baseRss) / open,
    ...(figures.heapAfter === undefined ? {} : { leftHeapPerCall: (figures.heapAfter - figures.baseHeapUsed) / open }),
    errors: held.errors,
    ...(held.firstError ? { firstError: held.firstError } : {}),
  };
}
