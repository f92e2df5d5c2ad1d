/**
 * Health pings (issue 10 §4): with `pingInterval`, a ClientSmux pings each connection on its control stream; a
 * ping without an answer within the interval gives the connection up (a server whose process is stuck while its
 * socket stays open), its calls in flight fail with ERR_SMUX_TIMEOUT, and the next call reconnects. A live server answers
 * every ping, so its connection is never given up.
 */
import net from 'node:net';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, Session, type SmuxChannel, type SmuxError, SmuxRecordBuilder } from '../../lib/index.js';
import { type CallMessage, encodeMessage, Kind } from '../../lib/nest/call-codec.js';
import { MessageReader } from '../../lib/nest/message-reader.js';
import { closeAll, closedPort, rawServer, rejection, startApp, trackClient, until, within } from './helpers.js';

@Controller()
class PingController {
  @MessagePattern('ping')
  ping(): string {
    return 'pong';
  }
}

const closers: Array<() => void> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  await closeAll();
});

/** A hand-written smux server: `onMessage` sees each call message, with its stream and which connection (1, 2 …) it came on. */
async function rawSmuxServer(
  onMessage: (message: CallMessage, channel: SmuxChannel, session: Session, nth: number) => void,
): Promise<number> {
  let connections = 0;
  const listener = net.createServer((socket) => {
    const session = Session.server(socket, { version: 2 });
    const nth = ++connections;
    closers.push(() => session.destroy());
    session.on('channel', (channel: SmuxChannel) => {
      const reader = new MessageReader(1 << 20);
      channel.setHandler({
        onData: (data) => reader.push(data, { onMessage: (message: CallMessage) => onMessage(message, channel, session, nth) }),
        onEnd: () => undefined,
        onClose: () => undefined,
      });
    });
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  closers.push(() => listener.close());
  return (listener.address() as net.AddressInfo).port;
}

/**
 * A server that says hello as a ServerSmux does (naming the control feature) and then never answers anything on
 * any stream — a process that stopped working while its sockets stay open. Counts the PINGs it got.
 */
async function stuckServer(): Promise<{ port: number; pings: () => number }> {
  let pings = 0;
  const port = await rawSmuxServer((message, channel) => {
    if (message.kind === Kind.HELLO) {
      const hello = { protocol: 1, maxMessageBytes: 1 << 20, maxCallsPerConnection: 100, features: ['control'] };
      channel.write(Buffer.concat(encodeMessage(Kind.HELLO, 0, hello)));
    } else if (message.kind === Kind.PING) pings++;
  });
  return { port, pings: () => pings };
}

describe('pingInterval: a connection whose pings go unanswered is given up', () => {
  test('a stuck server: the call in flight fails with ERR_SMUX_TIMEOUT within about two intervals, the client reports the close', async () => {
    const server = await stuckServer();
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port, pingInterval: 100 }));
    const closes: Array<SmuxError | undefined> = [];
    client.on('close', (error) => void closes.push(error));
    const started = Date.now();
    const error = await within(rejection(firstValueFrom(client.send('anything', 1))), 'the stuck call');
    const ms = Date.now() - started;
    expect(error).toMatchObject({ code: 'ERR_SMUX_TIMEOUT', retryable: false }); // it may have run: not retryable
    expect(ms).toBeGreaterThanOrEqual(180); // one interval to the ping, one for its answer
    expect(ms).toBeLessThan(2_000);
    expect(server.pings()).toBe(1);
    await until(() => closes.length === 1, 5_000, 'the close event');
    expect(closes[0]).toMatchObject({ code: 'ERR_SMUX_TIMEOUT', message: expect.stringContaining('did not answer a ping') });
  });

  test('a call made the moment a connection is given up is not failed with its error: it never ran (found by a new user)', async () => {
    const server = await stuckServer();
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port, pingInterval: 100 }));
    await within(rejection(firstValueFrom(client.send('anything', 1))), 'the stuck call');
    // Before the session's close is reported: it used to fail at once with the dead session's ERR_SMUX_TIMEOUT.
    const next = await within(
      rejection(firstValueFrom(client.send('anything', new SmuxRecordBuilder(2).setTimeout(300).build()))),
      'the next call',
    );
    // Either it found no connection (retryable: it was not sent), or it went to a fresh one and met its deadline there.
    const { code, retryable, message } = next as SmuxError;
    expect(code === 'ERR_SMUX_UNAVAILABLE' ? retryable : /deadline/.test(message)).toBe(true);
  });

  test('a live ServerSmux answers every ping: its connection is kept, calls go on', async () => {
    const handle = await startApp({ controllers: [PingController] });
    const client = handle.client({ pingInterval: 20 });
    const closes: unknown[] = [];
    client.on('close', (error) => void closes.push(error));
    expect(await firstValueFrom(client.send('ping', 1))).toBe('pong');
    const session = client.unwrap<Session>();
    await new Promise((resolve) => setTimeout(resolve, 300)); // ≈ 15 pings
    expect(closes).toEqual([]);
    expect(client.unwrap<Session>()).toBe(session);
    // One listener for the ping in flight, not one more per interval (Node warned at 11 in a full run).
    expect(session.listenerCount('close')).toBeLessThan(8);
    expect(await firstValueFrom(client.send('ping', 1))).toBe('pong');
  });

  test('without pingInterval (the default) nothing is pinged', async () => {
    const server = await stuckServer();
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port, timeout: 300 }));
    const error = await within(rejection(firstValueFrom(client.send('anything', 1))), 'the stuck call');
    expect(error).toMatchObject({ code: 'ERR_SMUX_TIMEOUT', message: expect.stringContaining('deadline') });
    expect(server.pings()).toBe(0);
  });
});

