/**
 * `npm run sample`: a Nest microservice on ServerSmux and a Nest client app using ClientsModule with
 * ClientSmux, over real TCP on 127.0.0.1. Makes each kind of call, prints what came back, exits 0.
 */
import 'reflect-metadata';
import type { AddressInfo, Server } from 'node:net';
import { NestFactory } from '@nestjs/core';
import { ServerSmux } from '../lib/index.js';
import { ClientModule } from './client/client.module.js';
import { MathClient } from './client/math.client.js';
import { AppModule } from './server/app.module.js';

async function main(): Promise<void> {
  // The microservice: every call arrives on its own smux stream.
  const server = new ServerSmux({ host: '127.0.0.1', port: 0 });
  const microservice = await NestFactory.createMicroservice(AppModule, { strategy: server, logger: ['error', 'warn'] });
  await microservice.listen();
  const { port } = server.unwrap<Server>().address() as AddressInfo;

  // The client app: ClientsModule.register({ customClass: ClientSmux }).
  const clientApp = await NestFactory.createApplicationContext(ClientModule.forPort(port), { logger: ['error', 'warn'] });
  const math = clientApp.get(MathClient);

  const sum = await math.sum([1, 2, 3, 4]);
  console.log(`math.sum [1,2,3,4]        → ${sum}`);
  console.log(`math.ticks 3              → ${JSON.stringify(await math.ticks(3))}`);
  await math.notify(sum);
  console.log(`math.computed (event)     → sent (emit resolves once it is on the wire)`);
  console.log(`math.whoami (key ok)      → ${JSON.stringify(await math.whoami('sample-key'))}`);
  const refused = await math.whoami('wrong').catch((error: unknown) => error);
  console.log(`math.whoami (wrong key)   → error ${JSON.stringify(refused)}`);
  const [a, b] = await Promise.all([math.sum([10, 20]), math.sum([30, 40])]);
  console.log(`two calls at once         → ${a}, ${b} (one connection, two streams)`);

  await clientApp.close();
  await microservice.close();
  if (sum !== 10 || a !== 30 || b !== 70) process.exitCode = 1;
}

await main();
