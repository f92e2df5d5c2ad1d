/**
 * History: +145.1 MiB and the other client at 1 % of its calls/s (54 202 → 297) before maxEventsPerConnection, when every
 * event started its handler as it arrived (154 368 events sent in 4 s); +4.2 MiB and 93 % with it (7 936 sent: the
 * sender is slowed to the handlers' pace). Events of 256 KiB: see the second test's history.
 *
 * Events faster than their handler. One connection sends EVENTs for `slow-event` (a 1 KiB body each; the handler
 * takes 1 s, as a slow database write would) as fast as its socket takes them, for the attack's 4 s. An event holds no
 * call slot — its stream closes as it arrives — so without a bound every event starts its handler at once and each
 * pending handler keeps its data, its context and Nest's promises alive. Targets: the server holds ≤ 32 MiB for it;
 * the other client keeps ≥ 50 % of its calls/s with no error and no gap ≥ 1 s; the memory comes back within 2 MiB once
 * the attacker left; and the events are not lost — every one the server read has run its handler or will.
 */
import { expect, test } from '@jest/globals';
import { encodeMessage, Kind } from '../../../lib/nest/call-codec.js';
import { missedTargets, runAttack, sleep, summary } from '../../helpers/attack-harness.js';

const KiB = 1024;

/**
 * Floods `slow-event` with EVENTs of `bodyBytes`, `perWrite` to a socket write, as fast as the socket takes them for
 * the attack's 4 s, and checks the targets (and that the handlers did run).
 */
async function eventFlood(name: string, bodyBytes: number, perWrite: number): Promise<void> {
  const figures = await runAttack({
    name,
    attackMs: 4_000,
    async attack(ctx) {
      const peer = await ctx.connect();
      const event = Buffer.concat(encodeMessage(Kind.EVENT, 0, 'x'.repeat(bodyBytes), { pattern: 'slow-event' }));
      let sent = 0;
      while (Date.now() < ctx.deadline) {
        const frames: Buffer[] = [];
        for (let i = 0; i < perWrite; i++) frames.push(...peer.open(event).frames);
        if (!(await peer.write(frames, ctx.deadline))) break;
        sent += perWrite;
        await sleep(0);
      }
      await ctx.sample();
      ctx.note('events sent', sent);
      ctx.note('cut off', peer.cutOff);
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
  expect(figures.held.slowEvents).toBeGreaterThan(0);
}

test(
  'events faster than their handler pin ≤ 32 MiB, and the other client keeps its pace',
  () => eventFlood('event-flood', KiB, 256),
  120_000,
);

/**
 * History: +155.5 MiB and the other client at 2 % (29 691 → 717 calls/s) while only the number of event handlers was
 * bounded (1 000 × 256 KiB); +16.4 MiB and 84 % since their events' bytes are held to maxPendingRequestBytes too
 * (+12.2 MiB since that defaults to 12 MiB).
 */
test(
  'large events faster than their handler pin ≤ 32 MiB: their bytes count too, not only their number',
  () => eventFlood('event-flood-large', 256 * KiB, 1),
  120_000,
);
