/**
 * History: +172.1 MiB before e3af31b (the trial that found it, against the packed package: 171.9 MiB of ArrayBuffers
 * pinned for 3 000 bytes charged), when a partial message was kept as views of the reads its pieces came in (a one-byte
 * view keeps its whole 64 KiB read alive); −0.1 MiB since a partial message is copied as it arrives into a buffer of
 * its own.
 *
 * Reads pinned by small views. One connection starts a request (`ping`, a byte body of 8 MiB − 64 bytes) and a client
 * stream (`count-stream`: its handler takes every item), then sends 3 000 units of a 60 000-byte item for the client
 * stream and one byte of the request (≈ 172 MiB, so that almost every socket read the server makes holds one byte of
 * the request beside data that is consumed), pausing after every 16 units. It stays, sending a keep-alive NOP every
 * 500 ms, until the attack's 4 s are up. Targets: the server holds ≤ 32 MiB for it (3 000 bytes count against the
 * per-connection budget, the reads they came in must not stay behind them); the other client keeps ≥ 50 % of its
 * calls/s with no error and no gap ≥ 1 s; the memory comes back within 2 MiB once the attacker left.
 */
import { expect, test } from '@jest/globals';
import { encodeMessage, Flag, Kind } from '../../../lib/nest/call-codec.js';
import { Cmd } from '../../../lib/smux/constants.js';
import { missedTargets, request, runAttack, sleep, summary } from '../../helpers/attack-harness.js';
import { encodeFrame } from '../../helpers/frames.js';

const MiB = 1024 * 1024;
const DECLARED = 8 * MiB - 64;
const ITEM_BYTES = 60_000;
const UNITS = 3_000;
const UNITS_PER_WRITE = 16;

test('one byte of a partial request per read beside consumed data pins ≤ 32 MiB, and the other client keeps its pace', async () => {
  const figures = await runAttack({
    name: 'read-pinning',
    attackMs: 4_000,
    async attack(ctx) {
      const peer = await ctx.connect();
      const [head] = request('ping', Buffer.alloc(DECLARED)); // the prefix and fields; the body is sent byte by byte
      const partial = peer.open(head);
      const consumed = peer.open(request('count-stream', undefined, Flag.STREAM));
      const item = Buffer.concat(encodeMessage(Kind.DATA, 0, Buffer.alloc(ITEM_BYTES - 8)));
      const unit = Buffer.concat([...peer.dataFrames(consumed.id, item), encodeFrame(2, Cmd.PSH, partial.id, Buffer.alloc(1))]);
      const units = Array.from({ length: UNITS_PER_WRITE }, () => unit);
      let sent = 0;
      if (await peer.write([...partial.frames, ...consumed.frames], ctx.deadline)) {
        while (sent < UNITS && Date.now() < ctx.deadline) {
          const n = Math.min(UNITS_PER_WRITE, UNITS - sent);
          if (!(await peer.write(units.slice(0, n), ctx.deadline))) break;
          sent += n;
          await sleep(1);
        }
      }
      const processed = await peer.ping(); // frames are processed in order: its answer means all of them were
      await peer.holdUntil(ctx.deadline - 1_500);
      await ctx.sample();
      await peer.holdUntil(ctx.deadline);
      ctx.note('units sent', sent);
      ctx.note('MiB sent', Math.round(peer.bytesOut / MiB));
      ctx.note('processed', typeof processed !== 'string');
      ctx.note('cut off', peer.cutOff);
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
  expect(figures.notes).toMatchObject({ 'units sent': UNITS, processed: true });
}, 120_000);
