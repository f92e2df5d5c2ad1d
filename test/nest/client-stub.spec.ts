/**
 * smuxStub on a real Nest app over 127.0.0.1: each stub member reaches its handler through `client.send()` and
 * each event through `client.emit()`, with the pattern, data and per-call options the caller would pass by hand.
 * The stub's types are checked in test/types/client-stub.types.ts.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import type { ClientProxy } from '@nestjs/microservices';
import { Ctx, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, from, lastValueFrom, NEVER, type Observable, of, range, map, toArray } from 'rxjs';
import {
  type ClientSmux,
  type SmuxContext,
  type SmuxSource,
  type SmuxStreamedPayload,
  SmuxRecordBuilder,
  type SmuxStub,
  smuxStub,
} from '../../lib/index.js';
import { type AppHandle, closeAll, rejection, smuxError, startApp, until, within } from './helpers.js';

interface MathContract {
  sum(numbers: number[]): number;
  legacy(numbers: number[]): number;
  ticks(count: number): Observable<{ tick: number }>;
  total(numbers: SmuxSource<number>): number;
  whoami(data: object): { user: string | undefined; remaining: number | undefined };
  hang(data: object): never;
}
interface MathEvents {
  computed: { result: number };
}

const computed: Array<{ result: number; user: string | undefined }> = [];

@Controller()
class MathController {
  @MessagePattern('math.sum')
  sum(@Payload() numbers: number[]): number {
    return numbers.reduce((a, b) => a + b, 0);
  }

  @MessagePattern({ cmd: 'sum', v: 1 })
  legacy(@Payload() numbers: number[]): number {
    return -numbers.reduce((a, b) => a + b, 0); // negated: proves this handler answered, not math.sum
  }

  @MessagePattern('math.ticks')
  ticks(@Payload() count: number): Observable<{ tick: number }> {
    return range(0, count).pipe(map((tick) => ({ tick })));
  }

  @MessagePattern('math.total')
  async total(@Payload() numbers: SmuxStreamedPayload<number>): Promise<number> {
    let total = 0;
    for await (const n of numbers) total += n;
    return total;
  }

  @MessagePattern('math.whoami')
  whoami(@Ctx() ctx: SmuxContext): { user: string | undefined; remaining: number | undefined } {
    return { user: ctx.getHeaders()['x-user'], remaining: ctx.getRemainingTime() };
  }

  @MessagePattern('math.hang')
  hang(): Observable<never> {
    return NEVER;
  }

  @EventPattern<string>('math.computed') // explicit: Nest 12's typed overload would demand (data, ...args: unknown[])
  computed(@Payload() event: { result: number }, @Ctx() ctx: SmuxContext): void {
    computed.push({ ...event, user: ctx.getHeaders()['x-user'] });
  }
}

describe('smuxStub on a Nest app', () => {
  let handle: AppHandle;
  let client: ClientSmux;
  let math: SmuxStub<MathContract, MathEvents>;

  beforeAll(async () => {
    handle = await startApp({ controllers: [MathController] });
    client = handle.client();
    math = smuxStub<MathContract, MathEvents>(client, { prefix: 'math.', patterns: { legacy: { cmd: 'sum', v: 1 } } });
  });
  beforeEach(() => void (computed.length = 0));
  afterAll(closeAll);

  test('a unary member sends to prefix + name and answers', async () => {
    expect(await firstValueFrom(math.sum([1, 2]))).toBe(3);
  });

  test('a member with an object pattern (options.patterns) reaches its handler', async () => {
    expect(await firstValueFrom(math.legacy([1, 2]))).toBe(-3);
  });

  test('a streamed reply arrives item by item, in order', async () => {
    expect(await lastValueFrom(math.ticks(3).pipe(toArray()))).toEqual([{ tick: 0 }, { tick: 1 }, { tick: 2 }]);
  });

  test('a client stream from an async generator', async () => {
    async function* numbers(): AsyncGenerator<number> {
      for (let n = 1; n <= 4; n++) yield n;
    }
    expect(await firstValueFrom(math.total(numbers()))).toBe(10);
  });

  test('a client stream from an Observable', async () => {
    expect(await firstValueFrom(math.total(from([1, 2, 3])))).toBe(6);
    expect(await firstValueFrom(math.total(of<number>()))).toBe(0);
  });

  test("a SmuxRecord carries headers and a deadline to the handler's context", async () => {
    const record = new SmuxRecordBuilder({}).setHeaders({ 'x-user': 'ada' }).setTimeout(5_000).build();
    const { user, remaining } = await firstValueFrom(math.whoami(record));
    expect(user).toBe('ada');
    expect(remaining).toBeGreaterThan(0);
    expect(remaining).toBeLessThanOrEqual(5_000);
  });

  test("a SmuxRecord's timeout fails the call with ERR_SMUX_TIMEOUT", async () => {
    const error = await rejection(firstValueFrom(math.hang(new SmuxRecordBuilder({}).setTimeout(50).build())));
    expect(error).toEqual(smuxError('ERR_SMUX_TIMEOUT'));
  });

  test('an event reaches the @EventPattern handler', async () => {
    await within(lastValueFrom(math.emit.computed({ result: 3 }), { defaultValue: undefined }), 'the event to be sent');
    const record = new SmuxRecordBuilder({ result: 4 }).setHeaders({ 'x-user': 'ada' }).build();
    await within(lastValueFrom(math.emit.computed(record), { defaultValue: undefined }), 'the event to be sent');
    await until(() => computed.length === 2, 5_000, 'both events to be handled');
    expect(computed).toEqual([
      { result: 3, user: undefined },
      { result: 4, user: 'ada' },
    ]);
  });

  test('a call without data passes undefined to the client, which refuses it as client.send() does', async () => {
    const bare = math.sum as unknown as () => Observable<number>;
    expect(await rejection(firstValueFrom(bare()))).toEqual(smuxError('ERR_SMUX_INVALID_ARGUMENT'));
    expect(await rejection(firstValueFrom(client.send('math.sum', undefined)))).toEqual(smuxError('ERR_SMUX_INVALID_ARGUMENT'));
  });

  test('the stub is not a thenable: `then` and symbols read undefined, and awaiting it gives the stub', async () => {
    const raw = math as unknown as Record<string | symbol, unknown>;
    expect(raw['then']).toBeUndefined();
    expect((math.emit as unknown as Record<string, unknown>)['then']).toBeUndefined();
    expect(raw[Symbol.iterator]).toBeUndefined();
    expect(raw[Symbol.toPrimitive]).toBeUndefined();
    // A thenable would be called back instead (here: a send() that never settles).
    const awaited = await within(Promise.resolve(math), 'the stub to resolve as a value');
    expect(awaited).toBe(math);
    expect(await firstValueFrom(awaited.sum([2, 2]))).toBe(4);
  });

  test('a member is made once: the same function object every time, usable detached', async () => {
    expect(math.sum).toBe(math.sum);
    expect(math.emit).toBe(math.emit);
    expect(math.emit.computed).toBe(math.emit.computed);
    const { sum } = math;
    expect(await firstValueFrom(sum([5, 6]))).toBe(11);
  });
});

describe('smuxStub over any ClientProxy', () => {
  /** A client that records what the stub passes to it. */
  function recordingClient(): { client: Pick<ClientProxy, 'send' | 'emit'>; calls: unknown[][] } {
    const calls: unknown[][] = [];
    const client = {
      send: <T>(...args: unknown[]): Observable<T> => (calls.push(['send', ...args]), of()),
      emit: <T>(...args: unknown[]): Observable<T> => (calls.push(['emit', ...args]), of()),
    };
    return { client, calls };
  }

  test('each member calls send(pattern, data) and each event emit(pattern, data), with the data as given', () => {
    const { client, calls } = recordingClient();
    // `valueOf`: a name Object.prototype has, which must not be taken for a pattern the caller gave.
    const stub = smuxStub<{ sum(n: number[]): number; valueOf(n: number): string }>(client, { prefix: 'p.' });
    const events = smuxStub<object, { done: string }>(client, { patterns: { done: { event: 'finished' } } });
    const data = [1, 2];
    void stub.sum(data);
    void stub.valueOf(1);
    void events.emit.done('yes');
    void (stub.sum as unknown as () => unknown)();
    expect(calls).toEqual([
      ['send', 'p.sum', data],
      ['send', 'p.valueOf', 1],
      ['emit', { event: 'finished' }, 'yes'],
      ['send', 'p.sum', undefined],
    ]);
    expect(calls[0][2]).toBe(data); // not copied
    expect(calls[3]).toHaveLength(3); // data passed explicitly, as undefined
  });
});
