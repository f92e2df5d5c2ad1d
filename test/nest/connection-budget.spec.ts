/**
 * ConnectionBudget on its own (no sockets; a fake clock): what a connection may hold of the server's memory — input
 * charges, reply charges with their burst and largest-holder rules, the stall clock, and the wait for room a feed
 * uses instead of failing.
 */
import { describe, expect, test } from '@jest/globals';
import { ConnectionBudget, type ReplyQueue } from '../../lib/nest/connection-budget.js';
import { FakeClock } from '../helpers/fake-clock.js';

const MAX = 1000;

/** A call's reply queue: `queue(n)` charges what it queued, as an endpoint does. */
class Queue implements ReplyQueue {
  replyCharge = 0;
  writtenSlot = -1;
  constructor(readonly budget: ConnectionBudget) {}
  queue(bytes: number): void {
    this.replyCharge += bytes;
    this.budget.chargeReply(this, bytes);
  }
  take(bytes: number): void {
    this.replyCharge -= bytes;
    this.budget.chargeReply(this, -bytes);
  }
  refreshReplyCharge(): void {}
}

function setup() {
  const clock = new FakeClock();
  const budget = new ConnectionBudget({ maxPendingRequestBytes: MAX, maxQueuedReplyBytes: MAX }, clock);
  return { clock, budget, a: new Queue(budget), b: new Queue(budget) };
}

/** Whether `promise` has settled by the end of the current microtasks. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(() => (done = true));
  await Promise.resolve();
  await Promise.resolve();
  return done;
}

describe('ConnectionBudget', () => {
  test('input: a charge past maxPendingRequestBytes is refused (retryable ERR_SMUX_LIMIT) and not taken', () => {
    const { budget } = setup();
    expect(budget.chargeInput(600)).toBeNull();
    const refused = budget.chargeInput(401);
    expect(refused).toMatchObject({ code: 'ERR_SMUX_LIMIT', retryable: true });
    expect(budget.pendingRequestBytes).toBe(600);
    expect(budget.chargeInput(-600)).toBeNull();
    expect(budget.chargeInput(1000)).toBeNull();
  });

  test('replies: what fits is admitted; a burst up to twice the budget while the caller keeps up; not once it is behind', () => {
    const { budget, a } = setup();
    a.queue(900);
    expect(budget.admitsReply(a, 100)).toBe(true); // fits
    expect(budget.admitsReply(a, 900)).toBe(true); // a burst: nothing stayed queued at the last settle
    budget.settle(); // 900 stayed queued: the caller is behind
    expect(budget.admitsReply(a, 101)).toBe(false);
    expect(budget.replyRefusal(101)).toMatchObject({ code: 'ERR_SMUX_LIMIT', retryable: false });
  });

  test('beside the call holding the most, another call is admitted within the budget without it, up to twice the budget', () => {
    const { budget, a, b } = setup();
    a.queue(900);
    budget.settle();
    expect(budget.admitsReply(b, 600)).toBe(true); // 1500 − 900 ≤ 1000, 1500 ≤ 2000
    expect(budget.admitsReply(a, 600)).toBe(false); // the largest holder itself is refused
    b.queue(600);
    expect(budget.admitsReply(b, 600)).toBe(false); // 2100 > twice the budget
  });

  test('the stall clock runs from the first refusal while the caller stays behind, and stops once it reads', () => {
    const { clock, budget, a } = setup();
    a.queue(900);
    budget.settle();
    expect(budget.stalledFor()).toBe(0);
    expect(budget.admitsReply(a, 200)).toBe(false);
    clock.advance(700);
    expect(budget.stalledFor()).toBe(700);
    a.take(500); // 400 left: at most half the budget
    budget.settle();
    expect(budget.stalledFor()).toBe(0);
  });

  test('whenRoom() resolves at the first settle that finds at most half the budget queued, not before', async () => {
    const { budget, a } = setup();
    a.queue(900);
    budget.settle();
    const first = budget.whenRoom();
    const second = budget.whenRoom();
    expect(await settled(first)).toBe(false);
    a.take(300); // 600 queued: more than half
    budget.settle();
    expect(await settled(first)).toBe(false);
    a.take(100); // 500: half
    expect(await settled(first)).toBe(false); // only a settle looks
    budget.settle();
    expect(await settled(first)).toBe(true);
    expect(await settled(second)).toBe(true);
    expect(budget.admitsReply(a, 400)).toBe(true);
    const later = budget.whenRoom(); // a new wait waits for the next settle
    expect(await settled(later)).toBe(false);
    budget.settle();
    expect(await settled(later)).toBe(true);
  });
});
