/**
 * FinSweep: after its last message and FIN a call waits for the caller's FIN at most `finTimeout` from the time the
 * call ended (given by the call: the sweep reads no clock per call), a call still draining its bytes is not cut
 * off, and the sweeps stay at least `finTimeout / 8` apart. A fake clock; channels are plain objects.
 */
import { describe, expect, test } from '@jest/globals';
import type { SmuxChannel } from '../../lib/smux/index.js';
import { type AwaitingFin, FinSweep } from '../../lib/nest/fin-sweep.js';
import { FakeClock } from '../helpers/fake-clock.js';

interface FakeCall extends AwaitingFin {
  destroyed: boolean;
  queued: number;
}

function call(): FakeCall {
  const c: FakeCall = {
    destroyed: false,
    queued: 0,
    finDue: 0,
    finQueued: -1,
    finSlot: -1,
    channel: {
      get writableLength() {
        return c.queued;
      },
      finSent: true,
      destroy: () => {
        c.destroyed = true;
      },
    } as unknown as SmuxChannel,
  };
  return c;
}

describe('FinSweep', () => {
  test('lets a call go finTimeout after the end time it was given, not after the time it was added', () => {
    const clock = new FakeClock();
    const sweep = new FinSweep(clock, 1_000);
    const early = call();
    const late = call();
    sweep.add(early, clock.now()); // t = 1000: due at 2000, the first sweep then
    clock.advance(500);
    sweep.add(late, clock.now() - 300); // t = 1500, ended at 1200: due at 2200
    clock.advance(499);
    expect([early.destroyed, late.destroyed]).toEqual([false, false]);
    clock.advance(1); // t = 2000: the first sweep
    expect([early.destroyed, late.destroyed]).toEqual([true, false]);
    clock.advance(199);
    expect(late.destroyed).toBe(false);
    clock.advance(1); // t = 2200: the next sweep comes at late's due time (≥ finTimeout / 8 after the last)
    expect(late.destroyed).toBe(true);
    expect(clock.pending).toBe(0); // nothing left to sweep: no timer
  });

  test('a call whose caller FINed in time (deleted) is not touched while the others time out', () => {
    const clock = new FakeClock();
    const sweep = new FinSweep(clock, 1_000);
    const [finned, waiting] = [call(), call()];
    sweep.add(finned, clock.now());
    sweep.add(waiting, clock.now());
    sweep.delete(finned);
    clock.advance(1_000);
    expect([finned.destroyed, waiting.destroyed, clock.pending]).toEqual([false, true, 0]);
  });

  test('stop() forgets the waiting calls and its timer', () => {
    const clock = new FakeClock();
    const sweep = new FinSweep(clock, 1_000);
    const waiting = call();
    sweep.add(waiting, clock.now());
    expect(clock.pending).toBe(1);
    sweep.stop();
    clock.advance(5_000);
    expect([waiting.destroyed, clock.pending]).toEqual([false, 0]);
  });

  test('a call still draining its own bytes gets another finTimeout; one that stopped draining is let go', () => {
    const clock = new FakeClock();
    const sweep = new FinSweep(clock, 1_000);
    const slow = call();
    (slow.channel as { finSent: boolean }).finSent = false;
    slow.queued = 50_000;
    sweep.add(slow, clock.now());
    clock.advance(1_000); // first look: 50 000 queued, a change from "never looked"
    expect(slow.destroyed).toBe(false);
    slow.queued = 20_000;
    clock.advance(1_000); // still moving
    expect(slow.destroyed).toBe(false);
    clock.advance(1_000); // stuck at 20 000 for a whole finTimeout
    expect(slow.destroyed).toBe(true);
  });
});
