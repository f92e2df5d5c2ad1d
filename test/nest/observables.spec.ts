import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload, RpcException } from '@nestjs/microservices';
import { concat, defer, firstValueFrom, lastValueFrom, of, range, Subject, throwError, toArray } from 'rxjs';
import type { ClientSmux } from '../../lib/index.js';
import { closeAll, type Deferred, deferred, startApp, until, within } from './helpers.js';

/** Subjects the handler of 'held' hands to the test, by the key the caller sent. */
const held = new Map<string, Deferred<Subject<unknown>>>();

function expectHeld(key: string): Promise<Subject<unknown>> {
  const d = deferred<Subject<unknown>>();
  held.set(key, d);
  return within(d.promise, `the handler of call ${key}`);
}

@Controller()
class StreamsController {
  @MessagePattern('range')
  range(@Payload() n: number) {
    return range(0, n);
  }

  @MessagePattern('held')
  held(@Payload() key: string) {
    // Handed over once subscribed: values the test pushes then reach the caller.
    return defer(() => {
      const subject = new Subject<unknown>();
      held.get(key)!.resolve(subject);
      return subject;
    });
  }

  @MessagePattern('values-then-error')
  valuesThenError() {
    return concat(
      of('a', 'b'),
      throwError(() => new RpcException({ code: 'E_MID', at: 2 })),
    );
  }

  @MessagePattern('values-then-crash')
  valuesThenCrash() {
    return concat(
      of(1),
      throwError(() => new Error('secret detail')),
    );
  }

  @MessagePattern('sum')
  sum(@Payload() data: number[]) {
    return data.reduce((a, b) => a + b, 0);
  }
}

/** Subscribes and records what the caller sees. */
function observe(client: ClientSmux, pattern: string, data: unknown) {
  const values: unknown[] = [];
  const done = deferred<'complete'>();
  const subscription = client.send(pattern, data).subscribe({
    next: (v) => void values.push(v),
    error: (e: unknown) => done.reject(e),
    complete: () => done.resolve('complete'),
  });
  return { values, done, subscription };
}

describe('Observable replies', () => {
  let client: ClientSmux;

  beforeAll(async () => {
    const handle = await startApp({ controllers: [StreamsController] });
    client = handle.client();
  });
  afterAll(closeAll);

  test('every emitted value reaches the caller in order, then completion', async () => {
    expect(await lastValueFrom(client.send('range', 500).pipe(toArray()))).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(await lastValueFrom(client.send('range', 1).pipe(toArray()))).toEqual([0]);
    expect(await lastValueFrom(client.send('range', 0).pipe(toArray()))).toEqual([]);
  });

  test('values emitted one at a time by the handler arrive one at a time, before the call completes', async () => {
    const subjectP = expectHeld('stepwise');
    const call = observe(client, 'held', 'stepwise');
    const subject = await subjectP;
    for (const value of ['first', { second: 2 }, 3]) {
      const before = call.values.length;
      subject.next(value);
      await until(() => call.values.length > before, 5_000, `value ${JSON.stringify(value)}`);
      expect(call.values.at(-1)).toEqual(value);
      expect(call.done.settled).toBe(false);
    }
    subject.complete();
    await expect(within(call.done.promise, 'completion')).resolves.toBe('complete');
    expect(call.values).toEqual(['first', { second: 2 }, 3]);
  });

  test('a call held open by its handler does not hold up other calls', async () => {
    const subjectP = expectHeld('slow');
    const slow = observe(client, 'held', 'slow');
    const subject = await subjectP;
    subject.next('partial');
    const others = await Promise.all(Array.from({ length: 20 }, (_, i) => firstValueFrom(client.send('sum', [i, 1]))));
    expect(others).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    await until(() => slow.values.length === 1, 5_000, 'the partial value');
    expect(slow.done.settled).toBe(false);
    subject.next('rest');
    subject.complete();
    await within(slow.done.promise, 'the slow call');
    expect(slow.values).toEqual(['partial', 'rest']);
  });

  test('a mid-stream RpcException arrives after the values emitted before it', async () => {
    const call = observe(client, 'values-then-error', {});
    await expect(within(call.done.promise, 'the call')).rejects.toEqual({ code: 'E_MID', at: 2 });
    expect(call.values).toEqual(['a', 'b']);
  });

  test('a mid-stream error pushed later by the handler ends the call with it', async () => {
    const subjectP = expectHeld('late-error');
    const call = observe(client, 'held', 'late-error');
    const subject = await subjectP;
    subject.next(1);
    await until(() => call.values.length === 1, 5_000, 'the first value');
    subject.next(2);
    subject.error(new RpcException({ code: 'E_LATE' }));
    await expect(within(call.done.promise, 'the call')).rejects.toEqual({ code: 'E_LATE' });
    expect(call.values).toEqual([1, 2]);
  });

  test('a plain Error mid-stream reaches the caller as Nest\'s "Internal server error", details hidden', async () => {
    const call = observe(client, 'values-then-crash', {});
    await expect(within(call.done.promise, 'the call')).rejects.toEqual({ status: 'error', message: 'Internal server error' });
    expect(call.values).toEqual([1]);
  });
});
