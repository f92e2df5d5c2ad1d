import { describe, expect, test } from '@jest/globals';
import { StreamTimeouts, type TimeoutOwner } from '../../lib/smux/stream-timeouts.js';
import { FakeClock } from '../helpers/fake-clock.js';

class Owner implements TimeoutOwner {
  awaitingData = true;
  writePending = false;
  fired: Array<{ kind: 'read' | 'write'; ms: number; at: number }> = [];

  constructor(readonly clock: FakeClock) {}

  onIdleTimeout(kind: 'read' | 'write', ms: number): void {
    this.fired.push({ kind, ms, at: this.clock.now() });
  }
}

function setup(state: Partial<Pick<Owner, 'awaitingData' | 'writePending'>> = {}) {
  const clock = new FakeClock();
  const owner = Object.assign(new Owner(clock), state);
  const timeouts = new StreamTimeouts(clock, owner);
  return { clock, owner, timeouts, t0: clock.now() };
}

describe('StreamTimeouts: read', () => {
  test('fires once, exactly readMs after configure(), while the owner awaits data', () => {
    const { clock, owner, timeouts, t0 } = setup();
    timeouts.configure(1000, 0);
    clock.advance(999);
    expect(owner.fired).toEqual([]);
    clock.advance(1);
    expect(owner.fired).toEqual([{ kind: 'read', ms: 1000, at: t0 + 1000 }]);
    clock.advance(10_000);
    expect(owner.fired).toHaveLength(1);
    expect(clock.pending).toBe(0);
  });

  test('never fires while the owner does not await data (peer ended, or paused)', () => {
    const { clock, owner, timeouts } = setup({ awaitingData: false });
    timeouts.configure(1000, 0);
    clock.advance(60_000);
    expect(owner.fired).toEqual([]);
  });

  test('noteRead() postpones it: the deadline is readMs after the last data', () => {
    const { clock, owner, timeouts, t0 } = setup();
    timeouts.configure(1000, 0);
    clock.advance(600);
    timeouts.noteRead();
    clock.advance(900);
    timeouts.noteRead();
    clock.advance(999);
    expect(owner.fired).toEqual([]);
    clock.advance(1);
    expect(owner.fired).toEqual([{ kind: 'read', ms: 1000, at: t0 + 2500 }]);
  });

  test('a timer that passes while the owner does not await data does not fire; silence counts from noteRead()', () => {
    const { clock, owner, timeouts, t0 } = setup();
    timeouts.configure(1000, 0);
    clock.advance(500);
    owner.awaitingData = false; // e.g. the consumer paused the stream
    clock.advance(700);
    expect(owner.fired).toEqual([]);
    owner.awaitingData = true;
    timeouts.noteRead(); // what a channel does on resume(): the silence while paused was ours
    clock.advance(999);
    expect(owner.fired).toEqual([]);
    clock.advance(1);
    expect(owner.fired).toEqual([{ kind: 'read', ms: 1000, at: t0 + 2200 }]);
  });

  test('a read timeout configured while the owner is paused starts counting once it awaits data again', () => {
    const { clock, owner, timeouts, t0 } = setup({ awaitingData: false });
    timeouts.configure(1000, 0);
    clock.advance(5000);
    owner.awaitingData = true;
    timeouts.noteRead();
    clock.advance(2000);
    expect(owner.fired).toEqual([{ kind: 'read', ms: 1000, at: t0 + 6000 }]);
  });
});

describe('StreamTimeouts: write', () => {
  test('fires writeMs after configure() while a write is pending', () => {
    const { clock, owner, timeouts, t0 } = setup({ writePending: true });
    timeouts.configure(0, 1000);
    clock.advance(1000);
    expect(owner.fired).toEqual([{ kind: 'write', ms: 1000, at: t0 + 1000 }]);
  });

  test('never fires while nothing is pending', () => {
    const { clock, owner, timeouts } = setup();
    timeouts.configure(0, 1000);
    clock.advance(60_000);
    expect(owner.fired).toEqual([]);
  });

  test('noteWrite() (progress toward the socket) postpones it', () => {
    const { clock, owner, timeouts, t0 } = setup({ writePending: true });
    timeouts.configure(0, 1000);
    clock.advance(800);
    timeouts.noteWrite();
    clock.advance(999);
    expect(owner.fired).toEqual([]);
    clock.advance(1);
    expect(owner.fired).toEqual([{ kind: 'write', ms: 1000, at: t0 + 1800 }]);
  });

  test('a write that becomes pending after a long read timer was armed still times out on time', () => {
    const { clock, owner, timeouts, t0 } = setup();
    timeouts.configure(10_000, 1000);
    clock.advance(100);
    owner.writePending = true;
    timeouts.noteWrite(); // new bytes queued on an idle stream
    clock.advance(999);
    expect(owner.fired).toEqual([]);
    clock.advance(1);
    expect(owner.fired).toEqual([{ kind: 'write', ms: 1000, at: t0 + 1100 }]);
  });

  test('a write that becomes pending after an earlier timer found nothing pending is still watched', () => {
    const { clock, owner, timeouts, t0 } = setup({ awaitingData: false });
    timeouts.configure(0, 1000);
    clock.advance(5000);
    owner.writePending = true;
    timeouts.noteWrite();
    clock.advance(1000);
    expect(owner.fired).toEqual([{ kind: 'write', ms: 1000, at: t0 + 6000 }]);
  });

  test('a write that completed (nothing pending any more) does not time out later', () => {
    const { clock, owner, timeouts } = setup({ awaitingData: false, writePending: true });
    timeouts.configure(0, 1000);
    clock.advance(500);
    owner.writePending = false;
    timeouts.noteWrite();
    clock.advance(10_000);
    expect(owner.fired).toEqual([]);
  });
});

describe('StreamTimeouts: lifecycle', () => {
  test('the read timeout wins when both pass at once, and only one fires', () => {
    const { clock, owner, timeouts } = setup({ writePending: true });
    timeouts.configure(1000, 1000);
    clock.advance(5000);
    expect(owner.fired.map((f) => f.kind)).toEqual(['read']);
  });

  test('configure() again restarts both clocks from now', () => {
    const { clock, owner, timeouts, t0 } = setup({ writePending: true });
    timeouts.configure(1000, 2000);
    clock.advance(900);
    timeouts.configure(0, 2000);
    clock.advance(1999);
    expect(owner.fired).toEqual([]);
    clock.advance(1);
    expect(owner.fired).toEqual([{ kind: 'write', ms: 2000, at: t0 + 2900 }]);
  });

  test('configure(0, 0) arms nothing', () => {
    const { clock, owner, timeouts } = setup({ writePending: true });
    timeouts.configure(0, 0);
    expect(clock.pending).toBe(0);
    clock.advance(60_000);
    expect(owner.fired).toEqual([]);
  });

  test('stop() cancels the timer and later progress arms nothing', () => {
    const { clock, owner, timeouts } = setup({ writePending: true });
    timeouts.configure(1000, 1000);
    clock.advance(500);
    timeouts.stop();
    expect(clock.pending).toBe(0);
    timeouts.noteRead();
    timeouts.noteWrite();
    clock.advance(60_000);
    expect(owner.fired).toEqual([]);
    expect(clock.pending).toBe(0);
  });
});
