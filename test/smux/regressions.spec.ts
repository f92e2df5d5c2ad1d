import net from 'node:net';
import { afterEach, describe, expect, jest, test } from '@jest/globals';
import { Session, type SmuxError, systemClock } from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { closed, until } from '../helpers/net.js';
import { cleanup, collect, type Collected, pair, pattern, quiet, settle, track, watchUncaught } from '../helpers/sessions.js';

/*
 * Regression tests for the review's session and clock findings: each one is named after the failure it
 * prevents, and failed before the fix.
 */

let guard: ReturnType<typeof watchUncaught> | null = null;

afterEach(async () => {
  guard?.dispose();
  guard = null;
  jest.useRealTimers();
  await cleanup();
});

/** A TCP peer that reads everything, sees our EOF and never closes its side (as Go does not react to EOF). */
async function stubbornPeer(): Promise<{ socket: net.Socket; peer: { ended: boolean; bytes: number; closed: boolean } }> {
  const peer = { ended: false, bytes: 0, closed: false };
  const listener = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const socket = track(net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1'));
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const remote = track(await accepted);
  listener.close();
  remote.on('data', (chunk: Buffer) => void (peer.bytes += chunk.length));
  remote.on('end', () => void (peer.ended = true));
  remote.on('close', () => void (peer.closed = true));
  remote.on('error', () => undefined);
  return { socket, peer };
}

describe('regressions: graceful close', () => {
  test('close() with v2 data held back by the peer window does not truncate it nor write after end: the reading peer gets all 1 MiB', async () => {
    guard = watchUncaught();
    const { client, server } = await pair({ version: 2 });
    const got: Collected[] = [];
    server.on('stream', (s) => got.push(collect(s)));
    const stream = quiet(await client.openStream());
    const streamError = collect(stream);
    const big = pattern(1 << 20, 5); // four times the peer's initial 256 KiB window
    stream.end(big);
    const clientClosed = closed(client);
    await client.close();
    await until(() => got.length === 1 && (got[0].ended || got[0].error !== null), 10_000, 'EOF or an error at the peer');
    expect({ bytes: got[0].bytes, ended: got[0].ended, error: got[0].error?.message ?? null }).toEqual({
      bytes: big.length,
      ended: true,
      error: null,
    });
    expect(got[0].data().equals(big)).toBe(true);
    expect(await clientClosed).toBeUndefined(); // not 'write after end'
    expect(streamError.error).toBeNull();
    await settle(20);
    expect(guard.errors).toEqual([]);
  });

  test('a closed session writes nothing after end (no keep-alive NOP): against a peer that never closes, it closes without error at keepAliveTimeout', async () => {
    const clock = new FakeClock();
    const { socket, peer } = await stubbornPeer();
    const session = track(Session.client(socket, { version: 2, clock, keepAliveInterval: 100, keepAliveTimeout: 1_000 }));
    const closeEvents: Array<SmuxError | undefined> = [];
    session.on('close', (error) => void closeEvents.push(error));
    await session.close();
    await until(() => peer.ended, 5_000, 'our FIN at the peer');
    // Ten keep-alive intervals pass while we linger: a NOP written now would fail with 'write after end'.
    for (let i = 0; i < 9; i++) {
      clock.advance(100);
      await settle(5, 2);
    }
    clock.advance(99);
    await settle(20);
    expect(closeEvents).toEqual([]);
    expect(session.error).toBeNull();
    clock.advance(1); // keepAliveTimeout: the peer that never closes is cut off, quietly
    await until(() => closeEvents.length > 0, 5_000, "the session's 'close'");
    expect(closeEvents).toEqual([undefined]);
    expect(session.error).toBeNull();
  });
});

describe('regressions: systemClock', () => {
  test('a timer beyond 2^31 - 1 ms does not fire after 1 ms (Node overflow) but when due, and clearTimeout cancels it', () => {
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask', 'performance'] });
    const long = 2 ** 31 + 5;
    let fired = 0;
    systemClock.setTimeout(() => void fired++, long);
    jest.advanceTimersByTime(10);
    expect(fired).toBe(0);
    jest.advanceTimersByTime(long - 11);
    expect(fired).toBe(0); // 1 ms early
    jest.advanceTimersByTime(1);
    expect(fired).toBe(1);

    let cancelled = 0;
    const handle = systemClock.setTimeout(() => void cancelled++, long);
    jest.advanceTimersByTime(2 ** 31); // past the first step of the chain: the re-armed step must be cancelled too
    systemClock.clearTimeout(handle);
    jest.advanceTimersByTime(10 * long);
    expect(cancelled).toBe(0);

    let short = 0;
    systemClock.clearTimeout(systemClock.setTimeout(() => void short++, 5)); // an ordinary timer still cancels
    jest.advanceTimersByTime(10);
    expect(short).toBe(0);
  });
});
