import net from 'node:net';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, Observable } from 'rxjs';
import { ClientSmux, type Session, type SmuxContext, SmuxError } from '../../lib/index.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { closeAll, logLines, rejection, startApp, trackClient, within } from './helpers.js';

/*
 * Dead peers: a connection that goes silent without closing (a half-open path: the proxy stops forwarding both
 * ways and closes nothing). Keep-alive detects it between T and T + interval after the last frame that
 * arrived (T = keepAliveTimeout), on either side. The windows are checked with real time and wide margins: a
 * lower bound (never before T) and a generous upper bound — not a speed assertion.
 */

/** keepAliveTimeout and keepAliveInterval of the side under test, ms. */
const T = 1_000;
const INTERVAL = 250;
/** Slack above T + interval for a loaded machine (timers run late, never early). */
const MARGIN = 1_500;
/** performance.now() and timer rounding: a timer may fire a fraction of a millisecond "early" against it. */
const EPSILON = 5;

const running = new Map<string, AbortSignal>();

@Controller()
class DeadPeerController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
  }

  /** Never answers; its running calls are tracked until their signal aborts. */
  @MessagePattern('never')
  never(@Payload() tag: string, @Ctx() ctx: SmuxContext) {
    return new Observable<never>(() => {
      running.set(tag, ctx.signal);
      ctx.signal.addEventListener('abort', () => running.delete(tag), { once: true });
      return () => running.delete(tag);
    });
  }
}

/** Resolves with when (performance.now()) and why the session closed. */
function closeOf(session: Session): Promise<{ at: number; error: SmuxError | undefined }> {
  return new Promise((resolve) => session.once('close', (error) => resolve({ at: performance.now(), error })));
}

/** With DEAD_PEERS_REPORT set, prints how long each detection took (for the figures in a report). */
function report(what: string, silentMs: number): void {
  if (process.env['DEAD_PEERS_REPORT'] !== undefined)
    process.stdout.write(`dead peers: ${what} after ${silentMs.toFixed(1)} ms of silence\n`);
}

