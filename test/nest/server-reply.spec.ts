import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, Observable, Subject, toArray } from 'rxjs';
import type { ClientSmux } from '../../lib/index.js';
import { closeAll, startApp, until, within } from './helpers.js';

/**
 * The server's reply subscribes to a handler's Observable as its own subscriber (server-reply.ts): rxjs must take
 * it as it is — no SafeSubscriber around it — and every finalizer of the subscription must still run exactly once,
 * whether the Observable completes, fails, or the caller cancels.
 */
const subjects = new Map<number, Subject<string>>();
const finalized: string[] = [];
const subscribed = new Set<string>();
/** The subscriber the last `watched` call's Observable was given forwarded to (read while subscribed). */
let destinationName = '';

@Controller()
class ReplyController {
  /** Values pushed through a Subject the test holds: the reply must leave its observers when the call ends. */
  @MessagePattern('shared')
  shared(@Payload() n: number): Observable<string> {
    return subjects.get(n)!;
  }

  /** An Observable whose subscribe hands its subscriber out and whose teardown records the call's key. */
  @MessagePattern('watched')
  watched(@Payload() key: string): Observable<string> {
    return new Observable<string>((subscriber) => {
      destinationName = (subscriber as unknown as { destination: { constructor: { name: string } } }).destination.constructor.name;
      subscribed.add(key);
      if (key.startsWith('complete')) {
        subscriber.next('a');
        subscriber.complete();
      } else if (key.startsWith('fail')) subscriber.error(new Error('boom'));
      return () => finalized.push(key);
    });
  }

  /** Completes synchronously inside subscribe: the teardown returned afterwards runs at once. */
  @MessagePattern('sync')
  sync(@Payload() key: string): Observable<number> {
    return new Observable<number>((subscriber) => {
      subscriber.next(1);
      subscriber.next(2);
      subscriber.complete();
      return () => finalized.push(key);
    });
  }
}

let client: ClientSmux;

beforeAll(async () => {
  const app = await startApp({ controllers: [ReplyController] });
  client = app.client();
  await client.connect();
});

afterAll(closeAll);

describe('the reply as its own subscriber', () => {
  test('rxjs subscribes the reply as it is: the subscriber Nest’s operator forwards to is no SafeSubscriber', async () => {
    await expect(lastValueFrom(client.send('watched', 'complete-1').pipe(toArray()))).resolves.toEqual(['a']);
    // Nest pipes a handler's Observable through catchError; that operator's subscriber forwards to ours.
    expect(destinationName).toBe('ServerReply');
  });

  test('a completed Observable’s teardown runs once, when it completes', async () => {
    await lastValueFrom(client.send('watched', 'complete-2'));
    await until(() => finalized.includes('complete-2'), 5_000, 'the teardown of complete-2');
    expect(finalized.filter((k) => k === 'complete-2')).toHaveLength(1);
  });

  test('a failed Observable’s teardown runs once', async () => {
    await expect(firstValueFrom(client.send('watched', 'fail-1'))).rejects.toBeDefined();
    await until(() => finalized.includes('fail-1'), 5_000, 'the teardown of fail-1');
    expect(finalized.filter((k) => k === 'fail-1')).toHaveLength(1);
  });

  test('a cancelled call tears its Observable down once', async () => {
    const subscription = client.send('watched', 'cancel-1').subscribe({ error: () => undefined });
    await until(() => subscribed.has('cancel-1'), 5_000, 'the handler of cancel-1');
    subscription.unsubscribe();
    await until(() => finalized.includes('cancel-1'), 5_000, 'the teardown of cancel-1');
    expect(finalized.filter((k) => k === 'cancel-1')).toHaveLength(1);
  });

  test('an Observable that completes inside subscribe: the teardown it returns afterwards runs at once', async () => {
    await expect(lastValueFrom(client.send('sync', 'sync-1').pipe(toArray()))).resolves.toEqual([1, 2]);
    await until(() => finalized.includes('sync-1'), 5_000, 'the teardown of sync-1');
    expect(finalized.filter((k) => k === 'sync-1')).toHaveLength(1);
  });

  test('a Subject keeps no observer of a call that is over: cancelled by its caller, or completed', async () => {
    const subject = new Subject<string>();
    subjects.set(1, subject);
    const cancelled = client.send('shared', 1).subscribe({ error: () => undefined });
    const answered = lastValueFrom(client.send('shared', 1).pipe(toArray()));
    await until(() => subject.observers.length === 2, 5_000, 'both calls subscribed to the Subject');
    cancelled.unsubscribe(); // the caller cancels the first call
    await until(() => subject.observers.length === 1, 5_000, 'the cancelled call left the Subject');
    subject.next('v');
    subject.complete(); // the second call is answered with 'v' and leaves
    await expect(within(answered, 'the second call')).resolves.toEqual(['v']);
    expect(subject.observers).toHaveLength(0);
  });
});
