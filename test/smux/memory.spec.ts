/**
 * Memory bounds of the core (issue 9): what an idle session holds (finding 6), measured after a full GC over
 * real TCP sessions. `--expose-gc` is turned on at run time (v8 flags) so that Jest needs no option.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import net from 'node:net';
import { once } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Cmd, Session, type SmuxChannel, type SmuxError } from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { until } from '../helpers/net.js';
import { encodeFrame } from '../helpers/frames.js';
import { flush, memoryPair, memorySessions } from '../helpers/memory-pair.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Heap and outside-heap bytes after a full GC. */
function retained(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

/** Bytes outside the JS heap (Buffers, ArrayBuffers) after a full GC. */
function external(): number {
  gc();
  gc();
  return process.memoryUsage().external;
}

const KiB = 1024;
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const fn of cleanups.splice(0)) fn();
});

/** `count` client/server session pairs over loopback TCP, keep-alive on a fake clock. */
async function tcpSessions(count: number, clock: FakeClock): Promise<{ clients: Session[]; servers: Session[] }> {
  const listener = net.createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const servers: Session[] = [];
  const clients: Session[] = [];
  const config = { version: 2 as const, clock, keepAliveInterval: 10_000, keepAliveTimeout: 30_000 };
  listener.on('connection', (socket: net.Socket) => {
    const server = Session.server(socket, { ...config, version: 'auto' });
    // Each stream is answered and ended: one small exchange, as a hello or a call.
    server.on('channel', (ch: SmuxChannel) =>
      ch.setHandler({ onData: (d) => ch.write(d), onEnd: () => ch.end(), onClose: () => undefined }),
    );
    servers.push(server);
  });
  cleanups.push(() => {
    for (const s of [...clients, ...servers]) s.destroy();
    listener.close();
  });
  const port = (listener.address() as net.AddressInfo).port;
  for (let i = 0; i < count; i++) {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    clients.push(Session.client(socket, config));
  }
  await until(() => servers.length === count, 10_000, 'every connection accepted');
  return { clients, servers };
}

describe('idle sessions (finding 6)', () => {
  test('an idle session holds no write buffer: ≤ 16 KiB outside the heap per session, before and after traffic', async () => {
    const count = 200;
    const clock = new FakeClock();
    const before = external();
    const { clients, servers } = await tcpSessions(count, clock);
    const fresh = (external() - before) / (2 * count);

    let done = 0;
    for (const client of clients) {
      const ch = client.openChannel({ onData: () => undefined, onEnd: () => done++, onClose: () => undefined });
      ch.write(Buffer.alloc(100, 1));
      ch.end();
    }
    await until(() => done === count, 10_000, 'every exchange');
    await until(() => [...clients, ...servers].every((s) => s.numStreams === 0), 10_000, 'streams to finish');
    await flush(); // the UPDs of the last reads go out at the end of the turn
    const busy = [...clients, ...servers].reduce((sum, s) => sum + s.stats.writeBufferBytes, 0) / (2 * count);
    expect(busy).toBe(16 * KiB); // a small exchange uses the smallest slab on each side

    // Keep-alive ticks: the first sees the exchange, the second releases what stayed unused since.
    for (let i = 0; i < 2; i++) {
      clock.advance(10_000);
      await flush();
    }
    expect([...clients, ...servers].every((s) => s.stats.writeBufferBytes === 0 && !s.isClosed)).toBe(true);
    const idle = (external() - before) / (2 * count);
    expect({ fresh: fresh <= 16 * KiB, idle: idle <= 16 * KiB }).toEqual({ fresh: true, idle: true });
  });
});

describe('releasing idle write buffers', () => {
  test('with keep-alive off (no timer at all) a session left without streams keeps at most one 16 KiB slab', async () => {
    const pair = memorySessions(); // keepAliveDisabled, fake clock
    cleanups.push(() => pair.close());
    const { client, server, clock } = pair;
    server.on('channel', (ch) => ch.setHandler({ onData: (d) => ch.write(d), onEnd: () => ch.end(), onClose: () => undefined }));
    let ended = 0;
    const exchange = async (bytes: number): Promise<void> => {
      const ch = client.openChannel({ onData: () => undefined, onEnd: () => ended++, onClose: () => undefined });
      ch.write(Buffer.alloc(bytes, 1));
      ch.end();
      await until(() => client.numStreams === 0 && server.numStreams === 0, 10_000, 'the exchange');
      await flush();
    };
    await exchange(1 << 20); // a bulk echo grows both writers' slabs
    expect(ended).toBe(1);
    expect([client.stats.writeBufferBytes, server.stats.writeBufferBytes]).toEqual([0, 0]); // grown slabs dropped
    await exchange(100);
    expect([client.stats.writeBufferBytes, server.stats.writeBufferBytes]).toEqual([16 * KiB, 16 * KiB]);
    expect(clock.pending).toBe(0);
  });
});

