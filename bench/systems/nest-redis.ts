/**
 * Nest Redis: the bench's Nest microservice app (nest-app.ts) on Nest's Redis transport (`Transport.REDIS`:
 * `ServerRedis` and `ClientRedis` over `ioredis`, JSON messages on pub/sub channels, replies on `<pattern>.reply`),
 * with its defaults, through a redis-server the orchestrator started (broker.ts) on 127.0.0.1:<broker port>.
 *
 *   node nest-redis.js server <broker port>   prints LISTENING <broker port>; PEAK on stdin → peak RSS
 *   node nest-redis.js client <broker port>   benchmark agent (RUN <spec> on stdin → RESULT)
 */
import 'reflect-metadata';
import { ClientProxyFactory, Transport } from '@nestjs/microservices';
import { runAgent } from '../lib/agent.js';
import { hostServer } from '../lib/server-host.js';
import { startBenchApp } from './nest-app.js';
import { NestClientDriver } from './nest-client.js';

if (process.argv[2] === 'server') {
  const port = Number(process.argv[3]);
  await startBenchApp({ transport: Transport.REDIS, options: { host: '127.0.0.1', port } });
  hostServer(port);
} else {
  runAgent((port) => {
    const client = ClientProxyFactory.create({ transport: Transport.REDIS, options: { host: '127.0.0.1', port } });
    // A Buffer value travels as JSON and arrives as { type: 'Buffer', data: number[] }.
    return new NestClientDriver(client, (item) => (item as { data: number[] }).data.length);
  });
}
