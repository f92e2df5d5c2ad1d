/**
 * nestjs-smux: the bench's Nest microservice app (nest-app.ts) on `ServerSmux`, called through `ClientSmux`,
 * both with their defaults (smux protocol v2, one stream per call).
 *
 *   node smux.js server           prints LISTENING <port>; PEAK on stdin → peak RSS
 *   node smux.js client <port>    benchmark agent (RUN <spec> on stdin → RESULT)
 */
import 'reflect-metadata';
import type { AddressInfo, Server } from 'node:net';
import { ClientProxyFactory } from '@nestjs/microservices';
import { ClientSmux, ServerSmux } from '../../lib/index.js';
import { runAgent } from '../lib/agent.js';
import { hostServer } from '../lib/server-host.js';
import { startBenchApp } from './nest-app.js';
import { NestClientDriver } from './nest-client.js';

if (process.argv[2] === 'server') {
  const strategy = new ServerSmux({ host: '127.0.0.1', port: 0 });
  await startBenchApp({ strategy });
  hostServer((strategy.unwrap<Server>().address() as AddressInfo).port);
} else {
  runAgent((port) => {
    const client = ClientProxyFactory.create({ customClass: ClientSmux, options: { host: '127.0.0.1', port } });
    return new NestClientDriver(client, (item) => (item as Buffer).length); // Buffers arrive as Buffers
  });
}
