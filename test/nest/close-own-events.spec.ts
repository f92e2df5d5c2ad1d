/**
 * A closing ServerSmux and what it sends itself over its connections (the new-user trial of 2026-12-05 10:00, items
 * left): events emitted with `connection.emit()` before `close()` are waited for within `closeTimeout`, as its own
 * calls are (d69c361), and those still unsent then fail with ERR_SMUX_SHUTTING_DOWN and are counted in the close line;
 * once `close()` began, a new call, event or byte stream on a connection fails at once with ERR_SMUX_SHUTTING_DOWN —
 * unless a handler of a call on that connection still runs (it may be calling its caller back).
 * Real apps on 127.0.0.1: a gateway, and a worker that dials it (`connectTo`, its ClientSmux) — a peer a connection can
 * call. Where time must pass, the closing side runs on a fake clock: the old bound was the connection close's 2 s.
 */
import { once } from 'node:events';
import { pipeline } from 'node:stream/promises';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { lastValueFrom } from 'rxjs';
import type { ClientSmuxOptions, ServerSmuxOptions, SmuxConnection, SmuxContext } from '../../lib/index.js';
import type { Session } from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { type AppHandle, closeAll, logLines, rejection, smuxError, startApp, until, within } from './helpers.js';

const MiB = 1024 * 1024;
/** An event larger than a stream's window (256 KiB): past the window it waits for its peer to read. */
const BIG = MiB;

const held: Array<() => void> = []; // handlers, on either side, running until the test lets them go
const late = { outcome: undefined as unknown }; // what gw.call-back-late's call back gave
const notes: Array<{ side: string; bytes: number }> = []; // events handled
let started = 0; // calls and byte streams the worker's handlers started

/** Runs until the test lets it go. */
const hold = (): Promise<void> => new Promise((resolve) => held.push(resolve));

@Controller()
class GatewayController {
  @EventPattern<string>('gw.block') // explicit (Nest 12's typed overload)
  block(): Promise<void> {
    return hold();
  }

  @EventPattern('gw.note')
  note(@Payload() text: string): void {
    notes.push({ side: 'gateway', bytes: text.length });
  }

  /** Ignores its signal: waits until let go, then tries to call its caller back, noting the outcome. */
  @MessagePattern('gw.call-back-late')
  async callBackLate(@Payload() n: number, @Ctx() ctx: SmuxContext): Promise<void> {
    await hold();
    late.outcome = await lastValueFrom(ctx.getConnection().send<number>('work.double', n)).catch((error: unknown) => error);
  }

  /** Waits until let go, then calls its caller back and answers with what it got. */
  @MessagePattern('gw.call-back')
  async callBack(@Payload() n: number, @Ctx() ctx: SmuxContext): Promise<number> {
    await hold();
    return lastValueFrom(ctx.getConnection().send<number>('work.double', n));
  }
}

@Controller()
class WorkerController {
  @EventPattern<string>('work.block') // explicit (Nest 12's typed overload)
  block(): Promise<void> {
    return hold();
  }

  @EventPattern('work.note')
  note(@Payload() text: string): void {
    notes.push({ side: 'worker', bytes: text.length });
  }

  @MessagePattern('work.double')
  double(@Payload() n: number): number {
    started++;
    return n * 2;
  }

  @MessagePattern('work.wait')
  async wait(): Promise<string> {
    await hold();
    return 'done';
  }

  @MessagePattern('work.echo-raw')
  async echoRaw(@Ctx() ctx: SmuxContext): Promise<void> {
    started++;
    const duplex = ctx.getDuplex();
    await pipeline(duplex, duplex);
  }
}

afterEach(async () => {
  late.outcome = undefined;
  for (const release of held.splice(0)) release();
  await closeAll();
  notes.length = 0;
  started = 0;
});

/** A gateway and a worker dialling it (with `dial`'s client options), with the connection each sees of the other. */
async function gatewayAndWorker(
  gatewayOptions: ServerSmuxOptions,
  workerOptions: ServerSmuxOptions,
  dial: Partial<ClientSmuxOptions> = {},
): Promise<{ gateway: AppHandle; worker: AppHandle; toWorker: SmuxConnection; toGateway: SmuxConnection }> {
  const gateway = await startApp({ controllers: [GatewayController], server: gatewayOptions });
  const worker = await startApp({
    controllers: [WorkerController],
    server: { connectTo: { host: '127.0.0.1', port: gateway.port, ...dial }, ...workerOptions },
  });
  await until(() => gateway.server.connections.size === 1 && worker.server.connections.size === 1, 5_000, 'the worker to connect');
  const [toWorker] = gateway.server.connections.values();
  const [toGateway] = worker.server.connections.values();
  return { gateway, worker, toWorker, toGateway };
}

/** Emits an event whose handler runs until let go: at maxEventsPerConnection 1 the peer then reads nothing more. */
async function holdPeer(connection: SmuxConnection, pattern: string): Promise<void> {
  await lastValueFrom(connection.emit(pattern, 0), { defaultValue: undefined });
  await until(() => held.length === 1, 5_000, 'the held handler to run');
}

