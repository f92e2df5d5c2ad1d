import net from 'node:net';
import { afterEach, describe, expect, test } from '@jest/globals';
import { until } from '../helpers/net.js';
import { closeWithin, dialSession } from '../../lib/nest/dial.js';
import { resolveClientOptions } from '../../lib/nest/options.js';
import { isSmuxError, Session, type SmuxStream, systemClock } from '../../lib/smux/index.js';

const servers: net.Server[] = [];
const sockets: net.Socket[] = [];

/** A plain TCP server on 127.0.0.1 (port 0) that does `onSocket` with each connection. */
async function listen(onSocket: (socket: net.Socket) => void): Promise<number> {
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.resume(); // read and drop, so the end of the connection is seen
    onSocket(socket);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

describe('dialSession', () => {
  test('connects, starts a client session at once, and keeps the first bytes the server sends', async () => {
    const port = await listen((socket) => socket.write('SSH-2.0-not-smux\r\n'));
    const dialed = await dialSession(resolveClientOptions({ host: '127.0.0.1', port }), systemClock, `127.0.0.1:${port}`);
    try {
      expect(dialed.session.isClosed).toBe(false);
      // The session listens from the first tick, so the server's bytes reach it: it fails on them, and they are kept.
      await new Promise<void>((resolve) => dialed.session.once('close', () => resolve()));
      expect(dialed.firstBytes()?.toString('latin1')).toBe('SSH-2.0-not-smux\r\n');
      expect(dialed.session.error?.code).toBe('ERR_SMUX_PROTOCOL');
    } finally {
      dialed.session.destroy();
    }
  });

  test('a TLS dial to a server that never answers the handshake fails with ERR_SMUX_TIMEOUT after connectTimeout', async () => {
    const port = await listen(() => undefined); // accepts, says nothing
    const options = resolveClientOptions({ host: '127.0.0.1', port, connectTimeout: 150, tls: { rejectUnauthorized: false } });
    const error = await dialSession(options, systemClock, 'the test server').then(
      () => null,
      (e: unknown) => e,
    );
    expect(isSmuxError(error) && error.code).toBe('ERR_SMUX_TIMEOUT');
    expect((error as Error).message).toBe('could not connect to the test server within 150 ms');
    // The socket was destroyed: the server sees the connection end.
    await new Promise<void>((resolve) => (sockets[0].destroyed ? resolve() : sockets[0].once('close', () => resolve())));
  });

  test('nothing listening: the socket error itself, at once', async () => {
    const port = await listen(() => undefined);
    await new Promise((resolve) => servers.pop()!.close(resolve)); // the port is free again
    const error = await dialSession(resolveClientOptions({ host: '127.0.0.1', port, connectTimeout: 10_000 }), systemClock, 'x').then(
      () => null,
      (e: unknown) => e as NodeJS.ErrnoException,
    );
    expect(error?.code).toBe('ECONNREFUSED');
  });
});

describe('closeWithin', () => {
  test('a close that cannot finish (the peer reads nothing): the session is destroyed once `ms` passed', async () => {
    const port = await listen((socket) => socket.pause()); // accepts, never reads: our writes back up
    const options = resolveClientOptions({ host: '127.0.0.1', port, smux: { version: 1 } }); // v1: no window holds them
    const { session } = await dialSession(options, systemClock, 'x');
    session.openChannel().write(Buffer.alloc(32 << 20)); // more than the kernel's buffers take
    let closed = false;
    void session.close().then(() => (closed = true));
    const started = performance.now();
    await closeWithin(session, systemClock, 150);
    expect(performance.now() - started).toBeGreaterThanOrEqual(100); // it waited for the graceful close first
    expect(session.isClosed).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    expect(closed).toBe(true); // destroy() settles the graceful close that was pending
  });

  test('a peer still reading our last bytes gets all of them: the session reads on until it hangs up', async () => {
    const MiB = 1024 * 1024;
    const total = 16 * MiB;
    // Ours holds input it has not read when its last write is handed to the kernel: a stream it does not read filled
    // its receive budget, so reading stopped (as the transport's held connections do). Destroyed then, the kernel
    // resets the connection and drops what it had not sent yet.
    let ours!: Session;
    const server = net.createServer((socket) => {
      sockets.push(socket);
      ours = Session.server(socket, { version: 1, maxReceiveBuffer: 256 * 1024 });
      ours.on('stream', (stream: SmuxStream) => stream.pause());
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const peerSocket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    sockets.push(peerSocket);
    const peer = Session.client(peerSocket, { version: 1 });
    let received = 0;
    let failed: unknown = null;
    const downloaded = new Promise<void>((resolve) =>
      peer.on('stream', (stream: SmuxStream) => {
        stream.on('data', (chunk: Buffer) => (received += chunk.length));
        stream.on('error', (error) => (failed = error));
        stream.on('end', () => resolve());
        stream.on('close', () => resolve()); // reset: 'error', then 'close'
      }),
    );
    (await peer.openStream()).write(Buffer.alloc(2 * MiB)); // ours stops reading after 256 KiB of it
    peerSocket.pause(); // and the peer reads nothing yet: our writes back up in the kernel
    await new Promise((resolve) => setTimeout(resolve, 50));
    (await ours.openStream()).end(Buffer.alloc(total));
    // Twice, as a drained connection's own close meets the server's: the second joins the first (it destroyed the
    // session at the flush before).
    const started = performance.now();
    const closing = Promise.all([closeWithin(ours, systemClock, 10_000), closeWithin(ours, systemClock, 10_000)]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    peerSocket.resume(); // the peer reads everything now, and hangs up at our end of the connection (a TS session does)
    await closing;
    // Ended by the peer's hang-up, not the bound: the paused stream's data no longer holds ours from reading it.
    expect(performance.now() - started).toBeLessThan(5_000);
    await downloaded;
    expect(failed).toBeNull(); // destroyed at the flush (the old code), the peer got ECONNRESET and lost the tail
    expect(received).toBe(total);
  });

  test('a peer that reads everything and never hangs up (Go does not react to EOF): closed once its input is quiet', async () => {
    let ours!: Session;
    const server = net.createServer((socket) => {
      sockets.push(socket);
      ours = Session.server(socket, { version: 1 });
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    // allowHalfOpen: Node would otherwise answer our FIN with its own, a hang-up.
    const peerSocket = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
    sockets.push(peerSocket);
    let received = 0;
    let ended = false;
    peerSocket.on('data', (chunk: Buffer) => (received += chunk.length)); // reads, never writes nor ends
    peerSocket.on('end', () => (ended = true));
    await until(() => ours !== undefined, 5_000, 'the connection');
    ours.openChannel().write(Buffer.alloc(1024 * 1024));
    const started = performance.now();
    await closeWithin(ours, systemClock, 10_000);
    expect(performance.now() - started).toBeLessThan(5_000); // not the bound: waiting for a hang-up alone takes 10 s
    await until(() => ended, 5_000, 'our FIN at the peer');
    expect(received).toBeGreaterThanOrEqual(1024 * 1024); // every byte before it
  });

  test('a peer that closes: done without waiting for `ms`', async () => {
    const port = await listen((socket) => socket.on('end', () => socket.end()));
    const { session } = await dialSession(resolveClientOptions({ host: '127.0.0.1', port }), systemClock, 'x');
    const started = performance.now();
    await closeWithin(session, systemClock, 10_000);
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(session.isClosed).toBe(true);
  });
});
