import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { type ClientSmux, type Session, SmuxContext, SmuxRecordBuilder } from '../../lib/index.js';
import { type AppHandle, closeAll, type Deferred, deferred, loggedErrors, startApp, until, within } from './helpers.js';

interface Seen {
  by: string;
  data: unknown;
  pattern: string;
  headers: Readonly<Record<string, string>>;
}

const seen: Seen[] = [];
let gate: Deferred<void> = deferred();
let gateEntered: Deferred<void> = deferred();

@Controller()
class FirstEventsController {
  @EventPattern<string>('note') // explicit: Nest 12's typed overload would demand (data, ...args: unknown[])
  note(@Payload() data: unknown, @Ctx() ctx: SmuxContext): void {
    seen.push({ by: 'first', data, pattern: ctx.getPattern(), headers: ctx.getHeaders() });
  }

  @EventPattern('same')
  same(@Payload() data: unknown): void {
    seen.push({ by: 'first', data, pattern: 'same', headers: {} });
  }

  @EventPattern({ kind: 'object-event' })
  objectEvent(@Payload() data: unknown, @Ctx() ctx: SmuxContext): void {
    seen.push({ by: 'first', data, pattern: ctx.getPattern(), headers: {} });
  }

  @EventPattern('slow')
  async slow(@Payload() data: unknown): Promise<void> {
    gateEntered.resolve();
    await gate.promise;
    seen.push({ by: 'slow', data, pattern: 'slow', headers: {} });
  }

  @EventPattern('throws')
  throws(@Payload() how: string): Promise<void> {
    if (how === 'sync') throw new Error('event handler failed at once');
    return Promise.reject(new Error('event handler failed later'));
  }

  @MessagePattern('ping')
  ping(): string {
    return 'pong';
  }
}

@Controller()
class SecondEventsController {
  @EventPattern('same')
  async same(@Payload() data: unknown): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    seen.push({ by: 'second', data, pattern: 'same', headers: {} });
  }
}

function emitted(client: ClientSmux, pattern: unknown, data: unknown): Promise<unknown> {
  return within(lastValueFrom(client.emit(pattern, data), { defaultValue: undefined }), 'emit() to complete');
}

