/**
 * Calls in both directions on one connection (issue 10 §1): workers — Nest microservices on a ServerSmux with
 * `connectTo` — dial a gateway (a listening ServerSmux); the gateway calls each worker's handlers by the id the
 * worker registered (its `SmuxConnection`), and each worker calls the gateway through `server.client` over the
 * same connection. Cancellation, deadlines, streams (Observable replies, client streams, byte streams) and errors
 * work both ways; a worker that reconnects registers again through its `connect` hook and keeps its id.
 */
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller, Inject } from '@nestjs/common';
import { Ctx, EventPattern, MessagePattern, Payload, RpcException } from '@nestjs/microservices';
import { firstValueFrom, from, interval, lastValueFrom, type Observable, take, toArray } from 'rxjs';
import {
  ServerSmux,
  type ServerSmuxOptions,
  type SmuxConnection,
  type SmuxContext,
  SmuxRecordBuilder,
  type SmuxStreamedPayload,
} from '../../lib/index.js';
import { type AppHandle, closeAll, logLines, rejection, startApp, until, within } from './helpers.js';

const WORKER_ID = 'WORKER_ID';
const workers = new Map<string, SmuxConnection>(); // the gateway's registry: worker id → its connection
const aborted: string[] = []; // handlers that saw ctx.signal abort, on either side

/** What a handler left hanging does: waits for its call's signal, then records it. */
function hang(ctx: SmuxContext, who: string): Promise<never> {
  return new Promise((_resolve, reject) =>
    ctx.signal.addEventListener('abort', () => {
      aborted.push(who);
      reject(new Error('aborted'));
    }),
  );
}

@Controller()
class GatewayController {
  @MessagePattern('register')
  register(@Payload() workerId: string, @Ctx() ctx: SmuxContext): string {
    const connection = ctx.getConnection();
    connection.data['workerId'] = workerId;
    workers.set(workerId, connection);
    return connection.id;
  }

  @MessagePattern('gateway.whoami') // which connection a worker's call came on
  whoami(@Ctx() ctx: SmuxContext): unknown {
    const connection = ctx.getConnection();
    return { connection: connection.id, workerId: connection.data['workerId'] };
  }

  @MessagePattern('gateway.sum')
  async sum(@Payload() items: SmuxStreamedPayload<number>): Promise<number> {
    let total = 0;
    for await (const item of items) total += item;
    return total;
  }

  @MessagePattern('gateway.fail')
  fail(): never {
    throw new RpcException({ code: 'GATEWAY_SAYS_NO' });
  }

  @MessagePattern('gateway.hang')
  hang(@Ctx() ctx: SmuxContext): Promise<never> {
    return hang(ctx, `gateway:${String(ctx.getConnection().data['workerId'])}`);
  }

  @EventPattern<string>('gateway.done') // explicit (Nest 12's typed overload); its handler calls the worker back
  async done(@Payload() n: number, @Ctx() ctx: SmuxContext): Promise<void> {
    callbacks.push(await firstValueFrom(ctx.getConnection().send<{ value: number }>('work.double', n)).then((r) => r.value));
  }
}
const callbacks: number[] = []; // what the gateway's event handlers got back from the worker

@Controller()
class WorkerController {
  constructor(@Inject(WORKER_ID) private readonly id: string) {}

  @MessagePattern('work.double')
  double(@Payload() n: number): unknown {
    return { worker: this.id, value: n * 2 };
  }

  @MessagePattern('work.count') // an Observable reply
  count(@Payload() n: number): Observable<number> {
    return interval(1).pipe(take(n));
  }

  @MessagePattern('work.sum') // a client stream from the gateway
  async sum(@Payload() items: SmuxStreamedPayload<number>): Promise<number> {
    let total = 0;
    for await (const item of items) total += item;
    return total;
  }

  @MessagePattern('work.echo-raw') // a byte stream
  async echoRaw(@Ctx() ctx: SmuxContext): Promise<void> {
    const duplex = ctx.getDuplex();
    await pipeline(duplex, duplex);
  }

  @MessagePattern('work.fail')
  fail(): never {
    throw new RpcException({ code: 'WORKER_SAYS_NO', worker: this.id });
  }

