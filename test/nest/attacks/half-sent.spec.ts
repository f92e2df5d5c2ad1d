/**
 * Issue 9, found 3: half-sent requests. One connection starts 32 requests that each declare a 60 MiB message and
 * sends 4 MiB of each (128 MiB in all), and 2 000 small ones that declare 1 KiB and send 100 bytes; none is ever
 * completed. It stays, sending a keep-alive NOP every 500 ms, until the attack's 4 s are up. Targets: the server
 * holds ≤ 32 MiB for it (requests being received count against a per-connection budget); the other client keeps
 * ≥ 50 % of its calls/s with no error and no gap ≥ 1 s; the memory comes back within 2 MiB once the attacker left.
 */
import { expect, test } from '@jest/globals';
import { Encoding, Flag, Kind, PREFIX_SIZE } from '../../../lib/nest/call-codec.js';
import { missedTargets, runAttack, summary } from '../../helpers/attack-harness.js';

const MiB = 1024 * 1024;
const LARGE = { count: 32, declared: 60 * MiB, sent: 4 * MiB };
const SMALL = { count: 2_000, declared: 1024, sent: 100 };

/** The first `sent` bytes of a REQUEST (`ping`, a byte body) whose prefix declares `declared` bytes. */
function partialRequest(declared: number, sent: number): Buffer {
  const pattern = 'ping';
  const bytes = Buffer.alloc(sent);
  bytes[0] = Kind.REQUEST;
  bytes[1] = Encoding.BYTES;
  bytes.writeUInt16LE(Flag.PATTERN, 2);
  bytes.writeUInt32LE(declared, 4);
  bytes.writeUInt16LE(pattern.length, PREFIX_SIZE);
  bytes.write(pattern, PREFIX_SIZE + 2);
  return bytes;
}

test('half-sent requests pin ≤ 32 MiB, and the other client keeps its pace', async () => {
  const figures = await runAttack({
    name: 'half-sent',
    attackMs: 4_000,
    async attack(ctx) {
      const peer = await ctx.connect();
      let large = 0;
      let small = 0;
      const head = partialRequest(LARGE.declared, PREFIX_SIZE + 6);
      const filler = Buffer.alloc(LARGE.sent - head.length);
      for (; large < LARGE.count && Date.now() < ctx.deadline; large++) {
        if (!(await peer.write(peer.open([head, filler]).frames, ctx.deadline))) break;
      }
      const start = partialRequest(SMALL.declared, SMALL.sent);
      for (; small < SMALL.count && Date.now() < ctx.deadline; small += 100) {
        const frames = Array.from({ length: 100 }, () => peer.open(start).frames).flat();
        if (!(await peer.write(frames, ctx.deadline))) break;
      }
      await peer.holdUntil(ctx.deadline - 1_500);
      await ctx.sample();
      await peer.holdUntil(ctx.deadline);
      ctx.note('large requests started', large);
      ctx.note('small requests started', small);
      ctx.note('MiB sent', Math.round(peer.bytesOut / MiB));
      ctx.note('cut off', peer.cutOff);
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
}, 120_000);
