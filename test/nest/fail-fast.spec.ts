/**
 * While the client has no connection, calls fail at once with the retryable ERR_SMUX_UNAVAILABLE whose cause
 * is the last connection error (as gRPC does, and Nest's TCP client) instead of waiting out the reconnect
 * backoff; `waitForReady` makes a call wait for a connection instead, up to its deadline. Reconnecting goes
 * on in the background.
 */
import net from 'node:net';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { ClientSmux, SmuxError, SmuxRecordBuilder } from '../../lib/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import {
  closeAll,
  codeOf,
  collectLogs,
  logLines,
  rejection,
  smuxError,
  startApp,
  trackClient,
  until,
  within,
  closedPort,
} from './helpers.js';

afterEach(closeAll);

@Controller()
class PingController {
  @MessagePattern('ping')
  ping(): string {
    return 'pong';
  }
}

const call = (client: ClientSmux, data: unknown = {}) => firstValueFrom(client.send('ping', data));

describe('fail fast while there is no connection', () => {
  test('five concurrent calls to a closed port all fail within 100 ms of the refused connect, with the cause', async () => {
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: await closedPort(), timeout: 2_000 }));
    let refusedAt = 0;
    client.on('error', () => (refusedAt = performance.now()));
    const settledAt: number[] = [];
    const errors = await Promise.all(
      Array.from({ length: 5 }, () =>
        rejection(call(client)).then((error) => {
          settledAt.push(performance.now());
          return error;
        }),
      ),
    );
    for (const error of errors) {
      expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'));
      expect((error as SmuxError).retryable).toBe(true);
      expect(codeOf((error as Error).cause)).toBe('ECONNREFUSED');
    }
    expect(refusedAt).toBeGreaterThan(0);
    for (const at of settledAt) expect(at - refusedAt).toBeLessThan(100); // a bound, not a speed claim: 2 s was the old figure
  });

  test('calls after a failed attempt fail at once, not after the growing backoff, and never as ERR_SMUX_TIMEOUT', async () => {
    // The backoff is long (10 s per retry) on a fake clock that never moves: before the fix each call waited it out.
    const clock = new FakeClock();
    const client = trackClient(
      new ClientSmux({
        host: '127.0.0.1',
        port: await closedPort(),
        timeout: 2_000,
        reconnect: { initialDelay: 10_000, maxDelay: 10_000, jitter: 0 },
        smux: { clock },
      }),
    );
    let attempts = 0;
    client.on('error', () => attempts++);
    const first = await rejection(call(client));
    expect(first).toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
    for (let i = 0; i < 6; i++) {
      const error = await within(rejection(call(client)), `call ${i} to fail at once`, 1_000);
      expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'));
      expect(codeOf((error as Error).cause)).toBe('ECONNREFUSED');
    }
    // emit() fails fast the same way (at most once: nothing was sent), without dialling again.
    await expect(lastValueFrom(client.emit('note', 1))).rejects.toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
    expect(attempts).toBe(1); // the backoff was respected: one attempt for all of them
  });

  test('calls failing fast hurry the background retries: a server back up is found within a second, not after the grown backoff', async () => {
    // A migration trial: with the backoff grown to its maxDelay, calls failed for up to 5.4 s after the server was back.
    const clock = new FakeClock();
    const port = await closedPort();
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port, reconnect: { initialDelay: 10_000, maxDelay: 10_000, jitter: 0 }, smux: { clock } }),
    );
    let attempts = 0;
    client.on('error', () => attempts++);
    let connected = false;
    client.on('connect', () => (connected = true));
    expect(await rejection(call(client))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE')); // attempt 1; the retry is due in 10 s
    clock.advance(1_000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(attempts).toBe(1); // no call since: the backoff stands
    expect(await rejection(call(client))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE')); // a call: the retry comes now (1 s after)
    clock.advance(0);
    await until(() => attempts === 2, 5_000, 'the hurried attempt');
    await startApp({ controllers: [PingController], server: { port } });
    expect(await rejection(call(client))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE')); // fails fast, and hurries again
    clock.advance(999);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(attempts).toBe(2); // at most one attempt a second
    expect(connected).toBe(false);
    clock.advance(1);
    await until(() => connected, 5_000, 'the attempt a second after the last');
    expect(await call(client)).toBe('pong');
  });

  test('a call waiting for ready hurries the retries the same way: answered within a second of the server being back', async () => {
    const clock = new FakeClock();
    const port = await closedPort();
    const client = trackClient(
      new ClientSmux({
        host: '127.0.0.1',
        port,
        waitForReady: true,
        reconnect: { initialDelay: 10_000, maxDelay: 10_000, jitter: 0 },
        smux: { clock },
      }),
    );
    let attempts = 0;
    client.on('error', () => attempts++);
    const answer = firstValueFrom(client.send('ping', {}));
    await until(() => attempts === 1, 5_000, 'the first attempt to fail'); // the retry: 1 s later, not 10 s
    await startApp({ controllers: [PingController], server: { port } });
    clock.advance(999);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(attempts).toBe(1);
    clock.advance(1);
    expect(await within(answer, 'the waiting call to be answered')).toBe('pong');
  });

  test('the client keeps reconnecting in the background and serves calls again once the server is up', async () => {
    const port = await closedPort();
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, reconnect: { initialDelay: 20, maxDelay: 50 } }));
    expect(await rejection(call(client))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
    let connected = false;
    client.on('connect', () => (connected = true));
    await startApp({ controllers: [PingController], server: { port } });
    await until(() => connected, 5_000, 'the background reconnect'); // no call asked for it
    expect(await call(client)).toBe('pong');
  });

  test('waitForReady (client option): calls wait for the server to come up, then succeed', async () => {
    const port = await closedPort();
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port, waitForReady: true, reconnect: { initialDelay: 20, maxDelay: 50 } }),
    );
    let failures = 0;
    client.on('error', () => failures++);
    const waiting = Promise.all([call(client, 1), call(client, 2)]);
    await until(() => failures >= 2, 5_000, 'two failed attempts'); // the calls outlive them
    await startApp({ controllers: [PingController], server: { port } });
    expect(await within(waiting, 'the waiting calls')).toEqual(['pong', 'pong']);
  });

  test('waitForReady per call (SmuxRecordBuilder.setWaitForReady): that call waits, the others fail fast', async () => {
    const port = await closedPort();
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, reconnect: { initialDelay: 20, maxDelay: 50 } }));
    expect(await rejection(call(client))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
    const patient = call(client, new SmuxRecordBuilder({}).setWaitForReady().build());
    expect(await rejection(call(client))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE')); // still fast
    await startApp({ controllers: [PingController], server: { port } });
    expect(await within(patient, 'the patient call')).toBe('pong');
  });

  test('a waiting call whose deadline passes fails with ERR_SMUX_TIMEOUT whose cause is the last connection error', async () => {
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port: await closedPort(), waitForReady: true, reconnect: { initialDelay: 20 } }),
    );
    const error = await rejection(call(client, new SmuxRecordBuilder({}).setTimeout(300).build()));
    expect(error).toEqual(smuxError('ERR_SMUX_TIMEOUT', 'no connection: connect ECONNREFUSED'));
    expect(codeOf((error as Error).cause)).toBe('ECONNREFUSED');
  });

  test('calls waiting for a connection are bounded by maxConcurrentCalls + maxQueuedCalls: the next is refused, retryable', async () => {
    const client = trackClient(
      new ClientSmux({
        host: '127.0.0.1',
        port: await closedPort(),
        waitForReady: true,
        maxConcurrentCalls: 1,
        maxQueuedCalls: 1,
        reconnect: { initialDelay: 60_000 },
      }),
    );
    const waiting = [1, 2].map(() => call(client, new SmuxRecordBuilder({}).setTimeout(2_000).build()).catch((error: unknown) => error));
    const refused = await rejection(call(client));
    expect(refused).toEqual(smuxError('ERR_SMUX_LIMIT', '2 calls wait for a connection (maxConcurrentCalls 1 + maxQueuedCalls 1)'));
    expect((refused as SmuxError).retryable).toBe(true); // never sent
    await client.close();
    for (const error of await Promise.all(waiting)) expect(error).toBeInstanceOf(SmuxError);
  });

  test('connect() rejects with ERR_SMUX_UNAVAILABLE and its cause; failures are logged once per burst, not per call', async () => {
    collectLogs();
    logLines.length = 0;
    const port = await closedPort();
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, reconnect: { initialDelay: 5_000 } }));
    const error = await rejection(client.connect());
    expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'));
    for (let i = 0; i < 20; i++) await rejection(call(client));
    const warnings = logLines.filter((l) => l.context === 'ClientSmux' && l.level === 'warn');
    expect(warnings).toEqual([
      {
        level: 'warn',
        context: 'ClientSmux',
        message: `Could not connect to 127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port} (retrying in the background)`,
      },
    ]);
  });
});

