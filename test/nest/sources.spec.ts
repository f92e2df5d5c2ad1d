/**
 * pullSource's turn budget: all pulls of the process together take at most PULLS_PER_TURN items in one turn of the
 * event loop, then wait for the next (after I/O). An async generator yields on microtasks, so without it a thousand
 * pulled replies ran in one turn of 200 – 460 ms while other connections waited (a hostile-peer trial).
 */
import { describe, expect, test } from '@jest/globals';
import { PULLS_PER_TURN } from '../../lib/nest/pull-turns.js';
import { pullSource } from '../../lib/nest/sources.js';
import { counting, roomyEndpoint } from '../helpers/pulls.js';

describe('pullSource', () => {
  test('pulls share a budget of items per turn: each turn of the event loop takes at most PULLS_PER_TURN of them', async () => {
    let written = 0;
    let live = true;
    const pulls = Array.from({ length: 8 }, () =>
      pullSource(
        roomyEndpoint(),
        counting(50_000), // 400 000 items in all: what one turn took before
        () => void written++,
        () => live,
        () => undefined,
      ),
    );
    const turn = (): Promise<number> => new Promise((resolve) => setImmediate(() => resolve(written)));
    // The first turn's items, and the waiting ones the turn's end (a setImmediate queued before ours) lets through.
    const seen = await turn();
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThanOrEqual(2 * PULLS_PER_TURN);
    // Then one budget per turn of the event loop (400 000 items would take 1 563 turns).
    let previous = seen;
    for (let i = 0; i < 10; i++) {
      const now = await turn();
      expect(now - previous).toBeLessThanOrEqual(PULLS_PER_TURN);
      previous = now;
    }
    // The pulls go on over later turns, and end as asked.
    const later = await new Promise<number>((resolve) => setTimeout(() => resolve(written), 20));
    expect(later).toBeGreaterThan(seen);
    live = false;
    expect(await Promise.all(pulls)).toEqual(Array.from({ length: 8 }, () => ({ done: false, stopped: true })));
  });

  test('a source that ends is pulled to its end, over as many turns as it needs', async () => {
    const items: number[] = [];
    const outcome = await pullSource(
      roomyEndpoint(),
      counting(3 * PULLS_PER_TURN + 5),
      (item) => void items.push(item as number),
      () => true,
      () => undefined,
    );
    expect(outcome).toEqual({ done: true });
    expect(items).toEqual(Array.from({ length: 3 * PULLS_PER_TURN + 5 }, (_, i) => i));
  });
});
