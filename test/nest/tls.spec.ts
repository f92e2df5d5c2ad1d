import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, range, toArray } from 'rxjs';
import { ClientSmux } from '../../lib/index.js';
import { makeCertificate } from '../helpers/tls.js';
import { closeAll, codeOf, rejection, smuxError, startApp, trackClient } from './helpers.js';

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

  test('a plain TCP client against the TLS server fails its call instead of hanging', async () => {
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, connectTimeout: 2_000 }));
    const error = await rejection(firstValueFrom(client.send('echo', 1)));
    expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'TLS'));
    // The TLS server is still fine.
    const good = trackClient(new ClientSmux({ host: '127.0.0.1', port, tls: { ca: cert, servername: 'localhost' } }));
    expect(await firstValueFrom(good.send('echo', 'still ok'))).toBe('still ok');
  });
});