describe('events', () => {
  let handle: AppHandle;
  let client: ClientSmux;

  beforeAll(async () => {
    handle = await startApp({ controllers: [FirstEventsController, SecondEventsController] });
    client = handle.client();
  });
  beforeEach(() => {
    seen.length = 0;
    gate = deferred();
    gateEntered = deferred();
  });
  afterAll(closeAll);

  test('emit() delivers the event to its handler with its pattern', async () => {
    expect(await emitted(client, 'note', { x: 1 })).toBeUndefined();
    await until(() => seen.length === 1, 5_000, 'the handler');
    expect(seen).toEqual([{ by: 'first', data: { x: 1 }, pattern: 'note', headers: {} }]);
  });

  test('an object pattern, Buffer and string payloads arrive as sent', async () => {
    await emitted(client, { kind: 'object-event' }, Buffer.from([1, 2, 3]));
    await emitted(client, 'note', 'just text');
    await until(() => seen.length === 2, 5_000, 'both handlers');
    const byPattern = new Map(seen.map((s) => [s.pattern, s.data]));
    const bytes = byPattern.get('{"kind":"object-event"}');
    expect(Buffer.isBuffer(bytes)).toBe(true);
    expect([...(bytes as Buffer)]).toEqual([1, 2, 3]);
    expect(byPattern.get('note')).toBe('just text');
  });

  test('a loop of awaited emits lets the event loop run: timers fire, replies are read', async () => {
    // The socket takes an event's bytes at once while the kernel has room: were emit() settled in the same turn,
    // such a loop would never yield (the soak script hit it: keep-alive starved, connections dropped).
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const end = Date.now() + 300;
    let sent = 0;
    while (Date.now() < end) {
      await lastValueFrom(client.emit('note', { n: sent++ }), { defaultValue: undefined });
    }
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(10); // ≈ 60 when the loop yields; 0–3 when it does not
  });

  test('every handler of a pattern runs (two controllers with @EventPattern("same"))', async () => {
    await emitted(client, 'same', 7);
    await until(() => seen.length === 2, 5_000, 'both handlers of "same"');
    expect(seen.map((s) => s.by).sort()).toEqual(['first', 'second']);
    expect(seen.every((s) => s.data === 7)).toBe(true);
  });

  test('headers reach event handlers (record builder and dispatch hook)', async () => {
    await emitted(client, 'note', new SmuxRecordBuilder('h').setHeaders({ trace: 'abc' }).build());
    const hooked = handle.client();
    hooked.setOnDispatchHook((packet) => {
      (packet as { metadata?: Record<string, string> }).metadata = { tenant: 't1' };
    });
    await emitted(hooked, 'note', 'm');
    await until(() => seen.length === 2, 5_000, 'both events');
    expect(seen.find((s) => s.data === 'h')?.headers).toEqual({ trace: 'abc' });
    expect(seen.find((s) => s.data === 'm')?.headers).toEqual({ tenant: 't1' });
  });

  test('emit() completes once flushed, without waiting for the handler (at most once)', async () => {
    await emitted(client, 'slow', 'payload');
    await within(gateEntered.promise, 'the slow handler to start');
    expect(seen).toEqual([]); // the handler is still waiting on the gate
    gate.resolve();
    await until(() => seen.length === 1, 5_000, 'the slow handler to finish');
    expect(seen[0]).toMatchObject({ by: 'slow', data: 'payload' });
  });

  test('many events in a row all arrive; calls keep working alongside', async () => {
    await Promise.all(Array.from({ length: 200 }, (_, i) => emitted(client, 'note', i)));
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    await until(() => seen.length === 200, 5_000, '200 events');
    expect(seen.map((s) => s.data).sort((a, b) => (a as number) - (b as number))).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  test('events leave no streams behind on either side', async () => {
    await Promise.all(Array.from({ length: 20 }, (_, i) => emitted(client, 'note', i)));
    await until(() => seen.length === 20, 5_000, '20 events');
    const serverSession = handle.sessions[0];
    await until(
      () => serverSession.numStreams === 1 && client.unwrap<Session>().numStreams === 1,
      5_000,
      'no streams open but the control stream',
    );
  });

  test('an event handler that throws, at once or later, is logged on the server: no unhandled rejection, not fatal', async () => {
    loggedErrors.length = 0;
    const unhandled: unknown[] = [];
    const listener = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', listener);
    try {
      await emitted(client, 'throws', 'sync');
      await emitted(client, 'throws', 'later');
      const logged = (text: string): boolean => loggedErrors.some((args) => String(args[0]).includes(text));
      await until(() => logged('failed at once') && logged('failed later'), 5_000, 'both errors logged');
      expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    } finally {
      process.off('unhandledRejection', listener);
    }
    expect(unhandled).toEqual([]);
  });

  test('an event without a handler is logged on the server, not fatal — rate-limited: a flood of them is not a flood of lines', async () => {
    loggedErrors.length = 0;
    await emitted(client, 'nobody-listens', {});
    await until(() => loggedErrors.some((args) => String(args[0]).includes('Event pattern: nobody-listens')), 5_000, 'the error log');
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    // Found by a hostile-peer trial: 5 000 such events made 5 000 ERROR lines. Now 5 per 10 s, then a count.
    const before = handle.server.metrics.snapshot().events.received;
    await Promise.all(Array.from({ length: 200 }, () => emitted(client, 'nobody-listens', {})));
    await until(() => handle.server.metrics.snapshot().events.received >= before + 200, 5_000, 'the events to arrive');
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(loggedErrors.filter((args) => String(args[0]).includes('Event pattern: nobody-listens')).length).toBe(5);
  });
});

describe('events and processing hooks', () => {
  afterAll(closeAll);

  test('a start hook that calls done() twice runs the event handlers once (at most once)', async () => {
    const handle = await startApp({ controllers: [FirstEventsController] });
    const seconds: Array<Promise<unknown>> = [];
    handle.server.setOnProcessingStartHook((_t, _ctx, done) => {
      void done();
      seconds.push(done());
    });
    const client = handle.client();
    seen.length = 0;
    await lastValueFrom(client.emit('note', 'once'), { defaultValue: undefined });
    await until(() => seen.length > 0, 5_000, 'the event');
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong'); // the event's handler has had its turn
    await Promise.all(seconds);
    expect(seen.filter((s) => s.data === 'once')).toHaveLength(1);
  });
});
