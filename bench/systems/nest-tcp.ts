/**
 * Nest TCP: the bench's Nest microservice app (nest-app.ts) on Nest's built-in TCP transport (`Transport.TCP`:
 * `ServerTCP` and `ClientTCP`, JSON frames on one socket), with its defaults.
 *
 *   node nest-tcp.js server           prints LISTENING <port>; PEAK on stdin → peak RSS
 *   node nest-tcp.js client <port>    benchmark agent (RUN <spec> on stdin → RESULT)
 */
import 'reflect-metadata';
import type { AddressInfo, Server } from 'node:net';
import { ClientProxyFactory, Transport } from '@nestjs/microservices';
import { runAgent } from '../lib/agent.js';
import { hostServer } from '../lib/server-host.js';
import { startBenchApp } from './nest-app.js';
import { NestClientDriver } from './nest-client.js';

if (process.argv[2] === 'server') {
  const app = await startBenchApp({ transport: Transport.TCP, options: { host: '127.0.0.1', port: 0 } });
  hostServer((app.unwrap<Server>().address() as AddressInfo).port);
} else {
  runAgent((port) => {
    // maxSendBufferSize 0 (no cap, as before Nest 12.1.1): this client's emit() resolves before the event is written,
    // so the events case's 5 s burst queues more than the default 128 MB cap in its socket, and the cap closes the
    // connection (bench/README.md, "Systems").
    const client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port, maxSendBufferSize: 0 } });
    // A Buffer value travels as JSON and arrives as { type: 'Buffer', data: number[] }.
    return new NestClientDriver(client, (item) => (item as { data: number[] }).data.length);
  });
}
