/**
 * `peerFinWriteTimeout` (issue 9, finding 7): in v2, data that waits for the peer's window after the peer's FIN
 * fails the stream after a bounded time without a UPD, instead of waiting for ever (a peer that closed its end —
 * Go's `Close`, or the newest Go's finalizer of an accepted stream — drops our data and never opens the window
 * again). In-memory session pairs on a fake clock; a raw peer for the second FIN.
 */
import { Duplex } from 'node:stream';
import { afterEach, describe, expect, test } from '@jest/globals';
import {
  Cmd,
  INITIAL_PEER_WINDOW,
  Session,
  type SmuxChannel,
  type SmuxChannelHandler,
  type SmuxConfig,
  SmuxError,
} from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { encodeFrame, readHeader } from '../helpers/frames.js';
import { flush, memoryPair, memorySessions } from '../helpers/memory-pair.js';

const MiB = 1024 * 1024;
const sessions: Array<{ close(): void }> = [];
afterEach(() => {
  for (const s of sessions.splice(0)) s.close();
});

/** A channel handler that records what happens to the channel. */
function recorder(): SmuxChannelHandler & { ended: boolean; closed: boolean; error: SmuxError | undefined; bytes: number } {
  const r = {
    ended: false,
    closed: false,
    error: undefined as SmuxError | undefined,
    bytes: 0,
    onData: (data: Buffer) => void (r.bytes += data.length),
    onEnd: () => void (r.ended = true),
    onClose: (error?: SmuxError) => {
      r.closed = true;
      r.error = error;
    },
  };
  return r;
}

/**
 * A v2 pair where the client writes `bytes` on a stream the server accepts and reads only one PSH payload per
 * `readOne()` (or none), then ends (FIN) — a peer that is done sending and may or may not still read.
 */
async function stalledAfterFin(config: Partial<SmuxConfig> = {}, bytes = MiB) {
  const pair = memorySessions({ version: 2, ...config });
  sessions.push(pair);
  const { client, server, clock } = pair;
  let accepted: SmuxChannel | null = null;
  const atServer = recorder();
  server.on('channel', (ch) => {
    accepted = ch;
    ch.setHandler({ ...atServer, onData: (d) => (atServer.onData(d), ch.pause()) }); // one chunk per resume()
    ch.pause();
  });
  const mine = recorder();
  const channel = client.openChannel(mine);
  channel.write(Buffer.alloc(bytes, 1));
  await flush();
  expect(accepted).not.toBeNull();
  accepted!.end(); // the peer's FIN: its direction is done
  await flush();
  expect(mine.ended).toBe(true);
  const readOne = async (): Promise<void> => {
    accepted!.resume();
    await flush();
  };
  return { client, server, clock, channel, mine, atServer, readOne };
}

