/**
 * Client streams and bidirectional streams on real Nest apps over 127.0.0.1: `client.send(pattern, source)` with
 * an Observable, an async generator or a Readable; the handler's `@Payload()` is an Observable that is also an
 * AsyncIterable; every kind of reply; backpressure counted in items, never timed; cancellation from either side.
 */
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import {
  type CallHandler,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Injectable,
  IntrinsicException,
  type NestInterceptor,
  type PipeTransform,
  UseGuards,
  UseInterceptors,
  UsePipes,
} from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { concatMap, firstValueFrom, from, interval, lastValueFrom, map, type Observable, of, range, Subject, take, toArray } from 'rxjs';
import { type ClientSmux, isSmuxError, type SmuxContext, type SmuxStreamedPayload, SmuxRecordBuilder } from '../../lib/index.js';
import { loggedErrors, logLines } from '../helpers/logs.js';
import { type AppHandle, closeAll, deferred, type Deferred, rejection, smuxError, startApp, until, within } from './helpers.js';

const probe = {
  taken: 0,
  gate: null as Deferred<void> | null,
  inputError: null as unknown,
  aborted: null as unknown,
  entered: deferred(),
};

@Injectable()
class HeaderGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    return context.switchToRpc().getContext<SmuxContext>().getHeaders()['x-ok'] === 'yes';
  }
}

@Injectable()
class DoublePipe implements PipeTransform {
  transform(value: SmuxStreamedPayload<number>): Observable<number> {
    return value.pipe(map((n) => n * 2));
  }
}

@Injectable()
class WrapInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(map((value: unknown) => ({ wrapped: value })));
  }
}

@Controller()
class StreamsController {
  @MessagePattern('sum') // a streamed request, one value back (for await: pulled with backpressure)
  async sum(@Payload() numbers: SmuxStreamedPayload<number>): Promise<number> {
    let total = 0;
    for await (const n of numbers) total += n;
    return total;
  }

  @MessagePattern('collect') // every item, in order (as an Observable)
  collect(@Payload() items: SmuxStreamedPayload<unknown>): Observable<unknown[]> {
    return items.pipe(toArray());
  }

  @MessagePattern('echo-observable') // bidirectional: each item straight back, while more arrive
  echoObservable(@Payload() items: SmuxStreamedPayload<unknown>): Observable<unknown> {
    return items.pipe(map((item) => item));
  }

  @MessagePattern('echo-generator')
  async *echoGenerator(@Payload() items: SmuxStreamedPayload<unknown>): AsyncGenerator<unknown> {
    for await (const item of items) yield item;
  }

  @MessagePattern('echo-readable')
  echoReadable(@Payload() items: SmuxStreamedPayload<unknown>): Readable {
    return Readable.from(items, { objectMode: true });
  }

  @MessagePattern('slow') // takes one item per gate opening: the sender must wait
  async slow(@Payload() items: SmuxStreamedPayload<Buffer>, @Ctx() ctx: SmuxContext): Promise<number> {
    ctx.signal.addEventListener('abort', () => (probe.aborted = ctx.signal.reason as unknown));
    probe.entered.resolve();
    try {
      for await (const item of items) {
        probe.taken++;
        await probe.gate?.promise;
        void item;
      }
    } catch (error) {
      probe.inputError = error;
      throw error;
    }
    return probe.taken;
  }

  @MessagePattern('ignore') // never reads its input
  ignore(): Observable<never> {
    probe.entered.resolve();
    return new Subject<never>();
  }

  @MessagePattern('first-only') // completes after the first item: the caller must stop pulling
  async firstOnly(@Payload() items: SmuxStreamedPayload<number>): Promise<number> {
    for await (const item of items) return item;
    return -1;
  }

  @MessagePattern('payload-hooks') // which of the server's own hooks a handler could reach on its payload
  async payloadHooks(@Payload() items: SmuxStreamedPayload<number>): Promise<string[]> {
    const reachable = ['push', 'end', 'fail'].filter((name) => name in items);
    for await (const item of items) void item;
    return reachable;
  }

