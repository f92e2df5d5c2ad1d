import tls from 'node:tls';
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, type ClientSmuxOptions, SmuxError } from '../../lib/index.js';
import { makeCa } from '../helpers/tls.js';
import { type AppHandle, closeAll, codeOf, type LogLine, logLines, rejection, startApp, trackClient, within } from './helpers.js';

/*
 * Server authentication and mutual TLS with a certificate authority made for this run, and every way a client
 * and a server can disagree about TLS: each fails the caller fast with an error that says why, leaves a line in
 * the server's log, and the server goes on serving good clients. (tls.spec.ts covers a self-signed server
 * certificate and an untrusting client; here the certificates come from a CA, and the server logs are checked.)
 */

@Controller()
class WhoController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
  }
}

const ca = makeCa();
const otherCa = ca === null ? null : makeCa('an unrelated CA');
const describeTls = ca === null || otherCa === null ? describe.skip : describe;

/** A fail-fast bound for a refused handshake: generous for a loaded machine, far below any timeout in play. */
const FAST = 3_000;
/** No background retry in the middle of a test (each would be another handshake, another log line). */
const NO_RETRY: Partial<ClientSmuxOptions> = { reconnect: { initialDelay: 60_000, maxDelay: 60_000, factor: 1, jitter: 0 } };

