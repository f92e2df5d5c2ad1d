import { describe, expect, test } from '@jest/globals';
import { KeepAlive, type KeepAliveHost } from '../../lib/smux/keep-alive.js';
import { FakeClock } from '../helpers/fake-clock.js';

const INTERVAL = 10_000;
const TIMEOUT = 30_000;

class Host implements KeepAliveHost {
  nops: number[] = []; // times a NOP was queued
  timeouts: Array<{ at: number; silentMs: number }> = [];
  readingPaused = false;

  constructor(readonly clock: FakeClock) {}

  sendNop(): void {
    this.nops.push(this.clock.now());
  }
  onKeepAliveTimeout(silentMs: number): void {
    this.timeouts.push({ at: this.clock.now(), silentMs });
  }
}

function setup(interval = INTERVAL, timeout = TIMEOUT) {
  const clock = new FakeClock();
  const host = new Host(clock);
  const keepAlive = new KeepAlive(clock, host, interval, timeout, (judge) => judge()); // judged at once: no loop to poll
  const t0 = clock.now();
  return { clock, host, keepAlive, t0 };
}

describe('KeepAlive', () => {
  test('queues a NOP every interval while frames keep arriving', () => {
    const { clock, host, keepAlive, t0 } = setup();
    keepAlive.start();
    for (let i = 0; i < 6; i++) {
      clock.advance(INTERVAL / 2);
      keepAlive.activity();
      clock.advance(INTERVAL / 2);
    }
    expect(host.nops).toEqual([1, 2, 3, 4, 5, 6].map((k) => t0 + k * INTERVAL));
    expect(host.timeouts).toEqual([]);
  });

  test('does nothing before start()', () => {
    const { clock, host } = setup();
    clock.advance(10 * TIMEOUT);
    expect([host.nops, host.timeouts, clock.pending]).toEqual([[], [], 0]);
  });

  test('start() twice runs one timer, not two', () => {
    const { clock, host, keepAlive } = setup();
    keepAlive.start();
    keepAlive.start();
    expect(clock.pending).toBe(1);
    clock.advance(INTERVAL);
    expect(host.nops).toHaveLength(1);
  });

  test('a silent peer is detected no earlier than the timeout, with the silence reported', () => {
    const { clock, host, keepAlive, t0 } = setup();
    keepAlive.start();
    clock.advance(TIMEOUT - 1);
    expect(host.timeouts).toEqual([]);
    clock.advance(INTERVAL);
    expect(host.timeouts).toEqual([{ at: t0 + TIMEOUT, silentMs: TIMEOUT }]);
    // No NOP on the tick that gives up, and no timer left behind.
    expect(host.nops).toEqual([t0 + INTERVAL, t0 + 2 * INTERVAL]);
    expect(clock.pending).toBe(0);
  });

  // DESIGN.md §2: detection between T and T + interval after the last frame (Go: between T and 2T).
  test.each([0, 1, 2_500, 9_999, 10_000, 10_001, 12_345, 19_999, 29_999])(
    'with the last frame %d ms after start, the timeout fires in [T, T + interval) after that frame',
    (offset) => {
      const { clock, host, keepAlive } = setup();
      keepAlive.start();
      clock.advance(offset);
      keepAlive.activity();
      const last = clock.now();
      clock.advance(TIMEOUT + 2 * INTERVAL);
      expect(host.timeouts).toHaveLength(1);
      const { at, silentMs } = host.timeouts[0];
      expect(at - last).toBeGreaterThanOrEqual(TIMEOUT);
      expect(at - last).toBeLessThan(TIMEOUT + INTERVAL);
      expect(silentMs).toBe(at - last);
    },
  );

  test('detection stays within [T, T + interval) when timeout equals interval', () => {
    const { clock, host, keepAlive, t0 } = setup(1000, 1000);
    keepAlive.start();
    clock.advance(500);
    keepAlive.activity(); // ticks at t0 + 1000 (500 ms silent) and t0 + 2000 (1500 ms silent)
    clock.advance(5000);
    expect(host.timeouts).toEqual([{ at: t0 + 2000, silentMs: 1500 }]);
  });

  test('never times out while the session itself paused reading', () => {
    const { clock, host, keepAlive } = setup();
    keepAlive.start();
    host.readingPaused = true;
    clock.advance(20 * TIMEOUT);
    expect(host.timeouts).toEqual([]);
    expect(host.nops.length).toBe((20 * TIMEOUT) / INTERVAL); // our own NOPs still go out
  });

  test('after a pause, silence is counted from the resume (activity()), not from the last frame', () => {
    const { clock, host, keepAlive } = setup();
    keepAlive.start();
    host.readingPaused = true;
    clock.advance(5 * TIMEOUT + 1234);
    host.readingPaused = false;
    keepAlive.activity(); // the session resumes reading
    const resumed = clock.now();
    clock.advance(TIMEOUT - 1);
    expect(host.timeouts).toEqual([]);
    clock.advance(2 * INTERVAL);
    expect(host.timeouts).toHaveLength(1);
    const { at } = host.timeouts[0];
    expect(at - resumed).toBeGreaterThanOrEqual(TIMEOUT);
    expect(at - resumed).toBeLessThan(TIMEOUT + INTERVAL);
  });

  test('stop() cancels the timer: no NOPs and no timeout afterwards', () => {
    const { clock, host, keepAlive } = setup();
    keepAlive.start();
    clock.advance(INTERVAL);
    keepAlive.stop();
    expect(clock.pending).toBe(0);
    clock.advance(10 * TIMEOUT);
    expect(host.nops).toHaveLength(1);
    expect(host.timeouts).toEqual([]);
    keepAlive.stop(); // idempotent
    expect(clock.pending).toBe(0);
  });
});