  @MessagePattern('work.hang')
  hang(@Ctx() ctx: SmuxContext): Promise<never> {
    return hang(ctx, `worker:${this.id}`);
  }

  @EventPattern<string>('work.held') // explicit (Nest 12's typed overload); runs until the test lets it go
  async held(): Promise<void> {
    heldRunning++;
    mostHeld = Math.max(mostHeld, heldRunning);
    await new Promise<void>((resolve) => heldReleases.push(resolve));
    heldRunning--;
    heldDone++;
  }
}
let heldRunning = 0;
let mostHeld = 0;
let heldDone = 0;
const heldReleases: Array<() => void> = [];

afterEach(async () => {
  await closeAll();
  workers.clear();
  aborted.length = 0;
});

/** A worker app dialling the gateway; it registers its id whenever it (re)connects. */
async function startWorker(gateway: AppHandle, id: string, options: ServerSmuxOptions = {}): Promise<AppHandle> {
  const worker = await startApp({
    controllers: [WorkerController],
    providers: [{ provide: WORKER_ID, useValue: id }],
    server: { connectTo: { host: '127.0.0.1', port: gateway.port, reconnect: { initialDelay: 20, maxDelay: 100 } }, ...options },
  });
  const client = worker.server.client;
  // The hook: on every connection (the first and each reconnect), tell the gateway who this is.
  client.on('connect', () => void firstValueFrom(client.send('register', id)).catch(() => undefined));
  return worker;
}