describe('what an outage logs', () => {
  test('one warning per outage, however many attempts fail; the success that ends it says how many did', async () => {
    collectLogs();
    logLines.length = 0;
    const port = await closedPort();
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, reconnect: { initialDelay: 20, maxDelay: 40 } }));
    let attempts = 0;
    client.on('error', () => attempts++);
    expect(await rejection(call(client))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
    await until(() => attempts >= 6, 5_000, 'the background retries to fail a few times');
    let connected = false;
    client.on('connect', () => (connected = true));
    await startApp({ controllers: [PingController], server: { port } });
    await until(() => connected, 5_000, 'the reconnect');
    const lines = logLines.filter((l) => l.context === 'ClientSmux' && (l.level === 'warn' || l.level === 'log'));
    expect(lines).toEqual([
      {
        level: 'warn',
        context: 'ClientSmux',
        message: expect.stringMatching(/^Could not connect to .*ECONNREFUSED.*\(retrying in the background\)$/),
      },
      {
        level: 'log',
        context: 'ClientSmux',
        message: expect.stringMatching(/^Connected to 127\.0\.0\.1:\d+ after \d+ failed attempts over \d+\.\d s$/),
      },
    ]);
    const failed = Number(/after (\d+) failed/.exec(lines[1].message)![1]);
    expect(failed).toBeGreaterThanOrEqual(6);
    // The repeats are debug lines (rate-limited on their own: 5 per 10 s).
    expect(logLines.filter((l) => l.level === 'debug' && l.message.startsWith('Could not connect')).length).toBe(Math.min(5, failed - 1));
  });
});

