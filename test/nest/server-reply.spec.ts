import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { type CallHandler, Controller, type ExecutionContext, Injectable, type NestInterceptor, UseInterceptors } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, map, Observable, Subject, toArray } from 'rxjs';
import { type ClientSmux, smuxFeed } from '../../lib/index.js';
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

/** The transport's own methods of a reply and a feed: application code must reach none of them. */
const INTERNALS = ['send', 'answer', 'adopt', 'stop', 'flushPending'] as const;
/** Per call key: each object a handler's subscriber forwards to, by class, with the internals it exposes. */
const chains = new Map<string, Array<{ name: string; exposed: string[] }>>();

/** The subscriber and every observer down its chain (an operator's `destination`, a SafeSubscriber's observer). */
function chainOf(subscriber: unknown): Array<{ name: string; exposed: string[] }> {
  const seen: object[] = [];
  let at: unknown = subscriber;
  while (typeof at === 'object' && at !== null && !seen.includes(at)) {
    seen.push(at);
    const links = at as { destination?: unknown; partialObserver?: unknown };
    at = links.destination ?? links.partialObserver;
  }
  return seen.map((o) => ({
    name: o.constructor.name,
    exposed: INTERNALS.filter((key) => typeof (o as Record<string, unknown>)[key] !== 'undefined'),
  }));
}

/** An Observable that records its subscriber's chain, then answers `value`. */
function recording(key: string): Observable<string> {
  return new Observable<string>((subscriber) => {
    chains.set(key, chainOf(subscriber));
    subscriber.next('v');
    subscriber.complete();
  });
}

@Injectable()
class PassInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(map((value: unknown) => value));
  }
}

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

  @MessagePattern('exposed')
  exposed(): Observable<string> {
    return recording('exposed');
  }

  @MessagePattern('exposed-intercepted')
  @UseInterceptors(PassInterceptor)
  exposedIntercepted(): Observable<string> {
    return recording('exposed-intercepted');
  }

  @MessagePattern('exposed-feed', smuxFeed())
  exposedFeed(): Observable<string> {
    return recording('exposed-feed');
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

describe('what application code reaches of the reply (its subscriber and whatever that forwards to)', () => {
  test('a raw Observable’s subscriber chain ends at the reply, which has only a subscriber’s methods', async () => {
    await expect(lastValueFrom(client.send('exposed', 1))).resolves.toBe('v');
    const chain = chains.get('exposed')!;
    expect(chain.map((o) => o.name)).toContain('ServerReply');
    expect(chain.filter((o) => o.exposed.length > 0)).toEqual([]);
  });

  test('through an interceptor’s operator too', async () => {
    await expect(lastValueFrom(client.send('exposed-intercepted', 1))).resolves.toBe('v');
    const chain = chains.get('exposed-intercepted')!;
    expect(chain.map((o) => o.name)).toContain('ServerReply');
    expect(chain.filter((o) => o.exposed.length > 0)).toEqual([]);
  });

  test('a feed’s subscriber chain ends at its buffer, which cannot be stopped (nor write) from there', async () => {
    await expect(lastValueFrom(client.send('exposed-feed', 1).pipe(toArray()))).resolves.toEqual([
      expect.objectContaining({ value: 'v', seq: 1 }),
    ]);
    const chain = chains.get('exposed-feed')!;
    expect(chain.map((o) => o.name)).toContain('FeedBuffer');
    expect(chain.filter((o) => o.exposed.length > 0)).toEqual([]);
  });
});
