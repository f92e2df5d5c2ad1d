/**
 * The Nest microservice app both Nest message transports serve (nestjs-smux and Nest TCP): the same controller,
 * with `@MessagePattern` / `@EventPattern` handlers, created with `NestFactory.createMicroservice`.
 */
import 'reflect-metadata';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, EventPattern, MessagePattern, type MicroserviceOptions, Payload } from '@nestjs/microservices';
import { concat, from, map, type Observable, of, Subject } from 'rxjs';
import type { SmuxContext, SmuxStreamedPayload } from '../../lib/index.js';
import type { HeldCall } from '../cases/spec.js';
import { measureAfterGc } from '../lib/server-host.js';

/** Longest wait of `events.count` for the count it was asked for, in ms. */
const COUNT_WAIT_MS = 3_000;
/** Pause between the last held call arriving and the measurement, so every call is fully set up. */
const HOLD_SETTLE_MS = 200;

/** Events received, and callers of `events.count` waiting for a number. */
const events = { received: 0, waiters: [] as Array<{ atLeast: number; resolve: (n: number) => void }> };

/** How long `hold.report` waits for the released calls to be over on the server, in ms (polled every 20 ms). */
const RELEASE_WAIT_MS = 5_000;

/** The memory case: the calls held open, and what the server measured with all of them open. */
const holding = {
  target: 0,
  call: 'unary' as HeldCall,
  /** Calls of this hold their handler has seen open (the streamed kinds: once their first item arrived). */
  open: 0,
  /** The unary calls' reply: a value, then complete, once measured. */
  release: new Subject<string>(),
  /** `hold.begin`'s reply after `armed`: `measured`, then complete (the client then ends its streamed calls). */
  measured: new Subject<string>(),
  base: { heapUsed: 0, rss: 0 },
  figures: null as Record<string, number> | null,
};

/**
 * Calls open on the server as its transport counts them (nestjs-smux: its metrics' `inFlight`), so that the memory
 * case can check that all held calls were open when measured and all over afterwards; NaN where not known.
 */
let openCalls: () => number = () => Number.NaN;

/** A held call is open; with the last one, measure after a pause (so every call is fully set up), then release. */
function markOpen(): void {
  if (++holding.open === holding.target) setTimeout(measureHeld, HOLD_SETTLE_MS);
}

function measureHeld(): void {
  const { heapUsed, rss } = measureAfterGc();
  holding.figures = {
    open: holding.open,
    // The transport's count, less the `hold.begin` call (in flight at the baseline too).
    serverCalls: openCalls() - 1,
    baseHeapUsed: holding.base.heapUsed,
    baseRss: holding.base.rss,
    heapUsed,
    rss,
  };
  holding.release.next('released');
  holding.release.complete();
  holding.measured.next('measured');
  holding.measured.complete();
}

/** The bidirectional held call's reply: each item back (shared, so the handler adds no closure per call). */
function echoHeld(item: string, index: number): string {
  if (index === 0) markOpen();
  return item;
}

/** The held byte stream's first bytes: it is open both ways; keep reading (the client sends nothing more). */
function heldDuplexData(this: Duplex): void {
  markOpen();
  this.resume();
}

/** The client ended its side of a held byte stream: end ours, which completes the call. */
function endHeldDuplex(this: Duplex): void {
  this.end();
}

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

  /**
   * Arms the memory case for `calls` held calls of kind `call`: baseline after GC (no call of an earlier run may be
   * left open), then `armed`; `measured` follows once all of them were open and measured.
   */
  @MessagePattern('hold.begin')
  holdBegin(@Payload() spec: { calls: number; call: HeldCall }): Observable<string> {
    const left = openCalls() - 1;
    if (left > 0) throw new Error(`${left} calls of an earlier run are still open on the server`);
    holding.release.complete();
    holding.measured.complete();
    Object.assign(holding, {
      target: spec.calls,
      call: spec.call,
      open: 0,
      release: new Subject<string>(),
      measured: new Subject<string>(),
      figures: null,
      base: measureAfterGc(),
    });
    return concat(of('armed'), holding.measured);
  }

  /** A held unary call: its reply comes once all `target` calls are open and measured. */
  @MessagePattern('hold')
  hold(): Observable<string> {
    markOpen();
    return holding.release;
  }

  /** A held client stream: reads the items until the client ends its source, then answers with their count. */
  @MessagePattern('hold.stream')
  async holdStream(@Payload() items: SmuxStreamedPayload<string>): Promise<number> {
    let count = 0;
    for await (const _item of items) if (count++ === 0) markOpen();
    return count;
  }

  /** A held bidirectional call: each item back as it comes, until the client ends its source. */
  @MessagePattern('hold.bidi')
  holdBidi(@Payload() items: SmuxStreamedPayload<string>): Observable<string> {
    return items.pipe(map(echoHeld));
  }

  /** A held byte stream: reads what comes, ends its side when the client has ended its own. */
  @MessagePattern('hold.duplex')
  holdDuplex(@Ctx() ctx: SmuxContext): void {
    ctx.getDuplex().once('data', heldDuplexData).once('end', endHeldDuplex);
  }

  /**
   * What was measured with the calls open, and once they are released: the calls still open on the server (after
   * waiting up to 5 s for them to be over) and the heap and RSS after GC 200 ms later (back near the baseline if the
   * transport let go of everything).
   */
  @MessagePattern('hold.report')
  async holdReport(): Promise<Record<string, number>> {
    if (holding.figures === null) return { open: holding.open };
    for (let waited = 0; openCalls() - 1 > 0 && waited < RELEASE_WAIT_MS; waited += 20) await sleep(20);
    // A call counted over stays reachable for a moment (measured at once: ≈ 850 B per call left; 200 ms later ≈ 0).
    await sleep(HOLD_SETTLE_MS);
    const after = measureAfterGc();
    return { ...holding.figures, leftCalls: openCalls() - 1, heapAfter: after.heapUsed, rssAfter: after.rss };
  }
}

@Module({ controllers: [BenchController] })
class BenchModule {}

/**
 * Creates and starts the microservice on the given transport, without logging. `probe.openCalls` counts the calls
 * open on the server, where the transport can say (the memory case checks them).
 */
export async function startBenchApp(transport: MicroserviceOptions, probe?: { openCalls(): number }): Promise<{ unwrap<T>(): T }> {
  if (probe !== undefined) openCalls = () => probe.openCalls();
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(BenchModule, { ...transport, logger: false });
  await app.listen();
  return app;
}
