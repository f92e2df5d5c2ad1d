/**
 * A call or event that fails before any I/O — the client has no connection and fails fast with
 * ERR_SMUX_UNAVAILABLE, or its request cannot be encoded — is told on a later turn of the event loop, never inside
 * `subscribe()` / `emit()`: a loop that retries it must let I/O and timers run (background reconnection among them),
 * and rxjs `retry` must not recurse (new-user trial: `retry(10000)` overflowed the stack after ≈ 7 251 attempts; a
 * `while` loop of awaited calls made 24 039 attempts in 300 ms and never let a `setTimeout(0)` fire). Real clients
 * against a closed port, or a real ServerSmux that stopped, on 127.0.0.1.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern } from '@nestjs/microservices';
import { SpanStatusCode } from '@opentelemetry/api';
import { defer, firstValueFrom, lastValueFrom, type Observable, retry } from 'rxjs';
import { ClientSmux, type ClientSmuxOptions, type SmuxContext, smuxStub } from '../../lib/index.js';
import { tracingReady } from '../../lib/nest/tracing.js';
import { installOtel, type OtelSdk } from '../helpers/otel.js';
import { closeAll, closedPort, rejection, smuxError, startApp, trackClient, within } from './helpers.js';

afterEach(closeAll);

/** Failing attempts a loop makes before a setTimeout(0) queued at its start fires (at most 200 000: then it never did). */
async function attemptsUntilATimerFires(attempt: (n: number) => Promise<unknown>): Promise<number> {
  let fired = false;
  setTimeout(() => (fired = true), 0);
  let attempts = 0;
  while (!fired && attempts < 200_000) {
    attempts++;
    await rejection(attempt(attempts));
  }
  return attempts;
}

@Controller()
class PingController {
  @MessagePattern('ping')
  ping(): string {
    return 'pong';
  }

  @MessagePattern('who')
  who(@Ctx() ctx: SmuxContext): string {
    return ctx.getConnection().id;
  }
}

/** A client whose first attempt was refused: its calls now fail fast (the next attempt is a minute away). */
async function failingClient(options: Partial<ClientSmuxOptions> = {}): Promise<ClientSmux> {
  const client = trackClient(
    new ClientSmux({ host: '127.0.0.1', port: await closedPort(), reconnect: { initialDelay: 60_000 }, ...options }),
  );
  expect(await rejection(firstValueFrom(client.send('ping', 1)))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'));
  return client;
}

/** Everything `observable` tells one subscriber, as it comes. */
function record(observable: Observable<unknown>, seen: unknown[]) {
  return observable.subscribe({
    next: (value) => void seen.push({ next: value }),
    error: (error: unknown) => void seen.push({ error: (error as { code?: unknown }).code }),
    complete: () => void seen.push('complete'),
  });
}

/** Lets every queued microtask and process.nextTick callback run (a failure told that way would be seen by then). */
async function drainMicrotasks(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((resolve) => process.nextTick(resolve));
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const immediates = (): number => process.getActiveResourcesInfo().filter((kind) => kind === 'Immediate').length;
const unavailable = { error: 'ERR_SMUX_UNAVAILABLE' };

describe('a failure before any I/O is told on a later turn', () => {
  test('send(), a typed stub and a request JSON cannot carry: nothing inside subscribe() nor on microtasks, the error on the next turn', async () => {
    const client = await failingClient();
    const math = smuxStub<{ sum(numbers: number[]): number }>(client);
    const seen: unknown[][] = [[], [], []];
    record(client.send('ping', 1), seen[0]);
    record(math.sum([1, 2]), seen[1]);
    record(client.send('ping', { big: 1n }), seen[2]); // BigInt: the serializer refuses it before any I/O
    expect(seen).toEqual([[], [], []]); // not before subscribe() returned
    await drainMicrotasks();
    expect(seen).toEqual([[], [], []]); // nor on a microtask
    await nextTurn();
    expect(seen).toEqual([[unavailable], [unavailable], [{ error: 'ERR_SMUX_ENCODING' }]]); // once each, nothing else
    await nextTurn();
    expect(seen).toEqual([[unavailable], [unavailable], [{ error: 'ERR_SMUX_ENCODING' }]]);
    expect(client.metrics.snapshot().calls.failed).toEqual({ ERR_SMUX_UNAVAILABLE: 3, ERR_SMUX_ENCODING: 1 }); // the first call's too
  });

  test('a null or undefined pattern or data is still refused inside subscribe(), as Nest does (a mistake no retry mends)', async () => {
    const client = await failingClient();
    const seen: unknown[] = [];
    record(client.send('ping', undefined), seen);
    expect(seen).toEqual([{ error: 'ERR_SMUX_INVALID_ARGUMENT' }]);
  });

  test('emit(): the rejection is not on a microtask, it comes on the next turn', async () => {
    const client = await failingClient();
    const seen: unknown[] = [];
    record(client.emit('note', 1), seen);
    await drainMicrotasks();
    expect(seen).toEqual([]);
    await nextTurn();
    expect(seen).toEqual([unavailable]);
  });

  test("openDuplex(): 'error' is not emitted on process.nextTick, but on the next turn", async () => {
    const client = await failingClient();
    const errors: unknown[] = [];
    client.openDuplex('bytes').on('error', (error) => void errors.push((error as { code?: unknown }).code));
    await drainMicrotasks();
    expect(errors).toEqual([]);
    await nextTurn();
    expect(errors).toEqual(['ERR_SMUX_UNAVAILABLE']);
  });

  test('a server calling back a peer that serves no calls (its SmuxConnection): send() and emit() the same', async () => {
    const handle = await startApp({ controllers: [PingController] });
    const id = await firstValueFrom(handle.client().send<string>('who', 1));
    const connection = handle.server.connections.get(id)!;
    const seen: unknown[][] = [[], []];
    record(connection.send('x', 1), seen[0]);
    record(connection.emit('x', 1), seen[1]);
    await drainMicrotasks();
    expect(seen).toEqual([[], []]);
    await nextTurn();
    expect(seen).toEqual([[unavailable], [unavailable]]);
  });
});

describe('retrying a call that fails fast', () => {
  test('defer(send).pipe(retry(20000)) ends with ERR_SMUX_UNAVAILABLE after 20 001 attempts, not a RangeError', async () => {
    const client = await failingClient();
    let attempts = 0;
    const retried = defer(() => {
      attempts++;
      return client.send('ping', 1);
    }).pipe(retry(20_000));
    const error = await rejection(firstValueFrom(retried), 'the retried call'); // bounded: 5 s
    expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'));
    expect(attempts).toBe(20_001);
    expect(client.metrics.snapshot().calls.failed).toEqual({ ERR_SMUX_UNAVAILABLE: 20_002 }); // each once, the first call's too
  });

  test('a while loop of awaited send() lets a setTimeout(0) fire within a few thousand attempts', async () => {
    const client = await failingClient();
    // The old code spun all 200 000 attempts on microtasks.
    expect(await attemptsUntilATimerFires((n) => firstValueFrom(client.send('ping', n)))).toBeLessThan(10_000);
  });

  test('the same for emit()', async () => {
    const client = await failingClient();
    expect(await attemptsUntilATimerFires((n) => lastValueFrom(client.emit('note', n)))).toBeLessThan(10_000);
  });

  test('a while loop of awaited send() reaches a stopped ServerSmux once it is back: reconnection runs meanwhile', async () => {
    const port = await closedPort();
    const first = await startApp({ controllers: [PingController], server: { port } });
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, reconnect: { initialDelay: 10, maxDelay: 20 } }));
    expect(await firstValueFrom(client.send('ping', 0))).toBe('pong');
    await first.close();
    expect(await rejection(firstValueFrom(client.send('ping', 0)))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
    // The server comes back from a timer: a loop that never yields would never let it.
    let restarted: Promise<unknown> | null = null;
    setTimeout(() => {
      restarted = startApp({ controllers: [PingController], server: { port } });
    }, 20);
    let attempts = 0;
    let reply: unknown = null;
    while (reply === null && attempts < 200_000) {
      attempts++;
      reply = await firstValueFrom(client.send('ping', attempts)).catch(() => null);
    }
    expect(restarted).not.toBeNull();
    expect(reply).toBe('pong');
    await within(restarted!, 'the restarted server');
  });
});

