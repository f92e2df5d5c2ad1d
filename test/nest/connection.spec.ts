import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, Observable } from 'rxjs';
import { ClientSmux, Session, type SmuxError } from '../../lib/index.js';
import { closeAll, rejection, startApp, trackClient, until, within, codeOf, smuxError, logLines, closedPort } from './helpers.js';

let probe = { subscribed: 0, teardowns: 0 };

@Controller()
class PingController {
  @MessagePattern('ping')
  ping() {
    return 'pong';
  }

  @MessagePattern('hang')
  hang() {
    return new Observable<never>(() => {
      probe.subscribed++;
      return () => void probe.teardowns++;
    });
  }
}

/** Records everything a client reports. */
function watchClient(client: ClientSmux) {
  const seen = { statuses: [] as string[], connects: [] as Session[], closes: [] as Array<SmuxError | undefined>, errors: [] as Error[] };
  client.status.subscribe((s) => void seen.statuses.push(s));
  client.on('connect', (s) => void seen.connects.push(s));
  client.on('close', (e) => void seen.closes.push(e));
  client.on('error', (e) => void seen.errors.push(e));
  return seen;
}

describe('connection life', () => {
  beforeEach(() => {
    probe = { subscribed: 0, teardowns: 0 };
  });
  afterEach(closeAll);

  test('connect() is lazy and idempotent; concurrent first calls share one connection', async () => {
    const handle = await startApp({ controllers: [PingController] });
    const client = handle.client();
    const seen = watchClient(client);
    expect(() => client.unwrap()).toThrow();
    expect(seen.statuses).toEqual([]);
    expect(handle.sessions).toHaveLength(0);

    const [a, b] = await Promise.all([client.connect(), client.connect()]);
    expect(a).toBe(b);
    expect(await client.connect()).toBe(a);
    expect(client.unwrap()).toBe(a);
    expect(a).toBeInstanceOf(Session);
    expect(a.role).toBe('client');
    await until(() => handle.sessions.length === 1, 5_000, 'the server session');

    const other = handle.client();
    const replies = await Promise.all(Array.from({ length: 25 }, () => firstValueFrom(other.send('ping', {}))));
    expect(replies.every((r) => r === 'pong')).toBe(true);
    expect(handle.sessions).toHaveLength(2);
    expect(seen.connects).toEqual([a]);
    expect(seen.statuses).toEqual(['connected']);
  });

  test('a lost connection fails every in-flight call at once with ERR_SMUX_SESSION_CLOSED; the next call reconnects', async () => {
    const handle = await startApp({ controllers: [PingController] });
    const client = handle.client();
    const seen = watchClient(client);
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    const firstSession = client.unwrap<Session>();
    expect(seen.connects).toEqual([firstSession]);

    const inFlight = Array.from({ length: 5 }, () => rejection(firstValueFrom(client.send('hang', {}))));
    await until(() => probe.subscribed === 5, 5_000, 'five calls running');
    logLines.length = 0;
    handle.sessions[0].destroy(); // the server drops the connection
    const errors = await Promise.all(inFlight);
    for (const error of errors) {
      expect(codeOf(error)).toBe('ERR_SMUX_SESSION_CLOSED');
      expect(error).toBeInstanceOf(Error);
    }
    await until(() => seen.statuses.length === 2, 5_000, 'the disconnected status');
    expect(seen.statuses).toEqual(['connected', 'disconnected']);
    expect(seen.closes).toHaveLength(1);
    expect(codeOf(seen.closes[0])).toBe('ERR_SMUX_SESSION_CLOSED');
    // Not a routine close: calls were cut off, and the client says so.
    expect(logLines.filter((l) => l.context === 'ClientSmux' && l.level === 'warn').map((l) => l.message)).toEqual([
      expect.stringMatching(/^Connection to 127\.0\.0\.1:\d+ lost: .* \(5 calls in flight failed with it\)$/),
    ]);
    expect(firstSession.isClosed).toBe(true);
    await until(() => probe.teardowns === 5, 5_000, 'the server to tear the handlers down');
    expect(() => client.unwrap()).toThrow();

    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    expect(seen.statuses).toEqual(['connected', 'disconnected', 'reconnecting', 'connected']);
    expect(seen.connects).toHaveLength(2);
    expect(seen.connects[1]).not.toBe(firstSession);
    expect(client.unwrap()).toBe(seen.connects[1]);
    expect(handle.sessions).toHaveLength(2);
  });

  test('the server goes away and comes back on the same port: calls fail clearly, then the client reconnects with backoff', async () => {
    const first = await startApp({ controllers: [PingController], server: { closeTimeout: 50 } });
    const port = first.port;
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, reconnect: { initialDelay: 50, maxDelay: 200 } }));
    const seen = watchClient(client);
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');

    // In flight while the app closes: ended by the server's graceful shutdown.
    const inFlight = Array.from({ length: 3 }, () => rejection(firstValueFrom(client.send('hang', {}))));
    await until(() => probe.subscribed === 3, 5_000, 'three calls running');
    await first.close();
    for (const error of await Promise.all(inFlight)) expect(error).toEqual(smuxError('ERR_SMUX_SHUTTING_DOWN'));
    // The server's close() sent DRAIN first: the client tried a fresh connection for new calls at once (refused:
    // nobody listens any more), and the drained connection closed once its calls were ended.
    await until(() => seen.statuses.at(-1) === 'disconnected' && seen.closes.length === 1, 5_000, 'the client to notice');

    // Nobody listens: the call fails at once, retryably, naming the connection error — not a hang.
    const refused = await rejection(firstValueFrom(client.send('ping', {})));
    expect(refused).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'));
    expect((refused as SmuxError).retryable).toBe(true);
    expect(codeOf((refused as Error).cause)).toBe('ECONNREFUSED');
    expect(codeOf(seen.errors[0])).toBe('ECONNREFUSED');

    // The client keeps retrying in the background (with backoff) and finds the server once it is back.
    const second = await startApp({ controllers: [PingController], server: { port } });
    expect(second.port).toBe(port);
    await until(() => seen.statuses.at(-1) === 'connected', 5_000, 'the background reconnect');
    expect(await within(firstValueFrom(client.send('ping', {})), 'the call after the restart')).toBe('pong');
    expect(seen.statuses.slice(0, 2)).toEqual(['connected', 'disconnected']);
    expect(seen.statuses.slice(2).join()).toMatch(/^(reconnecting,disconnected,)*reconnecting,connected$/);
    expect(seen.connects).toHaveLength(2);
    expect(second.sessions).toHaveLength(1);
  });

  test('calls to a port where nothing listens fail with the connection error', async () => {
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: await closedPort() }));
    const seen = watchClient(client);
    const errors = await Promise.all([
      rejection(firstValueFrom(client.send('ping', {}))),
      rejection(firstValueFrom(client.send('ping', {}))),
    ]);
    expect(errors).toEqual([smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'), smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED')]);
    expect(errors.map((e) => codeOf((e as Error).cause))).toEqual(['ECONNREFUSED', 'ECONNREFUSED']);
    expect(seen.errors).toHaveLength(1); // the two calls shared one attempt
    expect(seen.statuses).toEqual(['disconnected']);
    await expect(client.connect()).rejects.toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'));
    // emit() reports it too (at most once: nothing was delivered).
    await expect(lastValueFrom(client.emit('event', {}))).rejects.toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'));
  });

  test('client.close() fails its in-flight calls, cancels them on the server, and a later call connects again', async () => {
    const handle = await startApp({ controllers: [PingController] });
    const client = handle.client();
    const seen = watchClient(client);
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    const session = client.unwrap<Session>();
    const hanging = rejection(firstValueFrom(client.send('hang', {})));
    await until(() => probe.subscribed === 1, 5_000, 'the call to run');
    await client.close();
    expect(await hanging).toEqual(smuxError('ERR_SMUX_SESSION_CLOSED', 'the client was closed before the call completed'));
    expect(session.isClosed).toBe(true);
    expect(seen.statuses.at(-1)).toBe('disconnected');
    await until(() => probe.teardowns === 1, 5_000, 'the server to cancel the call');
    await until(() => handle.sessions[0].isClosed, 5_000, 'the server session to close');
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    expect(client.unwrap()).not.toBe(session);
  });

  test('close() while the first connection is being made: the attempt is dropped, calls fail, a later call connects', async () => {
    const handle = await startApp({ controllers: [PingController] });
    const client = handle.client();
    const connecting = client.connect();
    const call = rejection(firstValueFrom(client.send('ping', {})));
    await client.close();
    expect(codeOf(await rejection(connecting))).toBe('ERR_SMUX_SESSION_CLOSED');
    expect(codeOf(await call)).toBe('ERR_SMUX_SESSION_CLOSED');
    expect(() => client.unwrap()).toThrow();
    await until(() => handle.sessions.length === 1 && handle.sessions[0].isClosed, 5_000, 'the dropped connection to close on the server');
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
  });

  test('listening on a port in use fails app.listen() with EADDRINUSE', async () => {
    const handle = await startApp({ controllers: [PingController] });
    await expect(startApp({ controllers: [PingController], server: { port: handle.port } })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(await firstValueFrom(handle.client().send('ping', {}))).toBe('pong');
  });

  test('a unix socket path works instead of host and port', async () => {
    const path = join(tmpdir(), `nestjs-smux-${process.pid}-${Date.now()}.sock`);
    const handle = await startApp({ controllers: [PingController], server: { path } });
    const client = handle.client({ path });
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    expect(handle.sessions).toHaveLength(1);
  });
});
