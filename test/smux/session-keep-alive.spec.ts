import { afterEach, describe, expect, test } from '@jest/globals';
import { Cmd, isSmuxError, type SmuxStream } from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { closed, until } from '../helpers/net.js';
import { cleanup, closeError, collect, pair, pattern, quiet, rawClientOf, rawServerOf } from '../helpers/sessions.js';

afterEach(cleanup);

const interval = 1_000;
const timeout = 3_000;

/** Lets the event loop poll (read what the sockets hold) and run its immediates: the keep-alive judges then. */
function afterPoll(): Promise<void> {
  return new Promise((resolve) => setTimeout(() => setImmediate(resolve), 5));
}

describe('session keep-alive (FakeClock, real sockets)', () => {
  test('a NOP goes out every keepAliveInterval, not before', async () => {
    const clientClock = new FakeClock();
    const serverClock = new FakeClock(); // never advanced: the server sends nothing on its own
    const { client, server } = await pair(
      { clock: clientClock, keepAliveInterval: interval, keepAliveTimeout: 10 * interval },
      { clock: serverClock, keepAliveInterval: interval, keepAliveTimeout: 10 * interval },
    );
    clientClock.advance(interval - 1);
    // A stream's SYN + PSH as a marker: a NOP queued before them would arrive no later than they do.
    quiet(await client.openStream()).write('m');
    await until(() => server.stats.framesIn >= 2, 5_000, 'marker frames');
    expect(server.stats.framesIn).toBe(2);
    clientClock.advance(1);
    await until(() => server.stats.framesIn === 3, 5_000, 'first NOP');
    for (let i = 1; i <= 3; i++) {
      clientClock.advance(interval);
      await until(() => server.stats.framesIn === 3 + i, 5_000, `NOP ${i + 1}`);
    }
    expect(client.stats.framesIn).toBe(0); // a NOP is never answered
  });

  test('the NOP on the wire: version byte, command 3, stream id 0, no payload', async () => {
    const clock = new FakeClock();
    const { raw } = await rawServerOf({ version: 2, clock, keepAliveInterval: interval, keepAliveTimeout: timeout });
    clock.advance(interval);
    await until(() => raw.frames.length === 1, 5_000, 'a NOP');
    expect(raw.frames[0]).toEqual({ version: 2, cmd: Cmd.NOP, streamId: 0, payload: Buffer.alloc(0) });
  });

  test('a silent peer is detected at keepAliveTimeout after the session started: ERR_SMUX_KEEPALIVE_TIMEOUT, socket closed', async () => {
    const clock = new FakeClock();
    const { raw, server } = await rawClientOf({ clock, keepAliveInterval: interval, keepAliveTimeout: timeout });
    const death = closed(server);
    for (let i = 1; i < timeout / interval; i++) {
      clock.advance(interval);
      await until(() => raw.framesFor(0, Cmd.NOP).length === i, 5_000, `our NOP ${i}`); // we keep sending ours
    }
    clock.advance(interval - 1);
    expect(server.isClosed).toBe(false);
    clock.advance(1);
    const error = await death;
    expect(isSmuxError(error, 'ERR_SMUX_KEEPALIVE_TIMEOUT')).toBe(true);
    await until(() => raw.closed, 5_000, 'raw socket closed');
  });

  test('a frame that arrived while the event loop was stalled is read before the silence is judged: no timeout', async () => {
    // The keep-alive timer and the peer's frame both came due during a stall (here: the fake clock jumps while this
    // code runs, so the server's socket is not read). The timer fires first; the frame waits in the socket.
    const clock = new FakeClock();
    const { raw, server } = await rawClientOf({ clock, keepAliveInterval: interval, keepAliveTimeout: timeout });
    raw.send(Cmd.NOP, 0);
    clock.advance(timeout + interval); // timers run now, synchronously: nothing of the socket was read yet
    expect(server.stats.framesIn).toBe(0);
    await afterPoll();
    expect(server.stats.framesIn).toBe(1);
    expect(server.isClosed).toBe(false); // the old judgement, at the timer, cut this live peer off
    clock.advance(timeout + interval); // and silence still counts after it
    await afterPoll();
    expect(server.error?.code).toBe('ERR_SMUX_KEEPALIVE_TIMEOUT');
  });

  test('detection happens between T and T + interval after the peer’s last frame', async () => {
    const clock = new FakeClock();
    const { raw, server } = await rawClientOf({ clock, keepAliveInterval: interval, keepAliveTimeout: timeout });
    clock.advance(1_500);
    const lastFrameAt = clock.now();
    raw.send(Cmd.NOP, 0);
    await until(() => server.stats.framesIn === 1, 5_000, 'the NOP');
    let diedAt = -1;
    for (let t = 0; t <= timeout + interval && diedAt < 0; t += 100) {
      clock.advance(100);
      await afterPoll(); // a silence is judged after the loop's next poll
      if (server.isClosed) diedAt = clock.now();
    }
    expect(diedAt - lastFrameAt).toBeGreaterThanOrEqual(timeout);
    expect(diedAt - lastFrameAt).toBeLessThanOrEqual(timeout + interval);
    expect(server.error?.code).toBe('ERR_SMUX_KEEPALIVE_TIMEOUT');
  });

  test('a session that paused reading itself (budget exhausted by an unread stream) is never timed out', async () => {
    const clock = new FakeClock();
    const budget = 65_536;
    const { client, server, serverSocket } = await pair(
      { keepAliveDisabled: true },
      { clock, keepAliveInterval: interval, keepAliveTimeout: timeout, maxReceiveBuffer: budget },
    );
    let accepted: SmuxStream | null = null;
    server.on('stream', (s) => (accepted = quiet(s)));
    const s = quiet(await client.openStream());
    const big = pattern(1 << 20, 8);
    s.write(big);
    await until(() => server.stats.receiveBudgetLeft <= 0 && serverSocket.isPaused(), 10_000, 'reading paused by the budget');
    for (let i = 0; i < 10 * (timeout / interval); i++) clock.advance(interval); // 10 × the timeout, peer silent
    expect(server.isClosed).toBe(false);

    const got = collect(accepted!);
    await until(() => got.bytes === big.length, 10_000, 'the data once read');
    expect(got.data().equals(big)).toBe(true);
    // Reading again: now silence counts.
    clock.advance(timeout + interval);
    await afterPoll();
    expect(server.error?.code).toBe('ERR_SMUX_KEEPALIVE_TIMEOUT');
    expect((await closeError(client))?.code).toBe('ERR_SMUX_SESSION_CLOSED'); // the peer sees the connection go
  });

  test('two healthy sessions keep each other alive across 3× the timeout of fake time', async () => {
    const clock = new FakeClock();
    const config = { clock, keepAliveInterval: interval, keepAliveTimeout: timeout };
    const { client, server } = await pair(config);
    const steps = (3 * timeout) / interval + 1;
    for (let i = 1; i <= steps; i++) {
      clock.advance(interval);
      await until(() => client.stats.framesIn === i && server.stats.framesIn === i, 5_000, `NOPs of step ${i}`);
    }
    expect([client.isClosed, server.isClosed]).toEqual([false, false]);
    server.on('stream', (st) => st.pipe(st));
    const s = quiet(await client.openStream());
    const got = collect(s);
    s.end('still alive');
    await until(() => got.ended, 5_000, 'echo');
    expect(got.data().toString()).toBe('still alive');
  });
});
