/**
 * Issue 9, found 2: a peer that never reads its replies. One connection (its socket never read from) asks for
 * 1 000 plain-value replies of 256 KiB each (`blob`, a 40-byte request each, 100 at a time) — 250 MiB of replies
 * it will never take — then stays, sending a keep-alive NOP every 500 ms, until the attack's 4 s are up.
 * Targets: the server holds ≤ 32 MiB for it (replies of every kind count against a per-connection budget); the
 * other client keeps ≥ 50 % of its calls/s with no error and no gap ≥ 1 s; the memory comes back within 2 MiB
 * once the attacker left.
 */
import { expect, test } from '@jest/globals';
import { missedTargets, request, runAttack, summary } from '../../helpers/attack-harness.js';

const CALLS = 1_000;
const BATCH = 100;
const REPLY_BYTES = 256 * 1024;

test('a peer that never reads its replies pins ≤ 32 MiB, and the other client keeps its pace', async () => {
  const figures = await runAttack({
    name: 'never-reads',
    attackMs: 4_000,
    async attack(ctx) {
      const peer = await ctx.connect({ read: false });
      let sent = 0;
      while (sent < CALLS && Date.now() < ctx.deadline) {
        const frames = Array.from({ length: BATCH }, () => peer.open(request('blob', REPLY_BYTES)).frames).flat();
        if (!(await peer.write(frames, ctx.deadline))) break;
        sent += BATCH;
      }
      await peer.holdUntil(ctx.deadline - 1_500);
      await ctx.sample();
      await peer.holdUntil(ctx.deadline);
      ctx.note('requests sent', sent);
      ctx.note('cut off', peer.cutOff);
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
}, 120_000);