describe('after a failed attempt, calls fail fast also while the background retries run', () => {
  test('a server that accepts TCP and never answers: the first call waits for the hello timeout, the next ones do not', async () => {
    const silent = net.createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as net.AddressInfo;
    const sockets: net.Socket[] = [];
    silent.on('connection', (socket) => sockets.push(socket));
    try {
      const client = trackClient(
        new ClientSmux({ host: '127.0.0.1', port, connectTimeout: 400, reconnect: { initialDelay: 0, maxDelay: 0 } }),
      );
      const first = await rejection(call(client));
      expect(first).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'did not answer the nestjs-smux hello within 400 ms'));
      // Retries run at once, again and again (backoff 0): each waits 400 ms for its hello. Calls meanwhile fail fast.
      for (let i = 0; i < 5; i++) {
        const started = performance.now();
        expect(await rejection(call(client))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
        expect(performance.now() - started).toBeLessThan(200); // a bound well under the 400 ms hello, not a speed claim
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  test('a call waiting for ready keeps the process alive (our timers are unref’d, and a backoff has no socket)', async () => {
    const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
    const before = timers();
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port: await closedPort(), waitForReady: true, reconnect: { initialDelay: 60_000 } }),
    );
    // (No helper with its own ref'd timer here: the count would see it.)
    const waiting = call(client, new SmuxRecordBuilder({}).setTimeout(1_000).build()).catch((error: unknown) => error);
    await until(() => timers() > before, 2_000, 'a handle that keeps the process alive');
    expect(await waiting).toEqual(smuxError('ERR_SMUX_TIMEOUT'));
    await client.close();
    expect(timers()).toBeLessThanOrEqual(before); // released once nothing waits
  });
});
