import type { CallEndpoint } from '../../lib/nest/call-endpoint.js';

/**
 * A stream of connection `session` that always has room, for pullSource alone (sources.spec, pull-turns.spec): a
 * pull is then bounded only by the turn budget and its source's end.
 */
export function roomyEndpoint(session: object = {}): CallEndpoint {
  return { writable: true, drained: () => Promise.resolve(), channel: { session } } as unknown as CallEndpoint;
}

/** An async generator of 0 … limit − 1: it yields on microtasks, as a handler's generator does. */
export async function* counting(limit: number): AsyncGenerator<number> {
  for (let i = 0; i < limit; i++) yield i;
}
