/**
 * History: +222.8 MiB before e3af31b (the trial that found it, against the packed package: 259.7 MiB of heap for 2 MB
 * charged), when the message reader kept a partial message as a list of views, one per piece (≈ 130 B of heap per
 * one-byte piece); +2.4 MiB since a partial message is copied as it arrives into a buffer of its own.
 *
 * A request sent in one-byte frames. One connection starts a request (`ping`, a byte body of 8 MiB − 64 bytes: under
 * maxMessageBytes, so not refused at once), then sends its body as 2 000 000 PSH frames of one byte each (18 MB on the
 * wire, 2 MB of the message), never completing it. It stays, sending a keep-alive NOP every 500 ms, until the attack's
 * 4 s are up. Targets: the server holds ≤ 32 MiB for it (the bytes count against the per-connection budget, the memory
 * behind them must stay near them); the other client keeps ≥ 50 % of its calls/s with no error and no gap ≥ 1 s; the
 * memory comes back within 2 MiB once the attacker left.
 */
import { expect, test } from '@jest/globals';
import { Cmd } from '../../../lib/smux/constants.js';
import { missedTargets, request, runAttack, summary } from '../../helpers/attack-harness.js';
import { encodeFrame } from '../../helpers/frames.js';

const DECLARED = 8 * 1024 * 1024 - 64;
const FRAMES = 2_000_000;
const FRAMES_PER_WRITE = 10_000;

test('a request sent in one-byte frames pins ≤ 32 MiB, and the other client keeps its pace', async () => {
  const figures = await runAttack({
    name: 'one-byte-frames',
    attackMs: 4_000,
    async attack(ctx) {
      const peer = await ctx.connect();
      const [head] = request('ping', Buffer.alloc(DECLARED)); // the prefix and fields; the body is sent byte by byte
      const call = peer.open(head);
      const batch = Buffer.concat(Array.from({ length: FRAMES_PER_WRITE }, () => encodeFrame(2, Cmd.PSH, call.id, Buffer.alloc(1))));
      let frames = 0;
      if (await peer.write(call.frames, ctx.deadline)) {
        for (; frames < FRAMES && Date.now() < ctx.deadline; frames += FRAMES_PER_WRITE) {
          if (!(await peer.write(batch, ctx.deadline))) break;
        }
      }
      const processed = await peer.ping(); // frames are processed in order: its answer means all of them were
      await peer.holdUntil(ctx.deadline - 1_500);
      await ctx.sample();
      await peer.holdUntil(ctx.deadline);
      ctx.note('one-byte frames sent', frames);
      ctx.note('processed', typeof processed !== 'string');
      ctx.note('cut off', peer.cutOff);
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
  expect(figures.notes).toMatchObject({ 'one-byte frames sent': FRAMES, processed: true });
}, 120_000);
