/**
 * The wrong kind of peer on either end gets a clear error within a bound, and the server says in its log what
 * connected to it: a client pointed at an HTTP server, Nest's TCP transport, a TLS server without `tls`, or a
 * server pinned to the other smux version; and a ServerSmux reached by HTTP, TLS or Nest's TCP client.
 */
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { ClientProxyFactory, MessagePattern, type MicroserviceOptions, Transport } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, SmuxError } from '../../lib/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { makeCertificate } from '../helpers/tls.js';
import { closeAll, collectingLogger, logLines, rejection, smuxError, startApp, trackClient, until, within } from './helpers.js';

@Controller()
class PingController {
  @MessagePattern('ping')
  ping(): string {
    return 'pong';
  }
}

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
  await closeAll();
});
beforeEach(() => void (logLines.length = 0));

async function listening(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  return (server.address() as net.AddressInfo).port;
}

/** The call's error and how long it took (bounded by `within`: never a hang). */
async function failedCall(client: ClientSmux): Promise<{ error: SmuxError; ms: number }> {
  const started = performance.now();
  const error = (await within(rejection(firstValueFrom(client.send('ping', {}))), 'the call to fail', 10_000)) as SmuxError;
  return { error, ms: performance.now() - started };
}

const warnings = (context = 'ServerSmux') => logLines.filter((l) => l.level === 'warn' && l.context === context).map((l) => l.message);

