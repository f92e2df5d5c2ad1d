/**
 * The server under attack, in a child process of its own so that its memory can be measured after GC
 * (`node --expose-gc --import ./ts-register.mjs server.ts [options JSON]`, started by the attack harness).
 * A Nest microservice on ServerSmux (127.0.0.1, a free port; default options unless the harness passes some)
 * with the handlers the attacks and the measuring client use. Commands: `memory`, `stats`, `logs`, `cpu`, `rss-peak`.
 */
import 'reflect-metadata';
import { pipeline } from 'node:stream/promises';
import { writeHeapSnapshot } from 'node:v8';
import type { AddressInfo, Server, Socket } from 'node:net';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { count, map, type Observable } from 'rxjs';
import { ServerSmux, type ServerSmuxOptions, type Session, type SmuxContext, type SmuxStreamedPayload } from '../../../../lib/index.js';
import { countingLogger, cpuMicros, memoryAfterGc, type ServerStats, serveCommands } from './ipc.js';

const MiB = 1024 * 1024;
/** How long the `slow-event` handler takes (a slow database write, say). */
const SLOW_EVENT_MS = 1_000;
let slowEvents = 0; // `slow-event` handlers started
const blobs = new Map<number, string>();

@Controller()
class TargetController {
  @MessagePattern('ping') // what the measuring client calls
  ping(@Payload() n: number): number {
    return n;
  }

  @MessagePattern('blob') // a plain-value reply of `bytes` bytes (at most 1 MiB), encoded anew for every call
  blob(@Payload() bytes: number): string {
    const size = Math.max(0, Math.min(MiB, Math.trunc(Number(bytes) || 0)));
    let text = blobs.get(size);
    if (text === undefined) blobs.set(size, (text = 'x'.repeat(size)));
    return text;
  }

  @MessagePattern('echo-stream') // a bidirectional stream: each item straight back
  echoStream(@Payload() items: SmuxStreamedPayload<unknown>): Observable<unknown> {
    return items.pipe(map((item) => item));
  }

  @MessagePattern('count-stream') // a client stream: takes every item, replies with how many there were
  countStream(@Payload() items: SmuxStreamedPayload<unknown>): Observable<number> {
    return items.pipe(count());
  }

  @EventPattern('slow-event') // an event handler that takes its time: its data stays alive until it returns
  async slowEvent(@Payload() data: unknown): Promise<void> {
    slowEvents++;
    await new Promise((resolve) => setTimeout(resolve, SLOW_EVENT_MS));
    if (data === null) throw new Error('unreachable: keeps the payload alive until here');
  }

  @MessagePattern('echo-raw') // a byte stream: the bytes straight back, paced by pipeline()'s backpressure
  async echoRaw(@Ctx() ctx: SmuxContext): Promise<void> {
    const duplex = ctx.getDuplex();
    await pipeline(duplex, duplex).catch(() => undefined);
  }
}

@Module({ controllers: [TargetController] })
class TargetModule {}

const options = JSON.parse(process.argv[2] ?? '{}') as ServerSmuxOptions;
const log = countingLogger();
const server = new ServerSmux({ host: '127.0.0.1', port: 0, ...options });
const sessions = new Set<Session>();
server.on('session', (session) => {
  sessions.add(session);
  session.once('close', () => sessions.delete(session));
});
const app = await NestFactory.createMicroservice(TargetModule, { strategy: server, logger: log.logger });
await app.listen();
const sockets = new Set<Socket>();
server.unwrap<Server>().on('connection', (socket: Socket) => {
  sockets.add(socket);
  socket.once('close', () => sockets.delete(socket));
});

// RSS high-water mark, sampled every 50 ms: not after GC (so no target), but it shows transient peaks between samples.
let rssPeak = process.memoryUsage.rss();
setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 50).unref();

serveCommands((server.unwrap<Server>().address() as AddressInfo).port, {
  memory: async () => {
    const figures = await memoryAfterGc();
    // SMUX_ATTACK_HEAP_SNAPSHOT=/some/prefix: a heap snapshot at every sample, to see what a connection holds.
    const prefix = process.env.SMUX_ATTACK_HEAP_SNAPSHOT;
    if (prefix !== undefined && prefix !== '') writeHeapSnapshot(`${prefix}-${Date.now()}.heapsnapshot`);
    return figures;
  },
  /** Open connections, the streams registered on them, and the bytes queued in their sockets (not yet taken by the kernel). */
  stats: (): ServerStats => ({
    connections: sessions.size,
    streams: [...sessions].reduce((n, s) => n + s.numStreams, 0),
    socketQueued: [...sockets].reduce((n, s) => n + s.writableLength, 0),
    slowEvents,
  }),
  logs: () => log.figures(),
  cpu: () => cpuMicros(),
  /** The RSS high-water mark since the last call (which starts a new one), and RSS now. */
  'rss-peak': () => {
    const rss = process.memoryUsage.rss();
    const peak = Math.max(rssPeak, rss);
    rssPeak = rss;
    return { peak, rss };
  },
});