/** Waits (polling every 10 ms, bounded) until `predicate()` holds. */
async function eventually(predicate: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('dead peers: silent (half-open) connections are detected by keep-alive', () => {
  let proxy: FaultProxy | null = null;
  afterEach(async () => {
    await proxy?.close();
    proxy = null;
    await closeAll();
    running.clear();
  });

  test('the client detects a silent connection between T and T + interval; every call on it fails with ERR_SMUX_KEEPALIVE_TIMEOUT', async () => {
    const handle = await startApp({ controllers: [DeadPeerController] }); // the server's keep-alive: 30 s, out of the way
    proxy = await FaultProxy.start(handle.port, { seed: 1, plan: null });
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port: proxy.port, smux: { version: 2, keepAliveInterval: INTERVAL, keepAliveTimeout: T } }),
    );
    expect(await firstValueFrom(client.send('echo', 'alive'))).toBe('alive');
    const session = client.unwrap<Session>();
    const closed = closeOf(session);

    const calls = ['a', 'b', 'c', 'd', 'e'].map((tag) => rejection(firstValueFrom(client.send('never', tag)), `call ${tag}`));
    await eventually(() => running.size === 5, 'the five calls to run on the server');
    proxy.silence();
    // A call made after the path died goes out on the same (not yet detected) connection and fails with it.
    const late = rejection(firstValueFrom(client.send('never', 'late')), 'the late call');

    const { at, error } = await within(closed, 'the client to detect the dead connection', T + INTERVAL + MARGIN + 1_000);
    const silentFor = at - proxy.lastForwardAt.down; // since the last byte the client was handed
    report(`the client (T ${T} ms, interval ${INTERVAL} ms) detected the dead connection`, silentFor);
    expect(error).toBeInstanceOf(SmuxError);
    expect(error!.code).toBe('ERR_SMUX_KEEPALIVE_TIMEOUT');
    expect(silentFor).toBeGreaterThanOrEqual(T - EPSILON);
    expect(silentFor).toBeLessThanOrEqual(T + INTERVAL + MARGIN);

    for (const error of await Promise.all([...calls, late])) {
      expect(error).toBeInstanceOf(SmuxError);
      expect((error as SmuxError).code).toBe('ERR_SMUX_KEEPALIVE_TIMEOUT');
    }
    expect(session.numStreams).toBe(0);
    expect(logLines.some((l) => l.context === 'ClientSmux' && l.level === 'warn' && /lost: no frame received for/.test(l.message))).toBe(
      true,
    );

    // The next call connects again (a new path through the proxy works).
    expect(await firstValueFrom(client.send('echo', 'again'))).toBe('again');
    expect(client.unwrap<Session>()).not.toBe(session);
  });

  test('the server detects a silent client between T and T + interval: the session closes and its calls are cancelled', async () => {
    const handle = await startApp({
      controllers: [DeadPeerController],
      server: { smux: { keepAliveInterval: INTERVAL, keepAliveTimeout: T } },
    });
    proxy = await FaultProxy.start(handle.port, { seed: 2, plan: null });
    // The client's own keep-alive is far slower: only the server's can notice in time.
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port: proxy.port, smux: { version: 2, keepAliveInterval: 10_000, keepAliveTimeout: 30_000 } }),
    );
    expect(await firstValueFrom(client.send('echo', 'alive'))).toBe('alive');
    expect(handle.sessions).toHaveLength(1);
    const serverSession = handle.sessions[0];
    const closed = closeOf(serverSession);
    const logStart = logLines.length;

    const calls = ['a', 'b', 'c'].map((tag) => rejection(firstValueFrom(client.send('never', tag)), `call ${tag}`));
    await eventually(() => running.size === 3, 'the three calls to run on the server');
    const signals = [...running.values()];
    proxy.silence();

    const { at, error } = await within(closed, 'the server to detect the dead client', T + INTERVAL + MARGIN + 1_000);
    const silentFor = at - proxy.lastForwardAt.up; // since the last byte the server was handed
    report(`the server (T ${T} ms, interval ${INTERVAL} ms) detected the silent client`, silentFor);
    expect(error).toBeInstanceOf(SmuxError);
    expect(error!.code).toBe('ERR_SMUX_KEEPALIVE_TIMEOUT');
    expect(silentFor).toBeGreaterThanOrEqual(T - EPSILON);
    expect(silentFor).toBeLessThanOrEqual(T + INTERVAL + MARGIN);

    // The handlers' work is stopped, the streams are gone, and the server says what happened.
    for (const signal of signals) {
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBeInstanceOf(SmuxError);
    }
    expect(running.size).toBe(0);
    expect(serverSession.numStreams).toBe(0);
    await eventually(
      () =>
        logLines
          .slice(logStart)
          .some((l) => l.context === 'ServerSmux' && l.level === 'warn' && /Lost the connection from .*no frame received/.test(l.message)),
      'the server to log the lost connection',
    );

    // The client's calls end once its connection is really gone (here: the proxy goes away).
    await proxy.close();
    for (const error of await Promise.all(calls)) {
      expect(error).toBeInstanceOf(SmuxError);
      expect((error as SmuxError).code).toBe('ERR_SMUX_SESSION_CLOSED');
    }
  });

  test('a connection that never sends a byte is closed by the server after T', async () => {
    const handle = await startApp({
      controllers: [DeadPeerController],
      server: { smux: { keepAliveInterval: INTERVAL, keepAliveTimeout: T } },
    });
    // Timed from the server's accept (its keep-alive starts at or after it): the client's 'connect' callback can run
    // a few ms after the server accepted, which made a loaded run see 993 ms for a timeout of 1 000.
    const accepted = new Promise<number>((resolve) =>
      handle.server.unwrap<net.Server>().once('connection', () => resolve(performance.now())),
    );
    const socket = net.connect(handle.port, '127.0.0.1');
    socket.on('error', () => undefined);
    const connectedAt = await accepted;
    const ended = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now())));
    socket.resume(); // whatever the server sends (NOPs) is read and ignored; we never answer
    const at = await within(ended, 'the server to close the silent connection', T + INTERVAL + MARGIN + 1_000);
    report('the server closed a connection that never spoke', at - connectedAt);
    expect(at - connectedAt).toBeGreaterThanOrEqual(T - EPSILON);
    expect(at - connectedAt).toBeLessThanOrEqual(T + INTERVAL + MARGIN);
    expect(handle.sessions).toHaveLength(1);
    expect(handle.sessions[0].error?.code).toBe('ERR_SMUX_KEEPALIVE_TIMEOUT');
    // The server still serves.
    const good = handle.client();
    expect(await firstValueFrom(good.send('echo', 'ok'))).toBe('ok');
  });
});
