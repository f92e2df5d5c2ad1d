/**
 * The event loop's share of pulled items, fair between connections (lib/nest/pull-turns.ts). A hostile-peer trial
 * found the budget of PULLS_PER_TURN items per turn shared as one free-for-all: a connection with a thousand
 * pulled replies took nearly all of every turn, and another connection's streamed reply got one item in four turns.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { PULLS_PER_TURN, pullTurns } from '../../lib/nest/pull-turns.js';
import { pullSource } from '../../lib/nest/sources.js';
import { counting, roomyEndpoint } from '../helpers/pulls.js';
import { closeAll, startApp, within } from './helpers.js';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** `pulls` pulls of an endless source on one connection, counting the items each connection's pulls wrote. */
function connection(pulls: number, live: () => boolean) {
  const session = {};
  const state = { written: 0, outcomes: [] as Promise<unknown>[] };
  for (let i = 0; i < pulls; i++) {
    state.outcomes.push(
      pullSource(
        roomyEndpoint(session),
        counting(1e9),
        () => void state.written++,
        live,
        () => undefined,
      ),
    );
  }
  return state;
}

/**
 * `pulls` pulls on one connection that take endless items straight from the turns, pull `i` giving them `live(i)`
 * (admit's second argument, the pull's own `live()`): counts the items taken and the pulls that returned.
 */
function admitting(pulls: number, live: (i: number) => boolean) {
  const owner = {};
  const state = { taken: 0, returned: 0, outcomes: [] as Promise<void>[] };
  const pull = async (isLive: () => boolean): Promise<void> => {
    for (;;) {
      const turn = pullTurns.admit(owner, isLive);
      if (turn !== null) await turn;
      if (!isLive()) break;
      state.taken++;
      await Promise.resolve(); // the next item comes on a microtask, as a generator yields it
    }
    state.returned++;
  };
  for (let i = 0; i < pulls; i++) state.outcomes.push(pull(() => live(i)));
  return state;
}

describe('pull turns (unit: pullSource on connections that always have room)', () => {
  test('a connection with one pull beside one with a thousand gets an equal share of each turn', async () => {
    let live = true;
    const crowd = connection(1_000, () => live);
    const single = connection(1, () => live);
    for (let i = 0; i < 5; i++) await turn(); // past the first turn, which the crowd reached first
    const [crowdBefore, singleBefore] = [crowd.written, single.written];
    for (let i = 0; i < 10; i++) await turn();
    const crowdGot = crowd.written - crowdBefore;
    const singleGot = single.written - singleBefore;
    // Half of 256 per turn each (a turn's edges may fall either side of the test's own setImmediate). The single
    // free-for-all gave the one pull ≈ 256 / 1001 of each turn: ≈ 2.6 items in 10 turns.
    expect(singleGot).toBeGreaterThanOrEqual(10 * (PULLS_PER_TURN / 2) * 0.7);
    expect(crowdGot).toBeLessThanOrEqual(11 * PULLS_PER_TURN);
    expect(singleGot + crowdGot).toBeLessThanOrEqual(11 * PULLS_PER_TURN);
    live = false;
    await Promise.all([...crowd.outcomes, ...single.outcomes]);
  });

  test('one connection alone takes the whole budget of each turn, as before', async () => {
    let live = true;
    const alone = connection(8, () => live);
    for (let i = 0; i < 3; i++) await turn();
    const before = alone.written;
    for (let i = 0; i < 10; i++) await turn();
    const got = alone.written - before;
    expect(got).toBeGreaterThanOrEqual(9 * PULLS_PER_TURN);
    expect(got).toBeLessThanOrEqual(11 * PULLS_PER_TURN);
    live = false;
    await Promise.all(alone.outcomes);
  });

  test('more connections than the budget has items: each is served within two turns, the unserved first', async () => {
    let live = true;
    const many = Array.from({ length: PULLS_PER_TURN + 44 }, () => connection(1, () => live));
    for (let i = 0; i < 3; i++) await turn();
    for (let round = 0; round < 5; round++) {
      const before = many.map((c) => c.written);
      let total = 0;
      await turn();
      await turn();
      for (const [i, c] of many.entries()) {
        expect(c.written - before[i]).toBeGreaterThanOrEqual(1);
        total += c.written - before[i];
      }
      expect(total).toBeLessThanOrEqual(3 * PULLS_PER_TURN);
    }
    live = false;
    await Promise.all(many.flatMap((c) => c.outcomes));
  });
});

