/**
 * The Nest microservice app both Nest message transports serve (nestjs-smux and Nest TCP): the same controller,
 * with `@MessagePattern` / `@EventPattern` handlers, created with `NestFactory.createMicroservice`.
 */
import 'reflect-metadata';
import { once } from 'node:events';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, EventPattern, MessagePattern, type MicroserviceOptions, Payload } from '@nestjs/microservices';
import { from, type Observable, Subject } from 'rxjs';
import type { SmuxContext, SmuxStreamedPayload } from '../../lib/index.js';
import { measureAfterGc } from '../lib/server-host.js';

/** Longest wait of `events.count` for the count it was asked for, in ms. */
const COUNT_WAIT_MS = 3_000;
/** Pause between the last held call arriving and the measurement, so every call is fully set up. */
const HOLD_SETTLE_MS = 200;

/** Events received, and callers of `events.count` waiting for a number. */
const events = { received: 0, waiters: [] as Array<{ atLeast: number; resolve: (n: number) => void }> };

/** The memory case: the calls held open, and what the server measured with all of them open. */
const holding = {
  target: 0,
  open: 0,
  release: new Subject<string>(),
  base: { heapUsed: 0, rss: 0 },
  figures: null as Record<string, number> | null,
};

@Controller()
class BenchController {
  @MessagePattern('echo')
  echo(@Payload() data: string): string {
    return data;
  }

  @EventPattern('event')
  event(@Payload() _data: string): void {
    events.received++;
    if (events.waiters.length === 0) return;
    for (const waiter of events.waiters.filter((w) => w.atLeast <= events.received)) waiter.resolve(events.received);
  }

  /** Resolves with the number of events received once it reaches `atLeast`, or after 3 s with what there is. */
  @MessagePattern('events.count')
  count(@Payload() atLeast: number): Promise<number> | number {
    if (events.received >= atLeast) return events.received;
    return new Promise((resolve) => {
      const waiter = {
        atLeast,
        resolve: (n: number) => {
          clearTimeout(timer);
          events.waiters.splice(events.waiters.indexOf(waiter), 1);
          resolve(n);
        },
      };
      const timer = setTimeout(() => waiter.resolve(events.received), COUNT_WAIT_MS);
      events.waiters.push(waiter);
    });
  }

  /**
   * The head-of-line case's big reply, as an application writes it: `items` Buffers of `itemBytes`, all at once.
   * Each transport sends them as it can: nestjs-smux as raw bytes on the call's own stream (flow-controlled),
   * Nest TCP as one JSON frame per value (`{"type":"Buffer","data":[…]}`) on the connection's only socket.
   */
  @MessagePattern('big')
  big(@Payload() spec: { items: number; itemBytes: number }): Observable<Buffer> {
    const chunk = Buffer.alloc(spec.itemBytes, 0xa5);
    return from(Array.from({ length: spec.items }, () => chunk));
  }

  /**
   * The upload cases, as a streamed request (nestjs-smux: `client.send('upload.stream', source)`): takes the
   * chunks one at a time (`for await`, which paces the sender) and answers with the byte count.
   */
  @MessagePattern('upload.stream')
  async uploadStream(@Payload() chunks: SmuxStreamedPayload<Buffer>): Promise<number> {
    let bytes = 0;
    for await (const chunk of chunks) bytes += chunk.length;
    return bytes;
  }

  /** The upload cases, as a byte stream (`client.openDuplex('upload.duplex')`): reads it all, ends with the count. */
  @MessagePattern('upload.duplex')
  async uploadDuplex(@Ctx() ctx: SmuxContext): Promise<void> {
    const duplex = ctx.getDuplex();
    let bytes = 0;
    duplex.on('data', (chunk: Buffer) => (bytes += chunk.length));
    await once(duplex, 'end');
    duplex.end(String(bytes));
  }

  /** Arms the memory case: baseline after GC, a fresh Subject to hold `calls` calls on. */
  @MessagePattern('hold.begin')
  holdBegin(@Payload() calls: number): string {
    holding.release.complete();
    Object.assign(holding, { target: calls, open: 0, release: new Subject<string>(), figures: null, base: measureAfterGc() });
    return 'armed';
  }

  /** Held open until all `target` calls are open and measured. */
  @MessagePattern('hold')
  hold(): Observable<string> {
    if (++holding.open === holding.target) {
      setTimeout(() => {
        const { heapUsed, rss } = measureAfterGc();
        holding.figures = { open: holding.open, baseHeapUsed: holding.base.heapUsed, baseRss: holding.base.rss, heapUsed, rss };
        holding.release.next('released');
        holding.release.complete();
      }, HOLD_SETTLE_MS);
    }
    return holding.release;
  }

  @MessagePattern('hold.report')
  holdReport(): Record<string, number> {
    return holding.figures ?? { open: holding.open };
  }
}

@Module({ controllers: [BenchController] })
class BenchModule {}

/** Creates and starts the microservice on the given transport, without logging. */
export async function startBenchApp(transport: MicroserviceOptions): Promise<{ unwrap<T>(): T }> {
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(BenchModule, { ...transport, logger: false });
  await app.listen();
  return app;
}
