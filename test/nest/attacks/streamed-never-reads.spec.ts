/**
 * Issue 9, streaming variant of found 2: a peer that streams a request and never reads. One connection (its socket
 * never read from) starts 16 bidirectional streamed calls (`echo-stream`: each item straight back) and streams
 * 8 MiB of 64 KiB items into each, round-robin (128 MiB in all, every item echoed into a reply it never takes),
 * then stays, sending a keep-alive NOP every 500 ms, until the attack's 4 s are up. Targets: the server holds
 * ≤ 32 MiB for it (streamed input and queued replies count against the per-connection budgets); the other client
 * keeps ≥ 50 % of its calls/s with no error and no gap ≥ 1 s; the memory comes back within 2 MiB once the attacker
 * left.
 */
import { expect, test } from '@jest/globals';
import { encodeMessage, Flag, Kind } from '../../../lib/nest/call-codec.js';
import { missedTargets, request, runAttack, summary } from '../../helpers/attack-harness.js';

const CALLS = 16;
const ITEM_BYTES = 64 * 1024;
const ITEMS_PER_CALL = 128;

test('a peer that streams a request and never reads pins ≤ 32 MiB, and the other client keeps its pace', async () => {
  const figures = await runAttack({
    name: 'streamed-never-reads',
    attackMs: 4_000,
    async attack(ctx) {
      const peer = await ctx.connect({ read: false });
      const calls = Array.from({ length: CALLS }, () => peer.open(request('echo-stream', undefined, Flag.STREAM)));
      let items = 0;
      if (
        await peer.write(
          calls.flatMap((call) => call.frames),
          ctx.deadline,
        )
      ) {
        const item = Buffer.concat(encodeMessage(Kind.DATA, 0, Buffer.alloc(ITEM_BYTES)));
        rounds: for (let round = 0; round < ITEMS_PER_CALL && Date.now() < ctx.deadline; round++) {
          for (const call of calls) {
            if (!(await peer.write(peer.dataFrames(call.id, item), ctx.deadline))) break rounds;
            items++;
          }
        }
      }
      await peer.holdUntil(ctx.deadline - 1_500);
      await ctx.sample();
      await peer.holdUntil(ctx.deadline);
      ctx.note('MiB of items sent', Math.round((items * ITEM_BYTES) / 1024 / 1024));
      ctx.note('cut off', peer.cutOff);
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
}, 120_000);
