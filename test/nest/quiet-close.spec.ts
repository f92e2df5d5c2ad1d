import { afterAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { closeAll, logLines, startApp } from './helpers.js';

@Controller()
class CountController {
  @EventPattern('count')
  count(@Payload() _n: number): void {}

  @MessagePattern('echo')
  echo(@Payload() data: unknown): unknown {
    return data;
  }
}

afterAll(closeAll);

describe('a client that leaves at once', () => {
  // The app may close before it handled the event (at most once); what matters is that nothing is logged as lost.
  test('closing the client and the app in the tick of a last emit() logs no warning (a routine leave)', async () => {
    for (let round = 0; round < 5; round++) {
      const app = await startApp({ controllers: [CountController] });
      const client = app.client();
      await firstValueFrom(client.send('echo', 1));
      logLines.length = 0;
      await lastValueFrom(client.emit('count', round), { defaultValue: undefined });
      await client.close();
      await app.close();
      const warnings = logLines.filter((line) => line.level === 'warn' || line.level === 'error');
      expect(warnings).toEqual([]);
    }
  });
});
