import net from 'node:net';
import { afterAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, interval, lastValueFrom, type Observable } from 'rxjs';
import type { SmuxConnection, SmuxError } from '../../lib/index.js';
import { encodeMessage, Kind } from '../../lib/nest/call-codec.js';
import { Session } from '../../lib/smux/index.js';
import { type AppHandle, closeAll, logLines, rawCall, startApp, until } from './helpers.js';

@Controller()
class CountController {
  @EventPattern('count')
  count(@Payload() _n: number): void {}

  @MessagePattern('echo')
  echo(@Payload() data: unknown): unknown {
    return data;
  }

  @MessagePattern('many') // a long Observable reply: the server is still writing when the caller cancels
  many(): Observable<number> {
    return interval(1);
  }
}

afterAll(closeAll);

/** The warnings and errors logged since the last clear. */
const warnings = () => logLines.filter((line) => line.level === 'warn' || line.level === 'error');

/** What the app's `'disconnect'` and the connection's own `'close'` said, once both came. */
function watchEnds(app: AppHandle): Promise<{ disconnect: SmuxError | undefined; close: SmuxError | undefined }> {
  return new Promise((resolve) => {
    app.server.on('connection', (connection: SmuxConnection) => {
      let close: SmuxError | undefined | null = null;
      connection.on('close', (error) => (close = error));
      app.server.on('disconnect', (gone, disconnect) => gone === connection && resolve({ disconnect, close: close ?? undefined }));
    });
  });
}

/** A smux caller over a socket of its own (so it can reset it), with one call to `pattern`. */
async function rawCaller(port: number, pattern: string) {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const session = Session.client(socket, { version: 2 });
  const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, 1, { id: '1', pattern }));
  return { socket, session, call };
}

describe('a client that leaves at once', () => {
  // The app may close before it handled the event (at most once); what matters is that nothing is logged as lost.
  test('closing the client and the app in the tick of a last emit() logs no warning (a routine leave)', async () => {
    for (let round = 0; round < 5; round++) {
      const app = await startApp({ controllers: [CountController] });
      const client = app.client();
      await firstValueFrom(client.send('echo', 1));
      logLines.length = 0;
      await lastValueFrom(client.emit('count', round), { defaultValue: undefined });
      await client.close();
      await app.close();
      expect(warnings()).toEqual([]);
    }
  });

  // Found by a new-user trial: 'disconnect' carried `ERR_SMUX_SESSION_CLOSED connection error: write EPIPE` (1 run in 5)
  // while the log line called the same leave routine.
  test("unsubscribing a streaming reply, then closing the client: 'disconnect' carries no error, nothing is warned", async () => {
    for (let round = 0; round < 10; round++) {
      const app = await startApp({ controllers: [CountController] });
      const ends = watchEnds(app);
      const client = app.client();
      let values = 0;
      const subscription = client.send('many', 1).subscribe({ next: () => values++ });
      await until(() => values >= 5, 5_000, 'the reply to stream');
      logLines.length = 0;
      subscription.unsubscribe();
      await client.close();
      expect(await ends).toEqual({ disconnect: undefined, close: undefined });
      expect(warnings()).toEqual([]);
      await app.close();
    }
  });

  test("a client that resets its socket after its call was cancelled: a routine leave, 'disconnect' and 'close' without an error", async () => {
    const app = await startApp({ controllers: [CountController] });
    const ends = watchEnds(app);
    const { socket, session, call } = await rawCaller(app.port, 'many');
    await until(() => call.messages.length >= 5, 5_000, 'the reply to stream');
    call.channel.end(); // our FIN before the last reply: the call is cancelled
    await until(() => app.sessions[0].numPeerStreams === 0, 5_000, 'the server to drop the cancelled call');
    logLines.length = 0;
    socket.resetAndDestroy();
    expect(await ends).toEqual({ disconnect: undefined, close: undefined }); // was ECONNRESET
    expect(logLines.filter((l) => l.context === 'ServerSmux').map((l) => `${l.level} ${l.message}`)).toEqual([
      expect.stringMatching(/^debug Connection from 127\.0\.0\.1:\d+ closed by the client: connection error: .*(ECONNRESET|EPIPE)/),
    ]);
    session.destroy();
  });

  test("a client that resets its socket while its call runs: 'disconnect' and 'close' carry the error, and it is warned", async () => {
    const app = await startApp({ controllers: [CountController] });
    const ends = watchEnds(app);
    const { socket, session, call } = await rawCaller(app.port, 'many');
    await until(() => call.messages.length >= 5, 5_000, 'the reply to stream');
    logLines.length = 0;
    socket.resetAndDestroy();
    const { disconnect, close } = await ends;
    expect(disconnect).toMatchObject({ code: 'ERR_SMUX_SESSION_CLOSED', cause: expect.objectContaining({ code: 'ECONNRESET' }) });
    expect(close).toBe(disconnect);
    // Was a debug line: the calls the client waited for were counted once the session had ended them.
    expect(warnings().map((l) => l.message)).toEqual([expect.stringMatching(/^Lost the connection from 127\.0\.0\.1:\d+: .*ECONNRESET/)]);
    session.destroy();
  });
});

