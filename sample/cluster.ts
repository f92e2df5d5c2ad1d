/**
 * `npm run sample:cluster`: Node `cluster` with 2 workers sharing one port, each a Nest microservice on ServerSmux;
 * the primary runs a Nest client app whose ClientSmux opens 2 connections to that one address
 * (`connectionsPerAddress: 2`). The cluster's primary hands new connections to its workers in turn, so each worker
 * gets one, and every call goes to the connection with fewer calls in flight of two — both workers answer about
 * half. Prints the connections and what each worker answered; exits 0, or 1 when a worker got no share.
 */
import 'reflect-metadata';
import cluster, { type Worker } from 'node:cluster';
import { once } from 'node:events';
import net from 'node:net';
import { Controller, type DynamicModule, Inject, Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ClientsModule, MessagePattern } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { type ClientSmux, ServerSmux, smuxClient } from '../lib/index.js';

const WORKERS = 'WORKERS';
const CALLS = 1_000;

// ── a worker: the microservice ────────────────────────────────────────────────────────────────────────────

@Controller()
class WorkerController {
  @MessagePattern('worker.whoami')
  whoami(): { worker: number; pid: number } {
    return { worker: cluster.worker?.id ?? 0, pid: process.pid };
  }
}

@Module({ controllers: [WorkerController] })
class WorkerModule {}

async function runWorker(port: number): Promise<void> {
  // Every worker listens on the same port: the primary owns the socket and deals the connections out.
  const app = await NestFactory.createMicroservice(WorkerModule, {
    strategy: new ServerSmux({ host: '127.0.0.1', port }),
    logger: ['error', 'warn'],
  });
  await app.listen();
  process.send?.('listening');
  process.once('disconnect', () => void app.close());
}

// ── the primary: a client app ─────────────────────────────────────────────────────────────────────────────

/** What the client app needs from the workers. */
@Injectable()
class WorkersClient {
  constructor(@Inject(WORKERS) readonly client: ClientSmux) {}

  whoami(): Promise<{ worker: number; pid: number }> {
    return firstValueFrom(this.client.send<{ worker: number; pid: number }>('worker.whoami', {}));
  }
}

@Module({})
class ClusterClientModule {
  static forPort(port: number): DynamicModule {
    return {
      module: ClusterClientModule,
      // One address, two connections: one to each worker behind it.
      imports: [ClientsModule.register([smuxClient({ name: WORKERS, options: { host: '127.0.0.1', port, connectionsPerAddress: 2 } })])],
      providers: [WorkersClient],
    };
  }
}

async function runPrimary(): Promise<void> {
  cluster.schedulingPolicy = cluster.SCHED_RR; // the primary deals connections in turn (Linux's default; not Windows')
  const port = await freePort();
  const workers: Worker[] = [];
  for (let i = 0; i < 2; i++) workers.push(cluster.fork({ SAMPLE_CLUSTER_PORT: String(port) }));
  try {
    await Promise.all(workers.map((worker) => once(worker, 'message')));
    console.log(`2 workers listening on 127.0.0.1:${port} (pids ${workers.map((w) => w.process.pid).join(', ')})`);

    const app = await NestFactory.createApplicationContext(ClusterClientModule.forPort(port), { logger: ['error', 'warn'] });
    const workersClient = app.get(WorkersClient);
    const { client } = workersClient;
    let connected = 0;
    const bothConnected = new Promise<void>((resolve) => client.on('connect', () => ++connected === 2 && resolve()));
    await client.connect(); // dials both connections; resolves with the first one
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('a worker did not accept a connection')), 5_000)));
    await Promise.race([bothConnected, late]).finally(() => clearTimeout(timer));

    const byWorker = new Map<number, number>();
    const started = performance.now();
    await Promise.all(
      Array.from({ length: CALLS }, async () => {
        const { worker } = await workersClient.whoami();
        byWorker.set(worker, (byWorker.get(worker) ?? 0) + 1);
      }),
    );
    const ms = performance.now() - started;
    for (const c of client.connections) console.log(`connection ${c.address} #${c.index}: ${c.state}, ${c.callsInFlight} calls in flight`);
    for (const [worker, count] of [...byWorker].sort((a, b) => a[0] - b[0])) {
      console.log(`worker ${worker} answered ${count} of ${CALLS} calls (${((100 * count) / CALLS).toFixed(1)} %)`);
    }
    console.log(`${CALLS} calls in ${ms.toFixed(0)} ms`);
    await app.close();
    const shares = workers.map((w) => byWorker.get(w.id) ?? 0);
    if (shares.some((count) => count < CALLS / 4)) {
      console.error(`FAILED: a worker got less than a quarter of the calls (${shares.join(', ')})`);
      process.exitCode = 1;
    }
  } finally {
    for (const worker of workers) worker.disconnect();
  }
}

/** A port nothing listens on right now (the primary's workers take it a moment later). */
async function freePort(): Promise<number> {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

const main = cluster.isPrimary ? runPrimary() : runWorker(Number(process.env['SAMPLE_CLUSTER_PORT']));
main.catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