describe('a gateway and 50 workers that dialled it: calls in both directions on one connection each', () => {
  test('the gateway calls each worker by id; each worker calls the gateway on the same connection', async () => {
    const gateway = await startApp({ controllers: [GatewayController] });
    const started = await Promise.all(Array.from({ length: 50 }, (_, i) => startWorker(gateway, `w${i}`)));
    await until(() => workers.size === 50, 10_000, '50 workers to register');
    expect(gateway.server.connections.size).toBe(50); // one connection per worker, not two
    expect([...workers.values()].every((c) => c.servesCalls)).toBe(true);

    // The gateway calls every worker, by id, a few times each.
    const answers = await within(
      Promise.all(
        [...workers.entries()].flatMap(([id, connection]) =>
          [1, 2, 3].map(async (n) => [id, await firstValueFrom(connection.send('work.double', n))] as const),
        ),
      ),
      'the gateway calls',
      10_000,
    );
    expect(answers).toHaveLength(150);
    for (const [id, answer] of answers) expect(answer).toMatchObject({ worker: id });

    // Each worker calls the gateway through server.client: it arrives on the connection the worker registered on.
    const seen = await within(
      Promise.all(
        started.map((worker) => firstValueFrom(worker.server.client.send<{ connection: string; workerId: string }>('gateway.whoami', {}))),
      ),
      'the workers calls',
      10_000,
    );
    for (const { connection, workerId } of seen) expect(workers.get(workerId)!.id).toBe(connection);
    expect(gateway.server.connections.size).toBe(50);
  }, 60_000);

  test('streams both ways: an Observable reply, a client stream and a byte stream from the gateway; a client stream from a worker', async () => {
    const gateway = await startApp({ controllers: [GatewayController] });
    const worker = await startWorker(gateway, 'w1');
    await until(() => workers.has('w1'), 5_000, 'the worker to register');
    const connection = workers.get('w1')!;
    expect(await firstValueFrom(connection.send<number>('work.count', 5).pipe(toArray()))).toEqual([0, 1, 2, 3, 4]);
    expect(await firstValueFrom(connection.send('work.sum', from([1, 2, 3, 4])))).toBe(10);
    const duplex = connection.openDuplex('work.echo-raw');
    const received: Buffer[] = [];
    duplex.on('data', (chunk: Buffer) => received.push(chunk));
    const payload = Buffer.alloc(300_000, 7);
    duplex.end(payload);
    await within(new Promise((resolve) => duplex.once('end', resolve)), 'the byte stream');
    expect(Buffer.concat(received).equals(payload)).toBe(true);
    expect(await firstValueFrom(worker.server.client.send('gateway.sum', from([5, 6])))).toBe(11);
  });

  test('errors both ways arrive as the handler threw them', async () => {
    const gateway = await startApp({ controllers: [GatewayController] });
    const worker = await startWorker(gateway, 'w1');
    await until(() => workers.has('w1'), 5_000, 'the worker to register');
    expect(await rejection(firstValueFrom(workers.get('w1')!.send('work.fail', 1)))).toEqual({ code: 'WORKER_SAYS_NO', worker: 'w1' });
    expect(await rejection(firstValueFrom(worker.server.client.send('gateway.fail', 1)))).toEqual({ code: 'GATEWAY_SAYS_NO' });
    // A pattern the other side has no handler for: Nest's own error (the text, as Nest's TCP transport sends it), both ways.
    const nestError = 'There is no matching message handler defined in the remote service.';
    expect(await rejection(firstValueFrom(workers.get('w1')!.send('nobody', 1)))).toEqual(nestError);
    expect(await rejection(firstValueFrom(worker.server.client.send('nobody', 1)))).toEqual(nestError);
  });

  test("cancellation and deadlines both ways: the other side's handler sees ctx.signal abort", async () => {
    const gateway = await startApp({ controllers: [GatewayController] });
    const worker = await startWorker(gateway, 'w1');
    await until(() => workers.has('w1'), 5_000, 'the worker to register');
    const connection = workers.get('w1')!;

    const fromGateway = connection.send('work.hang', 1).subscribe({ error: () => undefined });
    const fromWorker = worker.server.client.send('gateway.hang', 1).subscribe({ error: () => undefined });
    await delay(20);
    fromGateway.unsubscribe();
    fromWorker.unsubscribe();
    await until(() => aborted.length === 2, 5_000, 'both handlers to see the cancel');
    expect(aborted.sort()).toEqual(['gateway:w1', 'worker:w1']);

    const deadline = new SmuxRecordBuilder(1).setTimeout(50).build();
    expect(await rejection(firstValueFrom(connection.send('work.hang', deadline)))).toMatchObject({ code: 'ERR_SMUX_TIMEOUT' });
    expect(await rejection(firstValueFrom(worker.server.client.send('gateway.hang', deadline)))).toMatchObject({
      code: 'ERR_SMUX_TIMEOUT',
    });
    await until(() => aborted.length === 4, 5_000, 'both handlers to see their deadline');
  });

  test('a worker whose connection is lost reconnects and keeps its id through its connect hook; the old connection is gone', async () => {
    const gateway = await startApp({ controllers: [GatewayController] });
    const disconnects: string[] = [];
    gateway.server.on('disconnect', (connection) => void disconnects.push(String(connection.data['workerId'])));
    await startWorker(gateway, 'w1');
    await until(() => workers.has('w1'), 5_000, 'the worker to register');
    const first = workers.get('w1')!;
    first.unwrap<{ destroy(): void }>().destroy(); // cut: as a network failure would
    await until(() => workers.get('w1') !== first, 5_000, 'the worker to register again');
    expect(disconnects).toEqual(['w1']);
    expect(first.closed).toBe(true);
    const second = workers.get('w1')!;
    expect(second.id).not.toBe(first.id);
    expect(await firstValueFrom(second.send('work.double', 21))).toEqual({ worker: 'w1', value: 42 });
    expect(await rejection(firstValueFrom(first.send('work.double', 1)))).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE', retryable: true });
    expect(gateway.server.connections.size).toBe(1);
  });

  test('a ServerSmux with connectTo cannot also listen; a listening one has no client', async () => {
    expect(() => new ServerSmux({ connectTo: { port: 1 }, port: 2 })).toThrow(/connectTo/);
    expect(() => new ServerSmux({ connectTo: { port: 1 } }).unwrap()).toThrow(/server\.client\.unwrap/);
    expect(() => new ServerSmux({ connectTo: { port: 1 } }).on('listening', () => undefined)).toThrow(/never comes/);
    expect(() => new ServerSmux({ port: 0 }).client).toThrow(expect.objectContaining({ code: 'ERR_SMUX_UNAVAILABLE' }));
    // A bad option inside connectTo names where it is (found by a new user: "ClientSmux has no option hots").
    expect(() => new ServerSmux({ connectTo: { hots: 'x', port: 1 } as never })).toThrow(
      expect.objectContaining({
        code: 'ERR_SMUX_INVALID_CONFIG',
        message: expect.stringMatching(/^ServerSmux option connectTo: ClientSmux has no option hots \(did you mean host\?\)/),
      }),
    );
  });

  test('maxConnectionAge does not drain a peer that serves calls: the gateway keeps calling its workers (found by a new user)', async () => {
    const gateway = await startApp({ controllers: [GatewayController], server: { maxConnectionAge: 50 } });
    await Promise.all([startWorker(gateway, 'w1'), startWorker(gateway, 'w2')]);
    await until(() => workers.size === 2, 5_000, 'the workers to register');
    const before = [...workers.values()].map((c) => c.id);
    const failures: unknown[] = [];
    const deadline = Date.now() + 600; // a dozen ages
    let calls = 0;
    while (Date.now() < deadline) {
      await Promise.all(
        ['w1', 'w2'].map((id) =>
          firstValueFrom(workers.get(id)!.send('work.double', calls++)).catch((error: unknown) => void failures.push(error)),
        ),
      );
    }
    expect(failures).toEqual([]);
    expect(calls).toBeGreaterThan(20);
    expect([...workers.values()].map((c) => c.id)).toEqual(before); // the same connections throughout
  });

  test("idle eviction spares a peer that serves calls: the gateway's long call to its worker is not cut (found in review)", async () => {
    const gateway = await startApp({ controllers: [GatewayController], server: { maxConnections: 1, evictIdleAfter: 100 } });
    await startWorker(gateway, 'w1');
    await until(() => workers.has('w1'), 5_000, 'the worker to register');
    const long = firstValueFrom(workers.get('w1')!.send<number>('work.count', 600).pipe(toArray())); // ≈ 600 ms
    await delay(250); // the worker's connection has served no call of its own for longer than evictIdleAfter
    const newcomer = gateway.client();
    const refused = await rejection(firstValueFrom(newcomer.send('gateway.whoami', {})));
    expect(refused).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE' }); // the slot stays the worker's
    expect(await within(long, 'the long call')).toHaveLength(600);
  });

  test('event handlers past maxEventsPerConnection that call the worker back are answered: no deadlock', async () => {
    // Past the limit the gateway stops reading the connection, and the answers to its own calls come through it: the
    // hold waits while the gateway has calls of its own open on the connection.
    callbacks.length = 0;
    const gateway = await startApp({ controllers: [GatewayController], server: { maxEventsPerConnection: 2 } });
    const worker = await startWorker(gateway, 'w1');
    await until(() => workers.has('w1'), 5_000, 'the worker to register');
    const client = worker.server.client;
    await Promise.all(Array.from({ length: 20 }, (_, i) => lastValueFrom(client.emit('gateway.done', i), { defaultValue: undefined })));
    await until(() => callbacks.length === 20, 5_000, 'the 20 event handlers to get their answers');
    expect([...callbacks].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => 2 * i));
  });

  test('maxEventsPerConnection holds on a connection the server dialled too (its control stream is not a call of its own)', async () => {
    heldRunning = mostHeld = heldDone = 0;
    const gateway = await startApp({ controllers: [GatewayController] });
    const worker = await startApp({
      controllers: [WorkerController],
      providers: [{ provide: WORKER_ID, useValue: 'w1' }],
      server: { connectTo: { host: '127.0.0.1', port: gateway.port }, maxEventsPerConnection: 2 },
    });
    const client = worker.server.client;
    await within(firstValueFrom(client.send('register', 'w1')), 'the worker to register');
    const connection = workers.get('w1')!;
    await Promise.all(Array.from({ length: 12 }, (_, i) => lastValueFrom(connection.emit('work.held', i), { defaultValue: undefined })));
    await until(() => heldRunning === 2, 5_000, 'two held handlers');
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(heldRunning).toBe(2); // was 12: the dialled control stream counted as a call waiting for its answer
    await until(
      () => {
        for (const release of heldReleases.splice(0)) release();
        return heldDone === 12;
      },
      5_000,
      'all 12 handlers',
    );
    expect(mostHeld).toBe(2);
  });

  test('maxConnectionAge on a dialling server does not cut its own connection: a long call of its own finishes (found in review)', async () => {
    const gateway = await startApp({ controllers: [GatewayController] });
    const worker = await startApp({
      controllers: [WorkerController],
      providers: [{ provide: WORKER_ID, useValue: 'w1' }],
      server: { connectTo: { host: '127.0.0.1', port: gateway.port }, maxConnectionAge: 100 },
    });
    const slow = interval(300).pipe(take(10)); // a client stream of ≈ 3 s: past the 2 s the connection was cut at
    expect(await within(firstValueFrom(worker.server.client.send('gateway.sum', slow)), 'the long call')).toBe(45);
  });
});

