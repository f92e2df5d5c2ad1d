/**
 * History: 103 MiB before the budgets; 41 MiB before byte-stream writes respected maxQueuedReplyBytes; 33–34 MiB
 * while a call that was over (its reply refused, the caller never FINing) still held its destroyed Duplex, whose
 * buffers Node keeps (a heap snapshot: 28 MiB of 64 KiB chunks in Duplex buffers and error stacks); ≈ 21.7 MiB
 * since the call lets its input go once its handler returned (test/nest/server-input.spec.ts); 26.8 – 29.6 MiB alone and
 * 33.1 – 35.8 in some runs (one of them in a full `npm test`) once the turn budget let more of the paused streams' windows
 * fill: the budgets held 24 MiB and Node's write buffers of 51 stalled Duplexes 3.25 MiB uncounted (a heap snapshot);
 * 25.9 – 29.1 MiB (under a busy loop on both cores) since a write waiting for the window charges the Duplex's
 * high-water mark to the reply budget, but 34.4 once in a clean-clone CI run (the replies' burst allowance, twice
 * maxQueuedReplyBytes, beside a full pending budget); 23.9 – 25.0 MiB under the busy loop since maxPendingRequestBytes
 * defaults to 12 MiB (was 16).
 *
 * Issue 9, byte-stream variant: a peer that opens raw byte streams and stalls. One connection (its socket never read
 * from) opens 400 byte-stream calls (`echo-raw`: the bytes straight back through pipeline(), paced by its
 * backpressure) and writes 256 KiB of RAW messages into each, round-robin (100 MiB in all; it ignores the stream
 * windows), then stays, sending a keep-alive NOP every 500 ms, until the attack's 4 s are up. Targets: the server
 * holds ≤ 32 MiB for it; the other client keeps ≥ 50 % of its calls/s with no error and no gap ≥ 1 s; the memory
 * comes back within 2 MiB once the attacker left.
 */
import { expect, test } from '@jest/globals';
import { encodeMessage, Flag, Kind } from '../../../lib/nest/call-codec.js';
import { missedTargets, request, runAttack, summary } from '../../helpers/attack-harness.js';

const CALLS = 400;
const CHUNK_BYTES = 64 * 1024;
const CHUNKS_PER_CALL = 4;

test('a peer that opens byte streams and stalls pins ≤ 32 MiB, and the other client keeps its pace', async () => {
  const figures = await runAttack({
    name: 'raw-stall',
    attackMs: 4_000,
    async attack(ctx) {
      const peer = await ctx.connect({ read: false });
      const calls = Array.from({ length: CALLS }, () => peer.open(request('echo-raw', {}, Flag.RAW)));
      let chunks = 0;
      if (
        await peer.write(
          calls.flatMap((call) => call.frames),
          ctx.deadline,
        )
      ) {
        const chunk = Buffer.concat(encodeMessage(Kind.RAW, 0, Buffer.alloc(CHUNK_BYTES)));
        rounds: for (let round = 0; round < CHUNKS_PER_CALL && Date.now() < ctx.deadline; round++) {
          for (const call of calls) {
            if (!(await peer.write(peer.dataFrames(call.id, chunk), ctx.deadline))) break rounds;
            chunks++;
          }
        }
      }
      await peer.holdUntil(ctx.deadline - 1_500);
      await ctx.sample();
      await peer.holdUntil(ctx.deadline);
      ctx.note('MiB of RAW sent', Math.round((chunks * CHUNK_BYTES) / 1024 / 1024));
      ctx.note('cut off', peer.cutOff);
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
}, 120_000);