  @MessagePattern('ping')
  ping(): string {
    return 'pong';
  }

  @UseGuards(HeaderGuard)
  @UseInterceptors(WrapInterceptor)
  @UsePipes(DoublePipe)
  @MessagePattern('guarded')
  guarded(@Payload() doubled: Observable<number>): Observable<number[]> {
    return doubled.pipe(toArray());
  }
}

let handle: AppHandle;
let client: ClientSmux;

beforeAll(async () => {
  handle = await startApp({ controllers: [StreamsController], providers: [HeaderGuard, DoublePipe, WrapInterceptor] });
  client = handle.client({ timeout: 20_000 });
});
afterAll(closeAll);
beforeEach(() => {
  probe.taken = 0;
  probe.gate = null;
  probe.inputError = null;
  probe.aborted = null;
  probe.entered = deferred();
});

async function* generator<T>(items: T[]): AsyncGenerator<T> {
  for (const item of items) yield item;
}

const sources: Array<[string, (items: number[]) => unknown]> = [
  ['an Observable', (items) => from(items)],
  ['an async generator', (items) => generator(items)],
  ['a Readable', (items) => Readable.from(items)],
];
const replies = ['echo-observable', 'echo-generator', 'echo-readable'];

describe('client streams and bidirectional streams', () => {
  test.each(sources)('%s source: a one-value reply', async (_name, make) => {
    expect(await firstValueFrom(client.send('sum', make([1, 2, 3, 4])))).toBe(10);
  });

  test.each(sources.flatMap(([name, make]) => replies.map((reply) => [name, reply, make] as const)))(
    '%s source, %s reply: every item back, in order',
    async (_name, reply, make) => {
      expect(await lastValueFrom(client.send(reply, make([1, 2, 3])).pipe(toArray()))).toEqual([1, 2, 3]);
    },
  );

  test('10 000 items arrive in order; values of every encoding keep their types', async () => {
    const items = Array.from({ length: 10_000 }, (_, i) => i);
    expect(await firstValueFrom(client.send('collect', generator(items)))).toEqual(items);
    const mixed = [{ a: 1 }, 'text', Buffer.from([1, 2]), null, [3], 4.5];
    expect(await lastValueFrom(client.send('echo-generator', from(mixed)).pipe(toArray()))).toEqual(mixed);
  });

  test('an empty source is an empty input', async () => {
    expect(await firstValueFrom(client.send('sum', generator([])))).toBe(0);
  });

  test('backpressure: a slow reader keeps the pulled source a bounded number of items ahead (counted, not timed)', async () => {
    probe.gate = deferred();
    let produced = 0;
    async function* big(): AsyncGenerator<Buffer> {
      for (let i = 0; i < 2_000; i++) {
        produced++;
        yield Buffer.alloc(8 * 1024);
      }
    }
    const call = firstValueFrom(client.send<number>('slow', big()));
    await within(probe.entered.promise, 'the handler');
    await until(() => probe.taken === 1, 5_000, 'the first item');
    for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    // Held by the server (≤ 32 items or 256 KiB), the stream's window (256 KiB) and our queue (64 KiB): ≈ 100 items.
    expect(produced).toBeLessThan(120);
    const ahead = produced;
    for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(produced).toBe(ahead);
    probe.gate.resolve();
    expect(await within(call, 'the call')).toBe(2_000);
  });

  test('a handler that never reads blocks only its own call: others flow, the source stays bounded', async () => {
    let produced = 0;
    async function* endless(): AsyncGenerator<Buffer> {
      for (;;) {
        produced++;
        yield Buffer.alloc(16 * 1024);
      }
    }
    const stuck = client.send('ignore', endless()).subscribe({ error: () => undefined });
    await within(probe.entered.promise, 'the handler');
    const pings = await Promise.all(Array.from({ length: 50 }, () => firstValueFrom(client.send('ping', {}))));
    expect(pings.every((p) => p === 'pong')).toBe(true);
    for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(produced).toBeLessThan(45); // 256 KiB held + 256 KiB window + 64 KiB queue: 36 items of 16 KiB
    stuck.unsubscribe();
  });

  test("the caller unsubscribing mid-stream: the handler's input errors with ERR_SMUX_CANCELLED and ctx.signal aborts", async () => {
    probe.gate = deferred();
    const subscription = client.send('slow', interval(1).pipe(map(() => Buffer.alloc(10)))).subscribe({ error: () => undefined });
    await until(() => probe.taken === 1, 5_000, 'the first item');
    subscription.unsubscribe();
    await until(() => probe.aborted !== null, 5_000, 'ctx.signal to abort');
    probe.gate.resolve();
    await until(() => probe.inputError !== null, 5_000, "the handler's input to error");
    expect(probe.inputError).toEqual(smuxError('ERR_SMUX_CANCELLED'));
    expect(probe.aborted).toEqual(smuxError('ERR_SMUX_CANCELLED'));
    // A SmuxError that is also Nest's IntrinsicException: a handler that lets it propagate is not logged as failing.
    expect(probe.inputError).toBeInstanceOf(IntrinsicException);
    expect(probe.aborted).toBe(probe.inputError);
    expect(isSmuxError(probe.inputError, 'ERR_SMUX_CANCELLED')).toBe(true);
    expect((probe.inputError as Error).name).toBe('SmuxError');
  });

  test('cancelling a for-await handler is quiet: the payload throws ERR_SMUX_CANCELLED, which Nest does not log as an error', async () => {
    // The README's own pattern: before, every cancelled call made Nest's exception filter log an ERROR with its stack.
    const errorsBefore = loggedErrors.length;
    const metrics = handle.server.metrics;
    for (let i = 0; i < 3; i++) {
      const { bytes, calls } = metrics.snapshot(); // (calls of earlier tests may still be open)
      const subscription = client.send('sum', interval(1).pipe(map(() => 1))).subscribe({ error: () => undefined });
      await until(() => metrics.snapshot().bytes.received > bytes.received + 200, 5_000, 'items to arrive');
      subscription.unsubscribe();
      await until(
        () => (metrics.snapshot().calls.failed.ERR_SMUX_CANCELLED ?? 0) > (calls.failed.ERR_SMUX_CANCELLED ?? 0),
        5_000,
        'the cancel',
      );
    }
    expect(await firstValueFrom(client.send('ping', 1))).toBe('pong');
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(loggedErrors.slice(errorsBefore)).toEqual([]);
  });

  test('cancelling a bidirectional .pipe() handler is quiet: nothing is logged as an error on the server', async () => {
    const errorsBefore = loggedErrors.length;
    const replies: unknown[] = [];
    const subscription = client.send('echo-observable', interval(1).pipe(map((i) => i))).subscribe({
      next: (value) => void replies.push(value),
      error: () => undefined,
    });
    await until(() => replies.length >= 3, 5_000, 'the first replies');
    subscription.unsubscribe();
    expect(await firstValueFrom(client.send('ping', 1))).toBe('pong'); // the connection serves on
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(loggedErrors.slice(errorsBefore)).toEqual([]);
  });

  test('the handler completing early stops the caller pulling: its generator is returned, its Readable destroyed', async () => {
    let finallyRan = false;
    async function* endless(): AsyncGenerator<number> {
      try {
        for (let i = 1; ; i++) yield i;
      } finally {
        finallyRan = true;
      }
    }
    expect(await firstValueFrom(client.send('first-only', endless()))).toBe(1);
    await until(() => finallyRan, 5_000, "the generator's finally");
    const readable = new Readable({ objectMode: true, read() {} });
    readable.push(7);
    expect(await firstValueFrom(client.send('first-only', readable))).toBe(7);
    await until(() => readable.destroyed, 5_000, 'the Readable to be destroyed');
  });

  test("a source that throws fails the call with the source's error and cancels the handler", async () => {
    probe.gate = null;
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(1);
      await probe.entered.promise; // the call is running on the server when the source fails
      throw new Error('disk on fire');
    }
    const error = await rejection(firstValueFrom(client.send('slow', failing())));
    expect((error as Error).message).toBe('disk on fire');
    await until(() => probe.inputError !== null, 5_000, "the handler's input to error");
    expect(probe.inputError).toEqual(smuxError('ERR_SMUX_CANCELLED'));
  });

  test('an Observable source that outruns the server fails with ERR_SMUX_LIMIT past maxSourceBufferBytes', async () => {
    probe.gate = deferred();
    const small = handle.client({ maxSourceBufferBytes: 512 * 1024 });
    const flood = range(0, 200).pipe(map(() => Buffer.alloc(16 * 1024))); // 3.2 MiB at once
    expect(await rejection(firstValueFrom(small.send('slow', flood)))).toEqual(smuxError('ERR_SMUX_LIMIT', 'maxSourceBufferBytes'));
    probe.gate.resolve();
  });

  test('guards, pipes and interceptors run on streaming calls; headers travel with a streamed request', async () => {
    const ok = new SmuxRecordBuilder(of(1, 2, 3)).setHeaders({ 'x-ok': 'yes' }).build();
    expect(await firstValueFrom(client.send('guarded', ok))).toEqual({ wrapped: [2, 4, 6] });
    const denied = new SmuxRecordBuilder(of(1)).setHeaders({ 'x-ok': 'no' }).build();
    expect(await rejection(firstValueFrom(client.send('guarded', denied)))).toEqual({ status: 'error', message: 'Forbidden resource' });
  });

  test('a bidirectional stream flows both ways at once: replies arrive while the source is still producing', async () => {
    const source = new Subject<number>();
    const received: unknown[] = [];
    const done = lastValueFrom(
      client.send('echo-observable', source).pipe(
        concatMap((v) => of(v)),
        take(3),
        toArray(),
      ),
    );
    const subscription = client.send('echo-observable', source).subscribe((v) => received.push(v));
    source.next(1);
    await until(() => received.length === 1, 5_000, 'the first echo before the source ends');
    source.next(2);
    source.next(3);
    source.complete();
    expect(await done).toEqual([1, 2, 3]);
    subscription.unsubscribe();
  });

  test("the handler's payload exposes none of the server's hooks: no push (fake items, a negative charge), end or fail", async () => {
    expect(await firstValueFrom(client.send('payload-hooks', from([1, 2, 3])))).toEqual([]);
  });

  test('emit() refuses a source: events do not stream', async () => {
    await expect(lastValueFrom(client.emit('x', of(1)))).rejects.toEqual(smuxError('ERR_SMUX_INVALID_ARGUMENT'));
  });
});

describe('a streamed item over maxMessageBytes', () => {
  test('fails the call with ERR_SMUX_LIMIT, logged once as a warning: the handler that lets it propagate is not logged too', async () => {
    const small = await startApp({ controllers: [StreamsController], server: { maxMessageBytes: 1024 } });
    const caller = small.client();
    const errorsBefore = loggedErrors.length;
    const warningsBefore = logLines.filter((line) => line.level === 'warn').length;
    for (let i = 0; i < 3; i++) {
      const items = from([1, 2, 'x'.repeat(2048) as unknown as number]);
      expect(await rejection(firstValueFrom(caller.send('sum', items)))).toEqual(smuxError('ERR_SMUX_LIMIT', 'maxMessageBytes'));
    }
    await until(() => small.server.metrics.snapshot().calls.inFlight === 0, 5_000, 'the calls to end on the server');
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    const warnings = logLines.filter((line) => line.level === 'warn').slice(warningsBefore);
    expect(warnings.map((line) => line.context)).toEqual(['ServerSmux', 'ServerSmux', 'ServerSmux']); // the limit's own line
    expect(loggedErrors.slice(errorsBefore)).toEqual([]);
    await small.close();
  });
});
