/**
 * Child of test/nest/shutdown-alive.spec.ts: a Nest app on ServerSmux whose event handler never settles, with one
 * connection held at `maxEventsPerConnection` (1), its client gone, and nothing else alive in the process. Prints
 * `closing`, then `closed` after `await app.close()` — a close bounded only by unref'd timers let the process exit
 * in between (found by a new-user trial: the code after `await app.close()` never ran, and the exit status was 0).
 */
import 'reflect-metadata';
import type { Server } from 'node:net';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { EventPattern } from '@nestjs/microservices';
import { lastValueFrom } from 'rxjs';
import { ClientSmux, ServerSmux } from '../../../../lib/index.js';

let started = 0;

@Controller()
class StuckController {
  @EventPattern<string>('stuck') // explicit: Nest 12's typed overload would demand (data, ...args)
  async stuck(): Promise<void> {
    started++;
    await new Promise<never>(() => undefined); // never settles, and holds no handle
  }
}

@Module({ controllers: [StuckController] })
class StuckModule {}

const server = new ServerSmux({ host: '127.0.0.1', port: 0, maxEventsPerConnection: 1, closeTimeout: 300 });
const app = await NestFactory.createMicroservice(StuckModule, { strategy: server, logger: false });
await app.listen();
const { port } = server.unwrap<Server>().address() as { port: number };
const client = new ClientSmux({ host: '127.0.0.1', port });
for (let i = 0; i < 3; i++) await lastValueFrom(client.emit('stuck', i), { defaultValue: undefined });
while (started === 0) await new Promise((resolve) => setTimeout(resolve, 5));
await client.close();
console.log('closing');
await app.close();
console.log('closed');
