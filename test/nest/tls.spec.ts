import { once } from 'node:events';
import * as net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, range, toArray } from 'rxjs';
import { ClientSmux } from '../../lib/index.js';
import { makeCertificate } from '../helpers/tls.js';
import { closeAll, codeOf, rejection, smuxError, startApp, trackClient, within } from './helpers.js';

@Controller()
class TlsController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
  }

  @MessagePattern('range')
  range(@Payload() n: number) {
    return range(0, n);
  }
}

const certificate = makeCertificate();
const describeTls = certificate === null ? describe.skip : describe;

describeTls('TLS', () => {
  const { key, cert } = certificate ?? { key: Buffer.alloc(0), cert: Buffer.alloc(0) };
  let port: number;
  let server: Awaited<ReturnType<typeof startApp>>;

  beforeAll(async () => {
    server = await startApp({ controllers: [TlsController], server: { tls: { key, cert } } });
    port = server.port;
  });
  afterAll(closeAll);

  test('calls work over TLS with the certificate trusted', async () => {
    expect(server.server.unwrap()).toBeInstanceOf(tls.Server);
    const client = server.client({ tls: { ca: cert, servername: 'localhost' } });
    expect(await firstValueFrom(client.send('echo', { hello: 'tls' }))).toEqual({ hello: 'tls' });
    const big = Buffer.alloc(1024 * 1024, 3);
    expect((await firstValueFrom(client.send<Buffer>('echo', big))).equals(big)).toBe(true);
    expect(await lastValueFrom(client.send('range', 5).pipe(toArray()))).toEqual([0, 1, 2, 3, 4]);
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => firstValueFrom(client.send('echo', i))));
    expect(results).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(server.sessions.filter((s) => !s.isClosed)).toHaveLength(1);
    await client.close();
  });

  test('a client that does not trust the certificate fails its calls with the TLS error', async () => {
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, tls: { servername: 'localhost' } }));
    const error = await rejection(firstValueFrom(client.send('echo', 1)));
    expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
    // The cause is Node's TLS error (another realm under Jest: no instanceof).
    expect(String(codeOf((error as Error).cause))).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);
  });

  test('a peer that connects and never starts its TLS handshake is closed after 10 s (Node alone: 120 s)', async () => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    const started = performance.now();
    await within(once(socket, 'close'), 'the server to close the silent socket', 15_000);
    expect(performance.now() - started).toBeGreaterThan(9_000);
  }, 20_000);

  test('the tls options may set handshakeTimeout themselves', async () => {
    const own = await startApp({ controllers: [TlsController], server: { tls: { key, cert, handshakeTimeout: 300 } } });
    const socket = net.connect({ port: own.port, host: '127.0.0.1' });
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    await within(once(socket, 'close'), 'the server to close the silent socket', 5_000);
  });

  test('a plain TCP client against the TLS server fails its call instead of hanging', async () => {
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, connectTimeout: 2_000 }));
    const error = await rejection(firstValueFrom(client.send('echo', 1)));
    expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'TLS'));
    // The TLS server is still fine.
    const good = trackClient(new ClientSmux({ host: '127.0.0.1', port, tls: { ca: cert, servername: 'localhost' } }));
    expect(await firstValueFrom(good.send('echo', 'still ok'))).toBe('still ok');
  });
});
