/**
 * Issue 9, found 4 (and 6): idle connections taking every connection slot. The attacker opens 1 024 connections
 * (the default `maxConnections`) that never make a call and only send a keep-alive NOP every second. Once they have
 * been idle for the server's `evictIdleAfter` (1 s here, so that the test stays short; the default is 10 s), the
 * measuring child starts a new client every 300 ms (connect, one call, close) and the attacker opens 256 more
 * connections that each say HELLO as a ClientSmux does. Targets: new clients are served although idle connections
 * hold the slots; every connection the server refuses is told so — `ERR_SMUX_LIMIT` on its HELLO — never a bare
 * close or silence; the server holds ≤ 32 MiB for all 1 280 connections (an idle one costs ≤ 16 KiB); the other
 * client keeps ≥ 50 % of its calls/s with no error and no gap ≥ 1 s; the memory comes back within 2 MiB once the
 * attacker left.
 */
import { expect, test } from '@jest/globals';
import { type AttackPeer, missedTargets, runAttack, sleep, summary } from '../../helpers/attack-harness.js';

const IDLE = 1_024;
const HELLOS = 256;
const EVICT_IDLE_AFTER = 1_000;
const NEW_CLIENT_EVERY_MS = 300;

test('idle connections cannot keep new clients out, refused ones get ERR_SMUX_LIMIT, and the other client keeps its pace', async () => {
  let answers: Record<string, number> = {};
  const figures = await runAttack({
    name: 'idle-slots',
    attackMs: 5_000,
    server: { evictIdleAfter: EVICT_IDLE_AFTER },
    async attack(ctx) {
      answers = {};
      const idle: AttackPeer[] = [];
      for (let i = 0; i < IDLE; i += 64) {
        const peers = await Promise.all(Array.from({ length: Math.min(64, IDLE - i) }, () => ctx.connect()));
        for (const peer of peers) void peer.write(peer.nop());
        idle.push(...peers);
      }
      const hold = Promise.all(idle.map((peer) => peer.holdUntil(ctx.deadline, 1_000)));
      await sleep(EVICT_IDLE_AFTER + 200);
      await ctx.sample();
      await ctx.newClients(NEW_CLIENT_EVERY_MS);
      for (let i = 0; i < HELLOS; i += 32) {
        const said = await Promise.all(Array.from({ length: Math.min(32, HELLOS - i) }, async () => (await ctx.connect()).hello(5_000)));
        for (const answer of said) answers[answer] = (answers[answer] ?? 0) + 1;
      }
      await hold;
      ctx.note('idle connections closed by the server', idle.filter((peer) => peer.cutOff).length);
      ctx.note('HELLO answers', JSON.stringify(answers));
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
  expect(figures.during.newClients.ok).toBeGreaterThan(0);
  expect({ ...answers, hello: 0, ERR_SMUX_LIMIT: 0 }).toEqual({ hello: 0, ERR_SMUX_LIMIT: 0 }); // no bare close, no silence
}, 120_000);