describe('a client pointed at something that is not a nestjs-smux server', () => {
  test('an HTTP server: "it answered like an HTTP server", at once', async () => {
    const server = http.createServer((_req, res) => res.end('hello'));
    server.on('clientError', (_error, socket) => socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'));
    const port = await listening(server);
    const { error, ms } = await failedCall(trackClient(new ClientSmux({ host: '127.0.0.1', port })));
    expect(error).toEqual(
      smuxError(
        'ERR_SMUX_UNAVAILABLE',
        `127.0.0.1:${port} is not a nestjs-smux server: it answered like an HTTP server ("HTTP/1.1 400 Bad Request")`,
      ),
    );
    expect((error.cause as SmuxError).code).toBe('ERR_SMUX_PROTOCOL');
    expect(error.retryable).toBe(false); // it will not start speaking smux
    expect(ms).toBeLessThan(2_000);
  });

  test("Nest's TCP transport (it waits silently): the hello is not answered within 2 s, or connectTimeout when smaller", async () => {
    const moduleRef = await Test.createTestingModule({ controllers: [PingController] }).compile();
    const app = moduleRef.createNestMicroservice<MicroserviceOptions>({
      transport: Transport.TCP,
      options: { host: '127.0.0.1', port: 0 },
      logger: collectingLogger,
    });
    await app.listen();
    closers.push(() => app.close());
    const port = (app.unwrap<net.Server>().address() as net.AddressInfo).port;
    const { error, ms } = await failedCall(trackClient(new ClientSmux({ host: '127.0.0.1', port, connectTimeout: 800 })));
    expect(error).toEqual(
      smuxError(
        'ERR_SMUX_UNAVAILABLE',
        `127.0.0.1:${port} did not answer the nestjs-smux hello within 800 ms: it does not speak this transport`,
      ),
    );
    expect(ms).toBeLessThan(2_000); // not the 30 s keep-alive timeout it was
    const { error: defaultBound } = await failedCall(trackClient(new ClientSmux({ host: '127.0.0.1', port })));
    expect(defaultBound.message).toContain('within 2000 ms');
  });

  test("a live server whose answer waits while the client's event loop is stalled past the hello's bound: it connects, no blame", async () => {
    // The stall comes after the server wrote its answer and before the client read it. Once the loop runs again,
    // timers come before the socket is read: a bound judged at once blamed a live server ("does not speak this
    // transport", not retryable) for our own stall — seen in a soak run.
    const handle = await startApp({ controllers: [PingController] });
    let stalled = false;
    handle.server.unwrap<net.Server>().on('connection', (socket: net.Socket) => {
      socket.on('data', () =>
        setImmediate(() => {
          if (stalled || socket.bytesWritten === 0) return; // stall once the hello's answer went out
          stalled = true;
          const until = Date.now() + 700;
          while (Date.now() < until); // the whole process stops for 700 ms
        }),
      );
    });
    const client = handle.client({ connectTimeout: 400 }); // the hello's bound: 400 ms
    await expect(within(firstValueFrom(client.send('ping', 1)), 'the call')).resolves.toBe('pong');
    expect(stalled).toBe(true);
  });

  const certificate = makeCertificate();
  // The README quotes both messages a client without `tls` can get from a TLS server.
  (certificate === null ? test.skip : test)('a TLS server and a client without `tls`: an error that names TLS', async () => {
    const server = tls.createServer({ key: certificate!.key, cert: certificate!.cert }, (socket) => socket.end());
    const port = await listening(server);
    const { error, ms } = await failedCall(trackClient(new ClientSmux({ host: '127.0.0.1', port })));
    // Node's TLS server closes a plain-text client without a byte.
    expect(error).toEqual(
      smuxError(
        'ERR_SMUX_UNAVAILABLE',
        `127.0.0.1:${port} closed the connection during the nestjs-smux hello, without answering: the server is shutting ` +
          'down, or it does not speak this transport (a TLS server closes a plain-text client this way: set the `tls` option if it uses TLS)',
      ),
    );
    expect(ms).toBeLessThan(2_000);
  });

  test('a TLS server that answers a plain-text client with a TLS alert: "it answered with TLS"', async () => {
    const alert = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]); // a fatal protocol_version alert
    const server = net.createServer((socket) => socket.end(alert, () => socket.destroy()));
    const port = await listening(server);
    const { error } = await failedCall(trackClient(new ClientSmux({ host: '127.0.0.1', port })));
    expect(error).toEqual(
      smuxError(
        'ERR_SMUX_UNAVAILABLE',
        `127.0.0.1:${port} is not a nestjs-smux server: it answered with TLS: the server uses TLS, so set the \`tls\` option of ClientSmux`,
      ),
    );
  });

  test('a server pinned to smux version 2 and a version 1 client: "protocol version"; the server logs it', async () => {
    const handle = await startApp({ controllers: [PingController], server: { smux: { version: 2 } } });
    const { error } = await failedCall(handle.client({ smux: { version: 1 } }));
    expect(error).toEqual(
      smuxError(
        'ERR_SMUX_UNAVAILABLE',
        'smux protocol version mismatch: this server speaks version 2 (its smux.version option), the client version 1',
      ),
    );
    expect((error.cause as SmuxError).code).toBe('ERR_SMUX_PROTOCOL');
    expect(warnings()).toEqual([expect.stringMatching(/^Refused the connection from 127\.0\.0\.1:\d+: smux protocol version mismatch/)]);
    // A server left at its default ('auto') serves both versions.
    const auto = await startApp({ controllers: [PingController] });
    expect(await firstValueFrom(auto.client({ smux: { version: 1 } }).send('ping', {}))).toBe('pong');
    expect(await firstValueFrom(auto.client({ smux: { version: 2 } }).send('ping', {}))).toBe('pong');
  });
});

