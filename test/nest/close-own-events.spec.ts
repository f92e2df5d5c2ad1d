/**
 * A closing ServerSmux and what it sends itself over its connections (the new-user trial of 2026-12-05 10:00, items
 * left): events emitted with `connection.emit()` before `close()` are waited for within `closeTimeout`, as its own
 * calls are (d69c361), and those still unsent then fail with ERR_SMUX_SHUTTING_DOWN and are counted in the close line;
 * once `close()` began, a new call, event or byte stream on a connection fails at once with ERR_SMUX_SHUTTING_DOWN.
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
import { type AppHandle, closeAll, logLines, smuxError, startApp, until, within } from './helpers.js';

const held: Array<() => void> = []; // handlers, on either side, running until the test lets them go
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

/** The last close line logged (one app closes per test). */
function closeLine(): string | undefined {
  return logLines
    .filter((l) => l.level === 'log' && l.context === 'ServerSmux' && l.message.startsWith('Closed '))
    .map((l) => l.message)
    .at(-1);
}

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
});
