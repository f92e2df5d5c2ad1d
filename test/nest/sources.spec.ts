/**
 * pullSource's turn budget: all pulls of the process together take at most PULLS_PER_TURN items in one turn of the
 * event loop, then wait for the next (after I/O). An async generator yields on microtasks, so without it a thousand
 * pulled replies ran in one turn of 200 – 460 ms while other connections waited (a hostile-peer trial).
 */
import { describe, expect, test } from '@jest/globals';
import type { CallEndpoint } from '../../lib/nest/call-endpoint.js';
import { PULLS_PER_TURN, pullSource } from '../../lib/nest/sources.js';

/** A stream that always has room: the pull is bounded only by the turn budget (and the source's end). */
const roomy = { writable: true, drained: () => Promise.resolve() } as unknown as CallEndpoint;

async function* counting(limit: number): AsyncGenerator<number> {
  for (let i = 0; i < limit; i++) yield i;
}

describe('pullSource', () => {
  test('pulls share a budget of items per turn: a timer queued meanwhile runs after at most PULLS_PER_TURN of them', async () => {
    let written = 0;
    let live = true;
    const pulls = Array.from({ length: 8 }, () =>
      pullSource(
        roomy,
        counting(50_000), // 400 000 items in all: what one turn took before
        () => void written++,
        () => live,
        () => undefined,
      ),
    );
    const seen = await new Promise<number>((resolve) => setImmediate(() => resolve(written)));
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThanOrEqual(PULLS_PER_TURN);
    // The pulls go on over later turns, and end as asked.
    const later = await new Promise<number>((resolve) => setTimeout(() => resolve(written), 20));
    expect(later).toBeGreaterThan(seen);
    live = false;
    expect(await Promise.all(pulls)).toEqual(Array.from({ length: 8 }, () => ({ done: false, stopped: true })));
  });

  test('a source that ends is pulled to its end, over as many turns as it needs', async () => {
    const items: number[] = [];
    const outcome = await pullSource(
      roomy,
      counting(3 * PULLS_PER_TURN + 5),
      (item) => void items.push(item as number),
      () => true,
      () => undefined,
    );
    expect(outcome).toEqual({ done: true });
    expect(items).toEqual(Array.from({ length: 3 * PULLS_PER_TURN + 5 }, (_, i) => i));
  });
});
