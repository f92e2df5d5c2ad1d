/**
 * The soak's server, in its own process (forked by run.ts with --expose-gc, so its heap after GC and its RSS are
 * its own): a Nest microservice on ServerSmux at 127.0.0.1, port 0, with one handler per kind of call. It answers
 * the runner's IPC requests for figures and, at the end, closes the app and reports the handles it still has.
 */
import 'reflect-metadata';
import type { AddressInfo, Server } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pipeline } from 'node:stream/promises';
import { Controller, type LoggerService, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, EventPattern, MessagePattern, type MicroserviceOptions, Payload } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { ServerSmux, type SmuxContext, smuxFeed, type SmuxStreamedPayload } from '../../lib/index.js';
import type { FeedFrame, FromServer, ServerStats, ToServer } from './protocol.js';

const counters = { events: 0, handlerErrors: 0, loggedErrors: 0 };
const MAX_ERROR_LINES = 20;

/** Nest's and ServerSmux's log lines: warnings and errors go to stderr (errors counted; the first few printed). */
class SoakLogger implements LoggerService {
  log(): void {}
  debug(): void {}
  verbose(): void {}
  warn(message: unknown, ...rest: unknown[]): void {
    process.stderr.write(`[server warn] ${String(message)} ${rest.map(String).join(' ')}\n`);
  }
  error(message: unknown, ...rest: unknown[]): void {
    if (++counters.loggedErrors <= MAX_ERROR_LINES)
      process.stderr.write(`[server error] ${String(message)} ${rest.map(String).join(' ')}\n`);
  }
}

/** Runs a handler's work; when the call was cancelled (the soak cancels on purpose), ends quietly. */
async function quietly<T>(ctx: SmuxContext, work: () => Promise<T>, otherwise: T): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (ctx.signal.aborted) return otherwise;
    counters.handlerErrors++;
    throw error;
  }
}

@Controller()
class SoakController {
  @MessagePattern('soak.echo')
  echo(@Payload() data: unknown): unknown {
    return data;
  }

  @EventPattern('soak.event')
  event(@Payload() _event: unknown): void {
    counters.events++;
  }

  @MessagePattern('soak.sum') // a client stream: numbers in, their sum back
  async sum(@Payload() numbers: SmuxStreamedPayload<number>, @Ctx() ctx: SmuxContext): Promise<number> {
    return quietly(
      ctx,
      async () => {
        let sum = 0;
        for await (const n of numbers) sum += n;
        return sum;
      },
      0,
    );
  }

  @MessagePattern('soak.bidi') // bidirectional: every item back as it arrives
  async *bidi(@Payload() items: SmuxStreamedPayload<string>): AsyncGenerator<string> {
    for await (const item of items) yield item;
  }

  @MessagePattern('soak.bytes') // a byte stream echoed through pipeline()
  async bytes(@Ctx() ctx: SmuxContext): Promise<void> {
    const duplex = ctx.getDuplex();
    await quietly(ctx, () => pipeline(duplex, duplex), undefined);
  }

  @MessagePattern('soak.feed', smuxFeed({ bufferSize: 16 })) // `count` timestamped frames, made as fast as the loop turns
  feed(@Payload() request: { count: number; pad: number }): Observable<FeedFrame & { pad: string }> {
    const pad = 'x'.repeat(Math.min(Math.max(request.pad, 0), 4096));
    const count = Math.min(Math.max(request.count, 1), 10_000);
    return new Observable((subscriber) => {
      let n = 0;
      let timer: NodeJS.Immediate | undefined;
      const burst = (): void => {
        for (let i = 0; i < 20 && n < count; i++) subscriber.next({ n: ++n, t: Date.now(), pad });
        if (n >= count) subscriber.complete();
        else timer = setImmediate(burst);
      };
      burst();
      return () => clearImmediate(timer);
    });
  }
}

@Module({ controllers: [SoakController] })
class SoakModule {}

const lag = monitorEventLoopDelay({ resolution: 10 });
lag.enable();

function stats(): ServerStats {
  const maxLagMs = lag.max / 1e6; // read before the GC below, whose pause would count in the next period
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  const memory = process.memoryUsage();
  lag.reset();
  return { heapUsed: memory.heapUsed, rss: memory.rss, maxLagMs, ...counters };
}

function tell(message: FromServer): void {
  process.send?.(message);
}

async function main(): Promise<void> {
  const server = new ServerSmux({ host: '127.0.0.1', port: 0 });
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(SoakModule, { strategy: server, logger: new SoakLogger() });
  await app.listen();
  let closing = false;
  const { port } = server.unwrap<Server>().address() as AddressInfo;
  process.on('message', (message: ToServer) => {
    if (message.type === 'stats') tell({ type: 'stats', id: message.id, stats: stats() });
    else if (message.type === 'close') {
      closing = true;
      void app.close().then(async () => {
        await new Promise((resolve) => setTimeout(resolve, 100)); // closed handles leave the list at the loop's next close phase
        // What is left once the app is closed: the IPC channel (and stdio) should be all.
        const figures = stats();
        lag.disable();
        tell({ type: 'closed', id: message.id, stats: figures, handles: process.getActiveResourcesInfo() });
        process.disconnect(); // nothing else should hold the process: it exits by itself
      });
    }
  });
  process.on('disconnect', () => {
    if (!closing) process.exit(1); // the runner is gone without closing us: do not linger
  });
  tell({ type: 'ready', port });
}

main().catch((error: unknown) => {
  console.error('soak server failed to start:', error);
  process.exit(1);
});