describe('a ServerSmux reached by something that is not a nestjs-smux client', () => {
  async function raw(port: number, bytes: Buffer | string): Promise<void> {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(bytes);
    await within(new Promise((resolve) => socket.once('close', resolve)), 'the server to close the connection');
  }

  test("an HTTP request, a TLS handshake, Nest's TCP client: each closed, each named in a warning; the server keeps serving", async () => {
    const handle = await startApp({ controllers: [PingController] });
    await raw(handle.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await raw(handle.port, Buffer.from('16030100c4010000c00303', 'hex')); // the start of a TLS ClientHello
    const nestTcp = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port: handle.port } });
    await nestTcp.connect();
    void firstValueFrom(nestTcp.send('ping', {})).catch(() => undefined);
    await until(() => warnings().length === 3, 5_000, 'three warnings');
    nestTcp.close();
    expect(warnings()).toEqual([
      expect.stringMatching(
        /^Closed the connection from 127\.0\.0\.1:\d+: it sent an HTTP request \("GET \/ HTTP\/1\.1"\), not nestjs-smux$/,
      ),
      expect.stringMatching(
        /^Closed the connection from 127\.0\.0\.1:\d+: it sent a TLS handshake: the client uses TLS but this server has no `tls` option, not nestjs-smux$/,
      ),
      expect.stringMatching(
        /^Closed the connection from 127\.0\.0\.1:\d+: it sent Nest's TCP transport \(a ClientTCP\): use ClientSmux, not nestjs-smux$/,
      ),
    ]);
    expect(await firstValueFrom(handle.client().send('ping', {}))).toBe('pong');
  });

  test('a flood of bad connections is logged at most 5 times per 10 s, then summed up', async () => {
    const clock = new FakeClock();
    const handle = await startApp({ controllers: [PingController], server: { smux: { clock } } });
    for (let i = 0; i < 20; i++) await raw(handle.port, 'GET / HTTP/1.1\r\n\r\n');
    expect(warnings()).toHaveLength(5);
    clock.advance(10_000);
    expect(warnings()).toHaveLength(6);
    expect(warnings()[5]).toBe('… and 15 more protocol warnings like these within 10 s (not logged one by one)');
  });

  // Found by a new-user trial: the debug lines per connection were the one log stream a hostile peer could grow
  // without bound (Nest's default logger prints `debug`): 909 lines for 600 garbage or empty connections.
  test('per-connection debug lines are rate-limited as warnings are: 100 garbage and 100 empty connections, 5 lines and a count', async () => {
    const clock = new FakeClock();
    const handle = await startApp({ controllers: [PingController], server: { smux: { clock } } });
    const empty = async (): Promise<void> => {
      const socket = net.connect(handle.port, '127.0.0.1');
      socket.on('error', () => undefined);
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.end();
      await within(new Promise((resolve) => socket.once('close', resolve)), 'the server to close the connection');
    };
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(Array.from({ length: 10 }, () => [raw(handle.port, Buffer.alloc(64, 0xee)), empty()]).flat());
    }
    await until(() => handle.server.connections.size === 0, 5_000, 'every connection to end');
    const debugLines = () => logLines.filter((l) => l.level === 'debug' && l.context === 'ServerSmux').map((l) => l.message);
    expect(debugLines()).toHaveLength(5); // 300 before: each connection's opening, and an empty one's close
    clock.advance(10_000);
    expect(debugLines()).toHaveLength(6);
    expect(debugLines()[5]).toBe('… and 295 more connection debug lines like these within 10 s (not logged one by one)');
  });

  (makeCertificate() === null ? test.skip : test)(
    'a plain-text client against a TLS ServerSmux: a clear client error, a server warning',
    async () => {
      const certificate = makeCertificate()!;
      const handle = await startApp({ controllers: [PingController], server: { tls: { key: certificate.key, cert: certificate.cert } } });
      const { error } = await failedCall(trackClient(new ClientSmux({ host: '127.0.0.1', port: handle.port })));
      expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
      expect(error.message).toMatch(/TLS/);
      await until(() => warnings().length === 1, 5_000, 'the TLS warning');
      expect(warnings()[0]).toMatch(
        /^TLS handshake with 127\.0\.0\.1:\d+ failed \(ERR_SSL_WRONG_VERSION_NUMBER\): a plain-text client\? it needs the tls option$/,
      );
    },
  );

  test('the server logs where it listens, at log level, and nothing per call', async () => {
    const handle = await startApp({ controllers: [PingController] });
    expect(logLines.filter((l) => l.level === 'log' && l.context === 'ServerSmux').map((l) => l.message)).toEqual([
      `Listening on 127.0.0.1:${handle.port} (nestjs-smux, smux protocol version auto, plain TCP)`,
    ]);
    const client = handle.client();
    const before = logLines.filter((l) => l.level !== 'debug' && l.level !== 'verbose').length;
    await Promise.all(Array.from({ length: 50 }, () => firstValueFrom(client.send('ping', {}))));
    expect(logLines.filter((l) => l.level !== 'debug' && l.level !== 'verbose').length).toBe(before);
    expect(logLines.some((l) => l.level === 'debug' && /^Connection from 127\.0\.0\.1:\d+$/.test(l.message))).toBe(true);
    await handle.close();
    expect(
      logLines
        .filter((l) => l.level === 'log' && l.context === 'ServerSmux')
        .map((l) => l.message)
        .at(-1),
    ).toBe('Closed 1 connection: every call finished');
  });
});
