/**
 * Child of test/nest/burst-retention.spec.ts: a Nest app on ServerSmux and a ClientSmux in this process. A burst of
 * events with every stream open at once, then 20 000 echo calls at 64 in flight with a scavenge every 500; prints
 * `{"promotedBytes": n}`, the old generation's growth during the calls. Run with `--expose-gc`.
 */
import 'reflect-metadata';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import type { Server } from 'node:net';
import { getHeapSpaceStatistics } from 'node:v8';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { ClientSmux, ServerSmux } from '../../../../lib/index.js';

const gc = (globalThis as unknown as { gc: (options?: { type: 'minor' | 'major' }) => void }).gc;
const oldSpaceUsed = (): number => getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')?.space_used_size ?? 0;
const BURST = 20_000;
const CALLS = 20_000;
let ticks = 0;

@Controller()
class BurstController {
  @EventPattern<string>('tick') // explicit: Nest 12's typed overload would demand (data, ...args)
  tick(): void {
    ticks++;
  }

  @MessagePattern('echo')
  echo(@Payload() data: unknown): unknown {
    return data;
  }
}

@Module({ controllers: [BurstController] })
class BurstModule {}

const server = new ServerSmux({ host: '127.0.0.1', port: 0, maxCallsPerConnection: BURST });
const app = await NestFactory.createMicroservice(BurstModule, { strategy: server, logger: false });
await app.listen();
const { port } = server.unwrap<Server>().address() as { port: number };
const client = new ClientSmux({ host: '127.0.0.1', port, maxConcurrentCalls: BURST });
await firstValueFrom(client.send('echo', 'warm'));

const sent = Array.from({ length: BURST }, (_, i) => lastValueFrom(client.emit('tick', i), { defaultValue: undefined }));
gc(); // the burst's tables and streams, alive across full GCs, go to the old generation
await Promise.all(sent);
for (let waited = 0; ticks < BURST && waited < 10_000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10));
gc();
gc();

const before = oldSpaceUsed();
let done = 0;
const lane = async (): Promise<void> => {
  while (done < CALLS) {
    await firstValueFrom(client.send('echo', 'x'.repeat(64)));
    if (++done % 500 === 0) gc({ type: 'minor' });
  }
};
await Promise.all(Array.from({ length: 64 }, lane));
process.stdout.write(`${JSON.stringify({ promotedBytes: oldSpaceUsed() - before, ticks })}\n`);
await client.close();
await app.close();