describeTls('TLS with a test CA: server auth and mutual TLS', () => {
  const authority = ca!;
  const server = authority.issue('localhost', { usage: 'server' });
  const alice = authority.issue('alice', { usage: 'client', altNames: [] });
  const stranger = otherCa!.issue('mallory', { usage: 'client', altNames: [] });
  const serverTls: tls.TlsOptions = { key: server.key, cert: server.cert };
  const mutualTls: tls.TlsOptions = { ...serverTls, ca: authority.cert, requestCert: true, rejectUnauthorized: true };

  let logStart = 0;
  beforeEach(() => {
    logStart = logLines.length;
  });
  afterEach(closeAll);

  /** The server's log lines since the test began. */
  const serverLog = (): LogLine[] => logLines.slice(logStart).filter((line) => line.context === 'ServerSmux');

  /** Waits (bounded) for a server line matching `pattern`, and returns it. */
  async function serverLine(pattern: RegExp): Promise<LogLine> {
    const deadline = Date.now() + FAST;
    for (;;) {
      const line = serverLog().find((l) => pattern.test(l.message));
      if (line !== undefined) return line;
      if (Date.now() > deadline) throw new Error(`no server log line matching ${pattern}; got ${JSON.stringify(serverLog())}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** A call that must fail fast (within {@link FAST}); returns its error. */
  async function failsFast(client: ClientSmux): Promise<SmuxError> {
    const started = Date.now();
    const error = await rejection(within(firstValueFrom(client.send('echo', 'x')), 'the refused call', FAST));
    expect(Date.now() - started).toBeLessThan(FAST);
    expect(error).toBeInstanceOf(SmuxError);
    return error as SmuxError;
  }

  /** The server still serves a good client (nothing crashed, nothing is wedged). */
  async function stillServes(handle: AppHandle, options: Partial<ClientSmuxOptions>): Promise<void> {
    const good = handle.client(options);
    expect(await firstValueFrom(good.send('echo', { ok: true }))).toEqual({ ok: true });
    await good.close();
  }

  /** The whole error chain's codes and messages, for matching what the caller is told. */
  const chain = (error: unknown): string => {
    const parts: string[] = [];
    for (let e = error as { message?: unknown; code?: unknown; cause?: unknown } | null | undefined; e !== null && e !== undefined;) {
      parts.push(`${typeof e.code === 'string' ? e.code : ''} ${typeof e.message === 'string' ? e.message : ''}`);
      e = e.cause as typeof e;
    }
    return parts.join(' <- ');
  };

  test('server auth: a client that trusts the CA calls the server; the server certificate is verified for its name', async () => {
    const handle = await startApp({ controllers: [WhoController], server: { tls: serverTls } });
    expect(handle.server.unwrap()).toBeInstanceOf(tls.Server);
    const certificates: unknown[] = [];
    handle.server.on('connection', (connection) => void certificates.push(connection.peerCertificate));
    const client = handle.client({ tls: { ca: authority.cert, servername: 'localhost' } });
    expect(await firstValueFrom(client.send('echo', 'over TLS'))).toBe('over TLS');
    expect(certificates).toEqual([null]); // a client without a certificate
    expect(serverLog().filter((l) => l.level === 'warn' || l.level === 'error')).toEqual([]);
  });

  test('mutual TLS: a client with a certificate from the CA is let in, and the server sees who it is', async () => {
    const handle = await startApp({ controllers: [WhoController], server: { tls: mutualTls } });
    const peers: string[] = [];
    handle.server.unwrap<tls.Server>().on('secureConnection', (socket: tls.TLSSocket) => {
      peers.push(`${String(socket.authorized)} ${String(socket.getPeerCertificate().subject?.CN)}`);
    });
    const connections: unknown[] = [];
    handle.server.on('connection', (connection) => void connections.push(connection.peerCertificate?.subject.CN));
    const client = handle.client({ tls: { ca: authority.cert, servername: 'localhost', key: alice.key, cert: alice.cert } });
    expect(await firstValueFrom(client.send('echo', 'mutual'))).toBe('mutual');
    expect(peers).toEqual(['true alice']);
    expect(connections).toEqual(['alice']); // the SmuxConnection (and ctx.getConnection()) carries the certificate
    expect(serverLog().filter((l) => l.level === 'warn' || l.level === 'error')).toEqual([]);
  });

  test('a client that trusts another CA fails fast with the certificate error; the server logs the failed handshake', async () => {
    const handle = await startApp({ controllers: [WhoController], server: { tls: serverTls } });
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port: handle.port, tls: { ca: otherCa!.cert, servername: 'localhost' }, ...NO_RETRY }),
    );
    const error = await failsFast(client);
    expect(error.code).toBe('ERR_SMUX_UNAVAILABLE');
    // Node's verification error is the cause (another realm under Jest: no instanceof).
    expect(String(codeOf(error.cause))).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
    expect(error.message).toMatch(/certificate/i);
    await client.close();
    // The client hangs up in the middle of the handshake (Node sends no alert): the server sees a reset.
    // (That the line names the peer's address is tls-auth.pending.ts.)
    expect((await serverLine(/TLS handshake with .* failed/)).level).toBe('warn');
    await stillServes(handle, { tls: { ca: authority.cert, servername: 'localhost' } });
  });

  test('mutual TLS: a client without a certificate fails fast (the server requires one); the server logs why', async () => {
    const handle = await startApp({ controllers: [WhoController], server: { tls: mutualTls } });
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port: handle.port, tls: { ca: authority.cert, servername: 'localhost' }, ...NO_RETRY }),
    );
    const error = await failsFast(client);
    expect(error.code).toBe('ERR_SMUX_UNAVAILABLE');
    // TLS 1.3: the client's handshake completes before the server checks its certificate, so the refusal is the
    // server's alert, which arrives during the nestjs-smux hello.
    expect(chain(error)).toMatch(/CERTIFICATE_REQUIRED|certificate required|PEER_DID_NOT_RETURN_A_CERTIFICATE/i);
    await client.close();
    const line = await serverLine(/TLS handshake with 127\.0\.0\.1:\d+ failed/);
    expect(line).toEqual({
      level: 'warn',
      context: 'ServerSmux',
      message: expect.stringMatching(/PEER_DID_NOT_RETURN_A_CERTIFICATE|certificate/i),
    });
    await stillServes(handle, { tls: { ca: authority.cert, servername: 'localhost', key: alice.key, cert: alice.cert } });
  });

  test('mutual TLS: a client certificate from another CA is refused: the call fails fast, the server logs it', async () => {
    const handle = await startApp({ controllers: [WhoController], server: { tls: mutualTls } });
    const client = trackClient(
      new ClientSmux({
        host: '127.0.0.1',
        port: handle.port,
        tls: { ca: authority.cert, servername: 'localhost', key: stranger.key, cert: stranger.cert },
        ...NO_RETRY,
      }),
    );
    const error = await failsFast(client);
    expect(error.code).toBe('ERR_SMUX_UNAVAILABLE');
    // TLS 1.3: the client's handshake is done before the server checks the certificate; Node's server then closes
    // the connection without an alert, so the client learns it during the hello. (That the client's error and
    // the server's line say it was the certificate is tls-auth.pending.ts.)
    expect(error.message).toMatch(/closed the connection during the nestjs-smux hello/);
    await client.close();
    expect((await serverLine(/TLS handshake with .* failed/)).level).toBe('warn');
    await stillServes(handle, { tls: { ca: authority.cert, servername: 'localhost', key: alice.key, cert: alice.cert } });
  });

  test('a plain-text client against the TLS server fails fast naming TLS; the server logs a plain-text client', async () => {
    const handle = await startApp({ controllers: [WhoController], server: { tls: serverTls } });
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: handle.port, ...NO_RETRY }));
    const error = await failsFast(client);
    expect(error.code).toBe('ERR_SMUX_UNAVAILABLE');
    expect(error.message).toMatch(/TLS/);
    await client.close();
    const line = await serverLine(/TLS handshake with 127\.0\.0\.1:\d+ failed/);
    expect(line.level).toBe('warn');
    expect(line.message).toMatch(/a plain-text client\? it needs the tls option/);
    await stillServes(handle, { tls: { ca: authority.cert, servername: 'localhost' } });
  });

  test('a TLS client against a plain server fails fast; the server logs that the client spoke TLS', async () => {
    const handle = await startApp({ controllers: [WhoController] });
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port: handle.port, tls: { ca: authority.cert, servername: 'localhost' }, ...NO_RETRY }),
    );
    const error = await failsFast(client);
    expect(error.code).toBe('ERR_SMUX_UNAVAILABLE');
    // The plain server closes the connection in the middle of the TLS handshake: the client asks whether it uses TLS
    // (it said only Node's "Client network socket disconnected before secure TLS connection was established").
    expect(error.message).toMatch(
      /^no connection: 127\.0\.0\.1:\d+ closed the connection during the TLS handshake \(is the server using TLS\? a plain-text server closes a TLS client this way: remove the `tls` option if it does not\)$/,
    );
    expect(error.retryable).toBe(true); // retried like any connection failure: the call did not run
    expect(chain(error)).toMatch(/before secure TLS connection was established|ECONNRESET|socket hang up|EPIPE/);
    await client.close();
    const line = await serverLine(/Closed the connection from 127\.0\.0\.1:\d+/);
    expect(line.level).toBe('warn');
    expect(line.message).toMatch(/it sent a TLS handshake: the client uses TLS but this server has no `tls` option, not nestjs-smux/);
    await stillServes(handle, {});
  });

  test('a client that expects another server name fails fast with the name error; the server logs the aborted handshake', async () => {
    const handle = await startApp({ controllers: [WhoController], server: { tls: serverTls } });
    const client = trackClient(
      new ClientSmux({ host: '127.0.0.1', port: handle.port, tls: { ca: authority.cert, servername: 'elsewhere.test' }, ...NO_RETRY }),
    );
    const error = await failsFast(client);
    expect(error.code).toBe('ERR_SMUX_UNAVAILABLE');
    expect(String(codeOf(error.cause))).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(error.message).toMatch(/elsewhere\.test/);
    await client.close();
    expect((await serverLine(/TLS handshake with .* failed/)).level).toBe('warn');
    await stillServes(handle, { tls: { ca: authority.cert, servername: 'localhost' } });
  });
});