describe('client.ping(): the round trip on the control stream', () => {
  test('resolves with the time in ms; client.connections shows the last one', async () => {
    const handle = await startApp({ controllers: [PingController] });
    const client = handle.client();
    expect(await firstValueFrom(client.send('ping', 1))).toBe('pong');
    expect(client.connections[0].rtt).toBeNull();
    const rtt = await within(client.ping(), 'the ping');
    expect(rtt).toBeGreaterThanOrEqual(0);
    expect(rtt).toBeLessThan(1_000);
    expect(client.connections[0].rtt).toBe(rtt);
    expect(client.metrics.snapshot().rtt).toMatchObject({ count: 1, sum: rtt }); // the RTT histogram of the metrics
  });

  test('no answer within the timeout: ERR_SMUX_TIMEOUT; no connection: ERR_SMUX_UNAVAILABLE', async () => {
    const server = await stuckServer();
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port }));
    expect(await rejection(client.ping())).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE' }); // not connected yet
    await client.connect();
    expect(await within(rejection(client.ping(100)), 'the unanswered ping')).toMatchObject({ code: 'ERR_SMUX_TIMEOUT', retryable: true });
    const nowhere = trackClient(new ClientSmux({ host: '127.0.0.1', port: await closedPort() }));
    expect(await rejection(nowhere.ping())).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE' });
  });

  test('a server that did not name the control feature (an older one) is not pinged: ERR_SMUX_UNAVAILABLE at once', async () => {
    const server = await rawServer(() => undefined); // answers the hello as protocol 1 did, without features
    closers.push(() => void server.close());
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port }));
    await client.connect();
    expect(await rejection(client.ping())).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE', message: expect.stringContaining('control') });
  });
});

describe('a server that answered a hello before and now stays silent', () => {
  test('is busy or stalled, not "another transport": the attempt fails with a retryable ERR_SMUX_TIMEOUT (found by a new user)', async () => {
    const port = await rawSmuxServer((message, channel, session, nth) => {
      if (nth > 1 || message.kind !== Kind.HELLO) return; // the second connection: silence
      channel.write(Buffer.concat(encodeMessage(Kind.HELLO, 0, { protocol: 1, features: ['control'] })));
      setTimeout(() => void session.close(), 10); // then it goes away, as a restarting server would
    });
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, connectTimeout: 200 }));
    await client.connect();
    await until(() => client.connections[0].state !== 'ready', 5_000, 'the server to go away');
    const error = (await within(rejection(firstValueFrom(client.send('anything', 1))), 'the call')) as SmuxError;
    expect(error).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE', retryable: true });
    expect(error.cause).toMatchObject({ code: 'ERR_SMUX_TIMEOUT', message: expect.stringContaining('answered before') });
  });
});