describe('peerFinWriteTimeout (v2)', () => {
  test('data held back by the window after the peer’s FIN fails the stream after 5000 ms (the default), releasing the queued bytes', async () => {
    const { client, clock, channel, mine } = await stalledAfterFin();
    expect(channel.writableLength).toBe(MiB - INITIAL_PEER_WINDOW); // ≈ 768 KiB queued behind the closed window
    expect(client.config.peerFinWriteTimeout).toBe(5000);
    clock.advance(4999);
    await flush();
    expect(mine.closed).toBe(false);
    clock.advance(1);
    await flush();
    expect(mine.error).toBeInstanceOf(SmuxError);
    expect(mine.error).toMatchObject({ code: 'ERR_SMUX_TIMEOUT' });
    expect(mine.error!.message).toContain('peerFinWriteTimeout');
    expect([channel.writableLength, client.numStreams]).toEqual([0, 0]);
    expect(client.isClosed).toBe(false); // only the stream fails
  });

  test('a peer that keeps reading after its FIN (UPDs, even while the window stays closed) is not cut off; one that stops is', async () => {
    const { clock, channel, mine, atServer, readOne } = await stalledAfterFin();
    for (let i = 0; i < 4; i++) {
      clock.advance(4000);
      await readOne(); // one 32 KiB frame consumed: a UPD, but 256 KiB in flight still exceed the 64 KiB window
      await flush();
      expect(mine.closed).toBe(false);
    }
    expect(atServer.bytes).toBe(4 * 32_768);
    expect(channel.writableLength).toBe(MiB - INITIAL_PEER_WINDOW); // the window never opened: nothing more was sent
    clock.advance(4999);
    await flush();
    expect(mine.closed).toBe(false);
    clock.advance(1);
    await flush();
    expect(mine.error).toMatchObject({ code: 'ERR_SMUX_TIMEOUT' });
  });

  test('a write made after the peer’s FIN that the window then holds back fails the same way', async () => {
    const { clock, channel, mine, readOne } = await stalledAfterFin({}, 16);
    await readOne(); // the 16 bytes: nothing is queued any more, the stream is fine
    clock.advance(60_000);
    await flush();
    expect([mine.closed, channel.writableLength]).toEqual([false, 0]);
    channel.write(Buffer.alloc(MiB, 2)); // the peer reads nothing more
    await flush();
    expect(channel.writableLength).toBeGreaterThan(0);
    clock.advance(5000);
    await flush();
    expect(mine.error).toMatchObject({ code: 'ERR_SMUX_TIMEOUT' });
    expect(channel.writableLength).toBe(0);
  });

  test('once the window opens and everything went out, nothing fails: the stream completes cleanly', async () => {
    const { clock, channel, mine, atServer, readOne } = await stalledAfterFin({}, 300_000);
    for (let i = 0; i < 20 && atServer.bytes < 300_000; i++) {
      clock.advance(3000);
      await readOne();
    }
    expect(atServer.bytes).toBe(300_000);
    expect(channel.writableLength).toBe(0);
    channel.end();
    await flush();
    clock.advance(60_000);
    await flush();
    expect(mine).toMatchObject({ closed: true, error: undefined });
  });

  test('0 waits for ever (Go ≥ 1.5.54’s behaviour)', async () => {
    const { clock, channel, mine } = await stalledAfterFin({ peerFinWriteTimeout: 0 });
    clock.advance(3_600_000);
    await flush();
    expect(mine.closed).toBe(false);
    expect(channel.writableLength).toBe(MiB - INITIAL_PEER_WINDOW);
  });

  test('without the peer’s FIN a closed window is only backpressure: it never fails the stream', async () => {
    const pair = memorySessions({ version: 2 });
    sessions.push(pair);
    pair.server.on('channel', (ch) => ch.pause()); // accepted, never read, never ended
    const mine = recorder();
    const channel = pair.client.openChannel(mine);
    channel.write(Buffer.alloc(MiB, 1));
    await flush();
    pair.clock.advance(3_600_000);
    await flush();
    expect(mine.closed).toBe(false);
    expect(channel.writableLength).toBe(MiB - INITIAL_PEER_WINDOW);
  });

  test('with the window open and the socket holding our bytes back, the peer is not blamed: no timeout until it drains', async () => {
    // A socket that takes writes but does not complete them while `blocked` (1 KiB high-water mark: the writer sees
    // backpressure after its first batch); the peer behind it only sends a FIN (pushed as the socket's input).
    const clock = new FakeClock();
    const held: Array<() => void> = [];
    let blocked = true;
    let received = 0;
    const socket = new Duplex({
      writableHighWaterMark: 1024,
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        received += chunk.length;
        if (blocked) held.push(callback);
        else callback();
      },
    });
    const client = Session.client(socket, { version: 2, keepAliveDisabled: true, clock, maxFrameSize: 1024, peerFinWriteTimeout: 1000 });
    sessions.push({ close: () => client.destroy() });
    const mine = recorder();
    const channel = client.openChannel(mine);
    channel.write(Buffer.alloc(200 * 1024, 1)); // within the 256 KiB initial window: only the socket holds it back
    await flush();
    expect(held.length).toBeGreaterThan(0);
    expect(channel.writableLength).toBeGreaterThan(0);
    socket.push(encodeFrame(2, Cmd.FIN, channel.id)); // the peer is done sending; the watch starts
    await flush();
    expect(mine.ended).toBe(true);
    for (let i = 0; i < 10; i++) {
      clock.advance(500); // 5 × peerFinWriteTimeout in all
      await flush();
    }
    expect([mine.closed, mine.error]).toEqual([false, undefined]);
    blocked = false;
    for (const callback of held.splice(0)) callback();
    for (let i = 0; i < 50 && channel.writableLength > 0; i++) await flush(1);
    expect(channel.writableLength).toBe(0);
    expect(received).toBeGreaterThan(200 * 1024);
    expect(mine.closed).toBe(false);
  });
});

describe('a second FIN from the peer', () => {
  /** A client session whose peer is a hand-driven raw end of an in-memory pair. */
  function rawPeer(version: 1 | 2) {
    const clock = new FakeClock();
    const [c, s] = memoryPair();
    const client = Session.client(c, { version, keepAliveDisabled: true, clock });
    sessions.push({ close: () => client.destroy() });
    const received: number[] = [];
    let pending = Buffer.alloc(0);
    s.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 8) {
        const h = readHeader(pending);
        if (pending.length < 8 + h.length) break;
        received.push(h.cmd);
        pending = pending.subarray(8 + h.length);
      }
    });
    return { client, send: (cmd: number, id: number) => s.write(encodeFrame(version, cmd, id)), received };
  }

  test('v2: it fails a stream with queued data at once with ERR_SMUX_STREAM_CLOSED (Go’s Close after CloseWrite)', async () => {
    const { client, send } = rawPeer(2);
    const mine = recorder();
    const channel = client.openChannel(mine);
    channel.write(Buffer.alloc(MiB, 1));
    await flush();
    send(Cmd.FIN, channel.id); // CloseWrite: the peer may still read
    await flush();
    expect([mine.ended, mine.closed]).toEqual([true, false]);
    send(Cmd.FIN, channel.id); // Close: it is gone
    await flush();
    expect(mine.error).toMatchObject({ code: 'ERR_SMUX_STREAM_CLOSED' });
    expect([channel.writableLength, client.numStreams]).toEqual([0, 0]);
  });

  test('v2 with nothing queued, and v1 (no windows), a second FIN changes nothing', async () => {
    for (const version of [1, 2] as const) {
      const { client, send } = rawPeer(version);
      const mine = recorder();
      const channel = client.openChannel(mine);
      channel.write(Buffer.alloc(version === 1 ? MiB : 100, 1));
      await flush();
      send(Cmd.FIN, channel.id);
      send(Cmd.FIN, channel.id);
      await flush();
      expect([version, mine.ended, mine.closed]).toEqual([version, true, false]);
    }
  });
});