/** The gateway's last `log`-level line (its close line, once closed). */
function closeLineOf(): string | undefined {
  return logLines
    .filter((l) => l.level === 'log' && l.context === 'ServerSmux' && l.message.startsWith('Closed '))
    .map((l) => l.message)
    .at(-1);
}

// Found by a new-user trial: a gateway's close waited closeTimeout for its own call to a worker (the worker, drained,
// keeps the connection until its streams end), then cut it with ERR_SMUX_SESSION_CLOSED and logged "every call finished".
describe("a gateway's close with its own calls to a worker in flight", () => {
  test('it waits closeTimeout for them like for the calls it serves, then cancels them with the retryable ERR_SMUX_SHUTTING_DOWN and says so', async () => {
    const gateway = await startApp({ controllers: [GatewayController], server: { closeTimeout: 300 } });
    await startWorker(gateway, 'w1');
    await until(() => workers.has('w1'), 5_000, 'the worker to register');
    const connection = workers.get('w1')!;
    const stuck = rejection(firstValueFrom(connection.send('work.hang', 1)), 'the call to the worker');
    const long = rejection(lastValueFrom(connection.send('work.count', 100_000)), 'the long reply');
    await delay(20);
    logLines.length = 0;
    await within(gateway.app.close(), 'the gateway to close');
    expect(await stuck).toMatchObject({ code: 'ERR_SMUX_SHUTTING_DOWN', retryable: true });
    expect(await long).toMatchObject({ code: 'ERR_SMUX_SHUTTING_DOWN', retryable: true });
    await until(() => aborted.includes('worker:w1'), 5_000, "the worker's handler to see the cancel");
    expect(closeLineOf()).toBe(
      'Closed 1 connection: 2 calls this server made itself (connection.send(), server.client) were still running and failed with ERR_SMUX_SHUTTING_DOWN',
    );
  });

  test('its own call that ends within closeTimeout completes, and the close line says every call finished', async () => {
    const gateway = await startApp({ controllers: [GatewayController], server: { closeTimeout: 5_000 } });
    await startWorker(gateway, 'w1');
    await until(() => workers.has('w1'), 5_000, 'the worker to register');
    const counted = firstValueFrom(workers.get('w1')!.send<number>('work.count', 200).pipe(toArray()));
    await delay(20);
    logLines.length = 0;
    await within(gateway.app.close(), 'the gateway to close');
    expect(await within(counted, 'the call to the worker')).toHaveLength(200);
    expect(closeLineOf()).toBe('Closed 1 connection: every call finished');
  });

  test("a worker's close does the same with its own calls (server.client) to the gateway", async () => {
    const gateway = await startApp({ controllers: [GatewayController] });
    const worker = await startWorker(gateway, 'w1', { closeTimeout: 1_000 });
    await until(() => workers.has('w1'), 5_000, 'the worker to register');
    const client = worker.server.client;
    const stuck = rejection(firstValueFrom(client.send('gateway.hang', 1)), 'the call to the gateway');
    const slow = firstValueFrom(client.send('gateway.sum', interval(100).pipe(take(3)))); // ≈ 300 ms
    await delay(20);
    logLines.length = 0;
    const closing = worker.server.close();
    expect(await within(slow, 'the call that ends in time')).toBe(3); // was ERR_SMUX_SESSION_CLOSED at once
    await within(closing, 'the worker to close');
    expect(await stuck).toMatchObject({ code: 'ERR_SMUX_SHUTTING_DOWN', retryable: true });
    await until(() => aborted.includes('gateway:w1'), 5_000, "the gateway's handler to see the cancel");
    expect(closeLineOf()).toBe(
      'Closed 1 connection: 1 call this server made itself (connection.send(), server.client) was still running and failed with ERR_SMUX_SHUTTING_DOWN',
    );
  });
});
