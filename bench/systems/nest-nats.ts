/**
 * Nest NATS: the bench's Nest microservice app (nest-app.ts) on Nest's NATS transport (`Transport.NATS`:
 * `ServerNats` and `ClientNats` over `@nats-io/transport-node`, JSON messages, a reply inbox per call), with its
 * defaults, through a nats-server the orchestrator started (broker.ts) on 127.0.0.1:<broker port>.
 *
 *   node nest-nats.js server <broker port>   prints LISTENING <broker port>; PEAK on stdin → peak RSS
 *   node nest-nats.js client <broker port>   benchmark agent (RUN <spec> on stdin → RESULT)
 */
import 'reflect-metadata';
import { ClientProxyFactory, Transport } from '@nestjs/microservices';
import { runAgent } from '../lib/agent.js';
import { hostServer } from '../lib/server-host.js';
import { startBenchApp } from './nest-app.js';
import { NestClientDriver } from './nest-client.js';

const servers = (port: number): string[] => [`nats://127.0.0.1:${port}`];

if (process.argv[2] === 'server') {
  const port = Number(process.argv[3]);
  await startBenchApp({ transport: Transport.NATS, options: { servers: servers(port) } });
  hostServer(port);
} else {
  runAgent((port) => {
    const client = ClientProxyFactory.create({ transport: Transport.NATS, options: { servers: servers(port) } });
    // A Buffer value travels as JSON and arrives as { type: 'Buffer', data: number[] }.
    return new NestClientDriver(client, (item) => (item as { data: number[] }).data.length);
  });
}