describe('unsubscribing before the failure is told', () => {
  test('send(): nothing is delivered and nothing is left (no immediate); the failure is counted once', async () => {
    const client = await failingClient();
    const before = immediates();
    const seen: unknown[] = [];
    const subscription = record(client.send('ping', 1), seen);
    expect(immediates()).toBe(before + 1); // the failure waits for its turn, and keeps the process alive until then
    subscription.unsubscribe();
    expect(immediates()).toBe(before);
    await nextTurn();
    await nextTurn();
    expect(seen).toEqual([]);
    expect(client.metrics.snapshot().calls.failed).toEqual({ ERR_SMUX_UNAVAILABLE: 2 }); // not a cancel: it had failed
  });

  test('a request that could not be encoded: the same', async () => {
    const client = await failingClient();
    const before = immediates();
    const seen: unknown[] = [];
    const subscription = record(client.send('ping', { big: 1n }), seen);
    subscription.unsubscribe();
    expect(immediates()).toBe(before);
    await nextTurn();
    expect(seen).toEqual([]);
  });

  test('emit(): the unsubscribed result is told nothing (the event is hot: its own failure settles on the next turn)', async () => {
    const client = await failingClient();
    const seen: unknown[] = [];
    record(client.emit('note', 1), seen).unsubscribe();
    await nextTurn();
    await nextTurn();
    expect(seen).toEqual([]);
  });

  test("openDuplex() destroyed at once: no 'error', nothing left", async () => {
    const client = await failingClient();
    const before = immediates();
    const errors: unknown[] = [];
    const duplex = client.openDuplex('bytes').on('error', (error) => void errors.push(error));
    duplex.destroy();
    await new Promise((resolve) => duplex.once('close', resolve));
    expect(immediates()).toBe(before);
    await nextTurn();
    expect(errors).toEqual([]);
  });
});

describe('with tracing', () => {
  let sdk: OtelSdk;
  beforeAll(async () => {
    expect(await tracingReady()).toBe(true);
    sdk = installOtel();
  });
  afterAll(() => sdk.uninstall());

  test('a failed-fast call ends its span once, ERROR ERR_SMUX_UNAVAILABLE, also when unsubscribed before it is told', async () => {
    const client = await failingClient();
    sdk.exporter.reset();
    record(client.send('told', 1), []);
    record(client.send('untold', 1), []).unsubscribe();
    await nextTurn();
    for (const name of ['told', 'untold']) {
      const span = sdk.span(name); // exactly one
      expect(span.status).toEqual({ code: SpanStatusCode.ERROR, message: 'ERR_SMUX_UNAVAILABLE' });
    }
  });
});