/** Whether `promise` settled yet, and how. */
function watch(promise: Promise<unknown>): { settled: boolean; error: unknown } {
  const state = { settled: false, error: undefined as unknown };
  promise.then(
    () => (state.settled = true),
    (error: unknown) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

/** Advances a fake clock in steps, letting I/O and the close's awaits run between them. */
async function advance(clock: FakeClock, ms: number): Promise<void> {
  for (let left = ms; left > 0; left -= 250) {
    clock.advance(Math.min(250, left));
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** The last close line logged (one app closes per test). */
function closeLine(): string | undefined {
  return logLines
    .filter((l) => l.level === 'log' && l.context === 'ServerSmux' && l.message.startsWith('Closed '))
    .map((l) => l.message)
    .at(-1);
}

const emitted = (connection: SmuxConnection, pattern: string, data: unknown): Promise<unknown> =>
  lastValueFrom(connection.emit(pattern, data), { defaultValue: undefined });

describe("a closing server's own events (connection.emit())", () => {
  // Protocol 1 (no stream windows: the event waits for room in the socket, more than the kernel buffers): with 2, the
  // peer's window updates raced the connection's close (closeWithin destroyed the socket with them unread), and the
  // reset dropped the event's tail in 2 runs of 24 under load (docs/NOTES.md, the entry of 2026-12-05 13:00).
  test('one its peer does not read yet is waited for within closeTimeout, past the 2 s of the connection close, and arrives', async () => {
    const clock = new FakeClock();
    const { worker, toGateway } = await gatewayAndWorker(
      { maxEventsPerConnection: 1, maxMessageBytes: 64 * MiB },
      { smux: { clock }, closeTimeout: 10_000 },
      { smux: { version: 1 } },
    );
    await holdPeer(toGateway, 'gw.block');
    const huge = 12 * MiB; // ≈ 3 × what this host's socket buffers take while the gateway does not read
    const big = emitted(toGateway, 'gw.note', 'x'.repeat(huge));
    const sent = watch(big);
    logLines.length = 0;
    const closing = worker.server.close();
    await advance(clock, 3_000);
    expect(sent).toEqual({ settled: false, error: undefined }); // was ERR_SMUX_SESSION_CLOSED at 2 s: dropped
    held.shift()!(); // the gateway reads again
    await within(big, 'the event to go out', 20_000); // 12 MiB: bounds for a loaded host
    await within(closing, 'the worker to close', 20_000);
    await until(() => notes.length === 1, 20_000, 'the gateway to handle the event');
    expect(notes).toEqual([{ side: 'gateway', bytes: huge }]);
    expect(closeLine()).toBe('Closed 1 connection: every call finished');
  });

  test('one still unsent at closeTimeout fails with the retryable ERR_SMUX_SHUTTING_DOWN, counted in the close line, and is never handled', async () => {
    const clock = new FakeClock();
    const { gateway, worker, toWorker } = await gatewayAndWorker({ smux: { clock }, closeTimeout: 1_000 }, { maxEventsPerConnection: 1 });
    await holdPeer(toWorker, 'work.block');
    const big = rejection(emitted(toWorker, 'work.note', 'x'.repeat(BIG)), 'the event');
    logLines.length = 0;
    const closing = gateway.server.close();
    await advance(clock, 3_500); // closeTimeout, then at most the connection close's 2 s
    expect(await big).toEqual(smuxError('ERR_SMUX_SHUTTING_DOWN', 'the server is shutting down')); // was ERR_SMUX_SESSION_CLOSED
    expect(await big).toMatchObject({ retryable: true });
    await within(closing, 'the gateway to close');
    expect(closeLine()).toBe(
      'Closed 1 connection: 1 event this server emitted itself (connection.emit()) was not sent yet and failed with ERR_SMUX_SHUTTING_DOWN',
    ); // was 'every call finished'
    held.shift()!(); // the worker reads on: the part of the event that went out is discarded
    await until(() => worker.server.connections.size === 0, 5_000, 'the worker to see the connection end');
    expect(notes).toEqual([]);
  });

  test('many emitted just before app.close() all arrive, and the close line says every call finished', async () => {
    const { gateway, toWorker } = await gatewayAndWorker({}, {});
    const sent = Array.from({ length: 200 }, (_, i) => emitted(toWorker, 'work.note', 'x'.repeat(i)));
    logLines.length = 0;
    await within(gateway.app.close(), 'the gateway to close');
    await within(Promise.all(sent), 'the events to go out');
    await until(() => notes.length === 200, 5_000, 'the worker to handle every event');
    expect(closeLine()).toBe('Closed 1 connection: every call finished');
  });
});

describe('once close() began', () => {
  test('a new call, event or byte stream on a connection fails with the retryable ERR_SMUX_SHUTTING_DOWN on a later turn, and the peer sees none', async () => {
    const { gateway, toWorker } = await gatewayAndWorker({ closeTimeout: 10_000 }, {});
    const waiting = lastValueFrom(toWorker.send('work.wait', 0)); // its own call in flight: the close waits for it
    await until(() => held.length === 1, 5_000, 'the call to run');
    logLines.length = 0;
    const closing = gateway.server.close();

    let inside = true; // while subscribe() / emit() / openDuplex() runs
    const failedInside: string[] = [];
    const call = new Promise<unknown>((resolve) =>
      toWorker.send('work.double', 1).subscribe({
        next: () => resolve('answered'),
        error: (error: unknown) => {
          if (inside) failedInside.push('send');
          resolve(error);
        },
      }),
    );
    const event = new Promise<unknown>((resolve) =>
      toWorker.emit('work.note', 'late').subscribe({
        complete: () => resolve('sent'),
        error: (error: unknown) => {
          if (inside) failedInside.push('emit');
          resolve(error);
        },
      }),
    );
    const duplex = toWorker.openDuplex('work.echo-raw');
    const duplexError = once(duplex, 'error').then(([error]) => error as unknown);
    inside = false;

    const shuttingDown = smuxError('ERR_SMUX_SHUTTING_DOWN', 'the server is shutting down');
    expect(await within(call, 'the call to fail')).toEqual(shuttingDown); // was answered: 2
    expect(await within(event, 'the event to fail')).toEqual(shuttingDown);
    expect(await within(duplexError, 'the byte stream to fail')).toEqual(shuttingDown);
    expect(await call).toMatchObject({ retryable: true });
    expect(failedInside).toEqual([]);

    held.shift()!(); // the call under way ends: the close goes on
    expect(await within(waiting, 'the call under way')).toBe('done');
    await within(closing, 'the gateway to close');
    expect(started).toBe(0);
    expect(notes).toEqual([]);
    expect(closeLine()).toBe('Closed 1 connection: every call finished');
  });

  test('a handler that outlives closeTimeout (it ignored its signal) and then calls back is refused as shutting down', async () => {
    const clock = new FakeClock();
    const { gateway, toGateway } = await gatewayAndWorker({ smux: { clock }, closeTimeout: 1_000 }, {});
    const reply = rejection(lastValueFrom(toGateway.send('gw.call-back-late', 21)), 'the call');
    await until(() => held.length === 1, 5_000, 'the gateway’s handler to run');
    const closing = gateway.server.close();
    await advance(clock, 3_500); // closeTimeout, then the connection close
    await within(closing, 'the gateway to close');
    expect(await reply).toMatchObject({ code: 'ERR_SMUX_SHUTTING_DOWN' });
    held.shift()!(); // the handler goes on regardless, and calls back
    await until(() => late.outcome !== undefined, 5_000, 'the call back to fail');
    expect(late.outcome).toEqual(smuxError('ERR_SMUX_SHUTTING_DOWN')); // was ERR_SMUX_UNAVAILABLE: "the connection … is closed"
  });

  test('a handler still running during the close calls its caller back: the call goes out and is answered', async () => {
    const { gateway, toGateway } = await gatewayAndWorker({ closeTimeout: 10_000 }, {});
    const reply = lastValueFrom(toGateway.send<number>('gw.call-back', 21)); // the worker calls the gateway
    await until(() => held.length === 1, 5_000, 'the gateway’s handler to run');
    logLines.length = 0;
    const closing = gateway.server.close();
    await new Promise((resolve) => setImmediate(resolve));
    held.shift()!(); // the handler calls the worker back now, during the close (was: ERR_SMUX_SHUTTING_DOWN)
    expect(await within(reply, 'the reply')).toBe(42);
    expect(started).toBe(1);
    await within(closing, 'the gateway to close');
    expect(closeLine()).toBe('Closed 1 connection: every call finished');
  });
});

describe('a peer lost with calls of this server in flight', () => {
  test('is a lost connection: a WARN naming the calls, and a disconnect with the error', async () => {
    // A worker SIGKILLed while the gateway's own call ran on it left only a debug line, and 'disconnect' without an
    // error: a client leaving is routine, but here the server's own calls were lost (a new-user trial).
    const { gateway, worker, toWorker } = await gatewayAndWorker({}, {});
    const disconnects: unknown[] = [];
    gateway.server.on('disconnect', (_connection, error) => void disconnects.push(error));
    const call = rejection(lastValueFrom(toWorker.send('work.wait', 0)), 'the call');
    await until(() => held.length === 1, 5_000, 'the call to run');
    logLines.length = 0;
    worker.server.client.unwrap<Session>().destroy(); // the worker's connection goes, as with a killed process
    expect(await call).toMatchObject({ code: 'ERR_SMUX_SESSION_CLOSED' });
    await until(() => disconnects.length === 1, 5_000, "the gateway's disconnect");
    expect(disconnects[0]).toMatchObject({ code: 'ERR_SMUX_SESSION_CLOSED' }); // was undefined
    expect(logLines.filter((l) => l.context === 'ServerSmux' && l.level === 'warn').map((l) => l.message)).toContainEqual(
      expect.stringMatching(/^Lost the connection from 127\.0\.0\.1:\d+: .* \(1 call this server made on it failed with it\)$/),
    );
  });
});
