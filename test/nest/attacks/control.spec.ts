/**
 * The control for the attack suite (issue 9, "Floods and slow peers"): the same harness, but the "attacker" is a
 * polite ClientSmux in the test process — about 500 small calls and 50 replies of 16 KiB a second, every reply read.
 * Every target must hold, with the same margins as the attacks: so a failing attack test is the server's doing, not
 * the harness's or the machine's (its summary line shows this machine's noise).
 */
import { expect, test } from '@jest/globals';
import { firstValueFrom } from 'rxjs';
import { ClientSmux } from '../../../lib/index.js';
import { missedTargets, runAttack, sleep, summary } from '../../helpers/attack-harness.js';

test('control: a polite second client costs the server little, and the other client keeps its pace', async () => {
  let calls = 0;
  let failures = 0;
  const figures = await runAttack({
    name: 'control',
    attackMs: 4_000,
    async attack(ctx) {
      calls = failures = 0;
      const client = new ClientSmux({ host: '127.0.0.1', port: ctx.port });
      try {
        while (Date.now() < ctx.deadline) {
          const batch = [
            ...Array.from({ length: 50 }, (_, i) => firstValueFrom(client.send('ping', i))),
            ...Array.from({ length: 5 }, () => firstValueFrom(client.send('blob', 16 * 1024))),
          ];
          const settled = await Promise.allSettled(batch);
          calls += settled.filter((s) => s.status === 'fulfilled').length;
          failures += settled.filter((s) => s.status === 'rejected').length;
          await sleep(100);
        }
        await ctx.sample();
      } finally {
        await client.close();
      }
      ctx.note('polite calls', calls);
    },
  });
  console.log(summary(figures));
  expect(missedTargets(figures)).toEqual([]);
  expect({ calls: calls > 0, failures }).toEqual({ calls: true, failures: 0 });
}, 120_000);
