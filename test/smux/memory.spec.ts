/**
 * Memory bounds of the core (issue 9): what an idle session holds (finding 6), measured after a full GC over
 * real TCP sessions. `--expose-gc` is turned on at run time (v8 flags) so that Jest needs no option.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import net from 'node:net';
import { once } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Session, type SmuxChannel } from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { until } from '../helpers/net.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

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
  test('with keep-alive off, a timer releases them 10–20 s after the last batch, and runs only while buffers are held', async () => {
    const pair = memorySessions(); // keepAliveDisabled, fake clock
    cleanups.push(() => pair.close());
    const { client, server, clock } = pair;
    expect(clock.pending).toBe(0);
    server.on('channel', (ch) => ch.setHandler({ onData: () => undefined, onEnd: () => ch.end(), onClose: () => undefined }));
    const ch = client.openChannel({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined });
    ch.write(Buffer.alloc(100, 1));
    ch.end();
    await flush();
    expect([client.stats.writeBufferBytes, server.stats.writeBufferBytes]).toEqual([16 * KiB, 16 * KiB]);
    expect(clock.pending).toBe(2); // one per session
    clock.advance(10_000);
    await flush();
    expect(client.stats.writeBufferBytes).toBe(16 * KiB); // a batch went out since the session started
    clock.advance(10_000);
    await flush();
    expect([client.stats.writeBufferBytes, server.stats.writeBufferBytes, clock.pending]).toEqual([0, 0, 0]);
  });
});