describe('SYN floods (finding 1, the core’s part)', () => {
  const MiB = 1024 * 1024;
  const FLOOD = 200_000;

  /**
   * A server session fed `count` SYNs (odd ids from 3) in chunks of 8192 frames by a raw peer over an in-memory
   * pair; what the server writes back (FINs) is counted and dropped. Every accepted channel is kept, as an
   * application would keep its calls.
   */
  async function flood(config: Parameters<typeof Session.server>[1], count: number) {
    const [raw, socket] = memoryPair();
    const server = Session.server(socket, { keepAliveDisabled: true, ...config });
    cleanups.push(() => server.destroy());
    const kept: SmuxChannel[] = [];
    server.on(
      'channel',
      (ch) => (ch.setHandler({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined }), kept.push(ch)),
    );
    let fins = 0;
    raw.on('data', (chunk: Buffer) => (fins += chunk.length / 8)); // only 8-byte FINs come back
    raw.on('error', () => undefined);
    const frame = encodeFrame(1, Cmd.SYN, 0);
    let sent = 0;
    while (sent < count && !server.isClosed) {
      const n = Math.min(8192, count - sent);
      const chunk = Buffer.allocUnsafe(n * 8);
      for (let i = 0; i < n; i++) {
        frame.writeUInt32LE(3 + 2 * (sent + i), 4);
        frame.copy(chunk, i * 8);
      }
      raw.write(chunk);
      sent += n;
      await flush(2);
    }
    // The server opens at most 128 streams per turn (read-turns.ts, STREAMS_PER_TURN): wait until it decoded them all.
    for (let turns = 0; turns < 100_000 && !server.isClosed && server.stats.framesIn < sent; turns++) await flush(1);
    await flush();
    return { server, kept, fins: () => fins };
  }

  test('200 000 SYNs against maxStreams 10 002 (a Nest server’s 10 000 calls + 2): cut off with ERR_SMUX_LIMIT, ≤ 16 MiB retained', async () => {
    const before = retained();
    const { server, kept } = await flood({ maxStreams: 10_002 }, FLOOD);
    const grown = retained() - before; // the 10 002 accepted channels are still referenced
    expect(server.error).toMatchObject({ code: 'ERR_SMUX_LIMIT' } satisfies Partial<SmuxError>);
    expect([kept.length, server.stats.streamsAccepted, server.stats.streamsRefused]).toEqual([10_002, 10_002, 1024]);
    expect(server.stats.framesIn).toBeLessThan(FLOOD); // the rest was never decoded
    expect(grown).toBeLessThanOrEqual(16 * MiB);
  });

  test('a refused stream costs no memory: 200 000 SYNs past the limit (never cut off) retain no more than the accepted streams do', async () => {
    const config = { maxStreams: 1000, maxRefusedStreams: 0x7fff_ffff };
    let before = retained();
    const accepted = await flood(config, 1000);
    const acceptedOnly = retained() - before;
    before = retained();
    const { server, kept, fins } = await flood(config, 1000 + FLOOD);
    const withRefusals = retained() - before;
    expect([accepted.kept.length, accepted.server.stats.streamsRefused]).toEqual([1000, 0]);
    expect(server.isClosed).toBe(false);
    expect([kept.length, server.numStreams, server.stats.streamsRefused]).toEqual([1000, 1000, FLOOD]);
    expect(fins()).toBe(FLOOD - 1024); // all but the newest 1024 got their FIN (those wait for a first frame)
    expect(withRefusals - acceptedOnly).toBeLessThanOrEqual(1 * MiB);
  });
});

describe('held bytes do not pin the reads they came in', () => {
  /**
   * A server session fed by the test, as a socket would: `reads` reads of 64 KiB of memory each, each holding one PSH
   * frame of one byte for stream 1 (the rest of a real read would be another stream's, consumed). Returns how many
   * of those reads are still alive once collected.
   */
  async function readsAlive(open: (session: Session) => void, reads = 200): Promise<number> {
    const { Duplex } = await import('node:stream');
    const input = new Duplex({
      read() {},
      write(_chunk, _encoding, callback) {
        callback();
      },
    });
    const session = Session.server(input, { version: 2, keepAliveDisabled: true });
    cleanups.push(() => session.destroy());
    open(session);
    input.push(encodeFrame(2, Cmd.SYN, 1));
    const alive: Array<WeakRef<ArrayBuffer>> = [];
    for (let i = 0; i < reads; i++) {
      const frame = encodeFrame(2, Cmd.PSH, 1, Buffer.from([i & 0xff]));
      const read = Buffer.alloc(64 * KiB);
      frame.copy(read);
      alive.push(new WeakRef(read.buffer));
      input.push(read.subarray(0, frame.length));
      await new Promise((resolve) => setImmediate(resolve)); // one read per turn, as the socket would deliver them
    }
    await until(() => session.stats.framesIn === 1 + reads, 5_000, 'every frame');
    gc();
    return alive.filter((read) => read.deref() !== undefined).length; // the last may still be on the stack
  }

  test('a SmuxStream nobody reads yet buffers copies of small pieces, not views of their reads', async () => {
    const streams: unknown[] = [];
    expect(await readsAlive((session) => session.on('stream', (stream) => streams.push(stream)))).toBeLessThanOrEqual(1);
    expect(streams).toHaveLength(1);
  });

  test('a paused channel holds copies of small pieces, not views of their reads', async () => {
    let paused: SmuxChannel | undefined;
    const alive = await readsAlive((session) =>
      session.on('channel', (channel: SmuxChannel) => {
        channel.setHandler({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined });
        channel.pause();
        paused = channel;
      }),
    );
    expect(alive).toBeLessThanOrEqual(1);
    expect(paused).toBeDefined();
  });
});
