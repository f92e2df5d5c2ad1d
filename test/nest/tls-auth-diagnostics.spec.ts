import tls from 'node:tls';
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, type ClientSmuxOptions, SmuxError } from '../../lib/index.js';
import { makeCa } from '../helpers/tls.js';
import { closeAll, type LogLine, logLines, rejection, startApp, trackClient, within } from './helpers.js';

/*
 * What each side says when mutual TLS fails: the server logs the peer's address (Node destroys the TLS socket
 * before 'tlsClientError', so it is kept from 'connection') and why a client certificate was refused (Node's TLS
 * 1.3 server closes without an alert, keeping the reason in socket.authorizationError); a client that has `tls`
 * set is pointed at its certificate, not told to set `tls`.
 */

@Controller()
class EchoController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
  }
}

const ca = makeCa();
const otherCa = ca === null ? null : makeCa('an unrelated CA');
const describeTls = ca === null || otherCa === null ? describe.skip : describe;
const NO_RETRY: Partial<ClientSmuxOptions> = { reconnect: { initialDelay: 60_000, maxDelay: 60_000, factor: 1, jitter: 0 } };

describeTls('TLS diagnostics', () => {
  const server = ca!.issue('localhost', { usage: 'server' });
  const stranger = otherCa!.issue('mallory', { usage: 'client', altNames: [] });
  const serverTls: tls.TlsOptions = { key: server.key, cert: server.cert };
  const mutualTls: tls.TlsOptions = { ...serverTls, ca: ca!.cert, requestCert: true, rejectUnauthorized: true };

  let logStart = 0;
  beforeEach(() => {
    logStart = logLines.length;
  });
  afterEach(closeAll);

  async function serverLine(pattern: RegExp): Promise<LogLine> {
    const deadline = Date.now() + 3_000;
    for (;;) {
      const lines = logLines.slice(logStart).filter((l) => l.context === 'ServerSmux');
      const line = lines.find((l) => pattern.test(l.message));
      if (line !== undefined) return line;
      if (Date.now() > deadline) throw new Error(`no server log line matching ${pattern}; got ${JSON.stringify(lines)}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  test('a client that aborts the handshake is logged with its address (not undefined:undefined)', async () => {
    const handle = await startApp({ controllers: [EchoController], server: { tls: serverTls } });
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port: handle.port, tls: { ca: otherCa!.cert, servername: 'localhost' }, ...NO_RETRY }),
    );
    await rejection(within(firstValueFrom(client.send('echo', 'x')), 'the call', 3_000));
    await client.close();
    await serverLine(/TLS handshake with 127\.0\.0\.1:\d+ failed/);
  });

  test('a refused client certificate: the server says why, the client is pointed at its certificate', async () => {
    const handle = await startApp({ controllers: [EchoController], server: { tls: mutualTls } });
    const client = trackClient(
      new ClientSmux({
        host: '127.0.0.1',
        port: handle.port,
        tls: { ca: ca!.cert, servername: 'localhost', key: stranger.key, cert: stranger.cert },
        ...NO_RETRY,
      }),
    );
    const error = (await rejection(within(firstValueFrom(client.send('echo', 'x')), 'the call', 3_000))) as SmuxError;
    expect(error.code).toBe('ERR_SMUX_UNAVAILABLE');
    expect(error.message).toMatch(/certificate/i);
    expect(error.message).not.toMatch(/set the `tls` option/);
    await client.close();
    await serverLine(/127\.0\.0\.1:\d+.*client certificate.*(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT)/i);
  });
});