// The same judgement on a connection the server dialled (connectTo): its socket is its connector's, and the calls its
// session ended on a socket error used to be counted only at its end — none, so a gateway reset in the middle of a
// call it made to this worker was taken for a routine leave ('disconnect' without an error, a debug line).
describe('a connection the server dialled (connectTo), reset by the server it dialled', () => {
  /** A gateway (a listening app, its accepted sockets kept) and a worker app dialling it, connected both ways. */
  async function gatewayAndWorker() {
    const gateway = await startApp();
    const sockets: net.Socket[] = [];
    gateway.server.unwrap<net.Server>().on('connection', (socket: net.Socket) => void sockets.push(socket));
    const worker = await startApp({ controllers: [CountController], server: { connectTo: { host: '127.0.0.1', port: gateway.port } } });
    await until(() => gateway.server.connections.size === 1 && worker.server.connections.size === 1, 5_000, 'the worker to connect');
    const [toWorker] = gateway.server.connections.values();
    const [toGateway] = worker.server.connections.values();
    const ends = new Promise<{ disconnect: SmuxError | undefined; close: SmuxError | undefined }>((resolve) => {
      let close: SmuxError | undefined | null = null;
      toGateway.on('close', (error) => (close = error));
      worker.server.on('disconnect', (gone, disconnect) => gone === toGateway && resolve({ disconnect, close: close ?? undefined }));
    });
    return { worker, socket: sockets[0], toWorker, ends };
  }

  const workerLines = () => logLines.filter((l) => l.context === 'ServerSmux').map((l) => `${l.level} ${l.message}`);

  test("reset while the worker serves the gateway's call: 'disconnect' and 'close' carry the error, and it is warned", async () => {
    const { socket, toWorker, ends } = await gatewayAndWorker();
    let values = 0;
    toWorker.send('many', 1).subscribe({ next: () => values++, error: () => undefined });
    await until(() => values >= 5, 5_000, 'the reply to stream');
    logLines.length = 0;
    socket.resetAndDestroy();
    const { disconnect, close } = await ends;
    // Were undefined: the calls the worker's session had ended were counted at its end (none).
    expect(disconnect).toMatchObject({
      code: 'ERR_SMUX_SESSION_CLOSED',
      cause: expect.objectContaining({ code: expect.stringMatching(/^(ECONNRESET|EPIPE)$/) }),
    });
    expect(close).toBe(disconnect);
    // Was 'debug Connection from … closed by the client'. (The worker's ClientSmux warns of the lost connection too.)
    // (It dialled: "to" the gateway, where a connection it accepted says "from".)
    expect(workerLines()).toContainEqual(expect.stringMatching(/^warn Lost the connection to 127\.0\.0\.1:\d+: .*(ECONNRESET|EPIPE)/));
    expect(workerLines()).not.toContainEqual(expect.stringMatching(/^debug .*closed by the client/));
  });

  test("reset with no call of the gateway's running: a routine leave, 'disconnect' and 'close' without an error", async () => {
    const { socket, toWorker, ends } = await gatewayAndWorker();
    expect(await firstValueFrom(toWorker.send('echo', 7))).toBe(7);
    logLines.length = 0;
    socket.resetAndDestroy();
    expect(await ends).toEqual({ disconnect: undefined, close: undefined });
    expect(workerLines()).not.toContainEqual(expect.stringMatching(/^warn /));
    expect(workerLines()).toContainEqual(expect.stringMatching(/^debug Connection to 127\.0\.0\.1:\d+ closed by the server: /));
  });
});