describe('pull turns (unit: stopped pulls, taking items straight from the turns)', () => {
  test('connections gone with pulls queued take no share: the one left gets the whole budget the very next turn', async () => {
    let gone = false;
    let live = true;
    const stayer = admitting(50, () => live);
    const leavers = Array.from({ length: 9 }, () => admitting(50, () => live && !gone));
    for (let i = 0; i < 3; i++) await turn();
    let before = stayer.taken;
    await turn();
    expect(stayer.taken - before).toBe(Math.ceil(PULLS_PER_TURN / 10)); // a tenth of each turn, 26 items
    // The nine others go away: their 450 pulls, all waiting in their connections' queues, are stopped.
    gone = true;
    const leaversTaken = leavers.map((c) => c.taken);
    for (let t = 0; t < 3; t++) {
      before = stayer.taken;
      await turn();
      // Before, the gone connections' pulls kept their shares while they returned: the one left got 26 items in each
      // of the next two turns, then 128.
      expect(stayer.taken - before).toBe(PULLS_PER_TURN);
      expect(leavers.map((c) => c.returned)).toEqual(leavers.map(() => 50));
      expect(leavers.map((c) => c.taken)).toEqual(leaversTaken);
    }
    live = false;
    await Promise.all([...stayer.outcomes, ...leavers.flatMap((c) => c.outcomes)]);
  });

  test('stopped pulls take no slot of their connection: its live pull behind 999 stopped ones has its share the next turn', async () => {
    let stopped = false;
    let live = true;
    const crowd = admitting(1_000, (i) => live && (i === 999 || !stopped));
    const other = admitting(1, () => live);
    for (let i = 0; i < 3; i++) await turn();
    stopped = true; // 999 of the crowd's pulls, all waiting in its queue, are cancelled
    const [crowdBefore, otherBefore] = [crowd.taken, other.taken];
    await turn();
    // Half of the turn each, and the 999 returned. Before, they took the crowd's half of the next 8 turns (128 a
    // turn), and its live pull got nothing while they did.
    expect(crowd.returned).toBe(999);
    expect(crowd.taken - crowdBefore).toBe(PULLS_PER_TURN / 2);
    expect(other.taken - otherBefore).toBe(PULLS_PER_TURN / 2);
    live = false;
    await Promise.all([...crowd.outcomes, ...other.outcomes]);
  });
});

@Controller()
class CountingController {
  @MessagePattern('count')
  async *count(@Payload() n: number) {
    for (let i = 0; i < n; i++) yield i;
  }
}

describe('pull turns (a Nest app, two clients)', () => {
  afterAll(closeAll);

  test("one client's long streamed reply is not held behind another client's 300 streamed replies", async () => {
    const handle = await startApp({ controllers: [CountingController] });
    const crowd = handle.client();
    const single = handle.client();
    await Promise.all([crowd.connect(), single.connect()]);
    let crowdReceived = 0;
    const crowdCalls = Array.from(
      { length: 300 },
      () =>
        new Promise<void>((resolve, reject) => {
          crowd.send<number>('count', 1_000).subscribe({ next: () => void crowdReceived++, complete: resolve, error: reject });
        }),
    );
    let singleReceived = 0;
    const singleCall = new Promise<number>((resolve, reject) => {
      single
        .send<number>('count', 3_000)
        .subscribe({ next: () => void singleReceived++, complete: () => resolve(crowdReceived), error: reject });
    });
    const crowdAtTheEnd = await within(singleCall, 'the single call', 30_000);
    expect(singleReceived).toBe(3_000);
    // Fair turns: the single reply takes half of each turn and ends while the crowd has a small part of its 300 000
    // items. One free-for-all gave it 1/301 of each turn: it ended after the crowd's calls (all 300 000).
    expect(crowdAtTheEnd).toBeLessThan(150_000);
    await within(Promise.all(crowdCalls), 'the crowd', 60_000);
    expect(crowdReceived).toBe(300_000);
  }, 90_000);
});
