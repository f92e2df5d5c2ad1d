/**
 * Issue 9, found 1: a SYN flood — bare SYNs (8 bytes each, no data, never closed), 200 000 streams a connection.
 * The first connection sends them 10 000 at a time, each batch followed by a `ping` round trip (so the server has
 * processed it) and a sample of the server's memory; then, until the attack's 4 s are up, new connections flood
 * again as fast as their sockets take it (one new connection at most every 50 ms: a SYN flood, not a connection
 * flood). Targets: the flood is cut off — the server closes the first connection before its 200 000 streams —
 * with ≤ 16 MiB of server memory; the other client keeps ≥ 50 % of its calls/s with no error and no gap ≥ 1 s; the
 * memory comes back within 2 MiB once the attacker left.
 */
import { expect, test } from '@jest/globals';
import { type AttackPeer, missedTargets, runAttack, sleep, summary, TARGETS } from '../../helpers/attack-harness.js';

const STREAMS = 200_000;
const PROBED_BATCH = 10_000;
const BATCH = 25_000;
const RECONNECT_MS = 50;

test('a SYN flood of 200 000 streams is cut off with ≤ 16 MiB, and the other client keeps its pace', async () => {
  let first: { processed: number; cutOff: boolean } = { processed: 0, cutOff: false };
  const figures = await runAttack({
    name: 'syn-flood',
    attackMs: 4_000,
    memoryTargetMiB: TARGETS.synFloodMiB,
    async attack(ctx) {
      const flood = async (peer: AttackPeer, batch: number, probe: boolean): Promise<number> => {
        let processed = 0;
        for (let sent = 0; sent < STREAMS && !peer.closed && Date.now() < ctx.deadline;) {
          if (!(await peer.write(peer.synFrames(batch), ctx.deadline))) break;
          sent += batch;
          if (!probe) continue;
          if (typeof (await peer.ping()) === 'string') break; // closed: cut off (or no answer in 10 s)
          processed = sent;
          await ctx.sample();
        }
        return processed;
      };
      const peer = await ctx.connect();
      const processed = await flood(peer, PROBED_BATCH, true);
      first = { processed, cutOff: peer.cutOff || (await peer.whenClosed(1_000)) };
      let connections = 1;
      let cutOff = first.cutOff ? 1 : 0;
      while (Date.now() < ctx.deadline) {
        const started = Date.now();
        const again = await ctx.connect();
        connections++;
        await flood(again, BATCH, false);
        if (again.cutOff || (await again.whenClosed(100))) cutOff++;
        await sleep(RECONNECT_MS - (Date.now() - started));
      }
      ctx.note('streams processed before the cut', processed);
      ctx.note('connections cut off', `${cutOff}/${connections}`);
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
  expect(first).toEqual({ processed: expect.any(Number), cutOff: true });
  expect(first.processed).toBeLessThan(STREAMS);
}, 120_000);
