/**
 * A ServerSmux's connections (issue 10 §1): each accepted connection is a `SmuxConnection` — id, remote address,
 * the app's `data`, a ClientProxy over the same connection, `ping()` — reached from a handler with
 * `ctx.getConnection()` and from the server with `connections` and the `'connection'` / `'disconnect'` events.
 * Calls in the other direction (a ServerSmux that dials out) are in bidirectional.spec.ts.
 */
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { SmuxConnection, type SmuxContext } from '../../lib/index.js';
import { encodeMessage, Kind } from '../../lib/nest/call-codec.js';
import { closeAll, rawCall, rawSession, rejection, startApp, until, within } from './helpers.js';

const seenInHandlers: SmuxConnection[] = [];

@Controller()
class WhoController {
  @MessagePattern('login')
  login(@Payload() name: string, @Ctx() ctx: SmuxContext): string {
    const connection = ctx.getConnection();
    seenInHandlers.push(connection);
    connection.data['user'] = name; // per-connection state, set on the first call
    return connection.id;
  }

  @MessagePattern('whoami')
  whoami(@Ctx() ctx: SmuxContext): unknown {
    const { id, remoteAddress, data } = ctx.getConnection();
    return { id, remoteAddress, user: data['user'] ?? null };
  }
}

beforeEach(() => void (seenInHandlers.length = 0));
afterEach(() => closeAll());

describe('SmuxConnection: who called, and state per connection', () => {
  test("'connection' comes before the first call, ctx.getConnection() is that object, data lives per connection, 'disconnect' at the end", async () => {
    const handle = await startApp({ controllers: [WhoController] });
    const events: string[] = [];
    const accepted: SmuxConnection[] = [];
    handle.server.on('connection', (connection) => {
      accepted.push(connection);
      events.push(`connection ${connection.id}`);
    });
    handle.server.on(
      'disconnect',
      (connection, error) =>
        void events.push(`disconnect ${connection.id} ${error?.code ?? 'clean'}${connection.closed ? ' closed' : ' open'}`),
    );
    const alice = handle.client();
    const bob = handle.client();
    const aliceId = await firstValueFrom(alice.send<string>('login', 'alice'));
    const bobId = await firstValueFrom(bob.send<string>('login', 'bob'));
    expect(aliceId).not.toBe(bobId);
    expect(accepted.map((c) => c.id)).toEqual([aliceId, bobId]);
    expect(seenInHandlers).toEqual(accepted); // the same objects, not copies
    expect(accepted[0]).toBeInstanceOf(SmuxConnection);
    expect(await firstValueFrom(alice.send('whoami', {}))).toEqual({
      id: aliceId,
      remoteAddress: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
      user: 'alice',
    });
    expect(await firstValueFrom(bob.send('whoami', {}))).toMatchObject({ id: bobId, user: 'bob' });
    expect([...handle.server.connections.keys()]).toEqual([aliceId, bobId]);
    expect(handle.server.connections.get(aliceId)).toBe(accepted[0]);

    await alice.close();
    await until(() => events.length === 3, 5_000, 'the disconnect');
    expect(events).toEqual([`connection ${aliceId}`, `connection ${bobId}`, `disconnect ${aliceId} clean closed`]);
    expect(accepted[0].closed).toBe(true);
    expect([...handle.server.connections.keys()]).toEqual([bobId]);
  });

  test("what an app holds of the server's connections cannot change the server's books", async () => {
    const handle = await startApp({ controllers: [WhoController] });
    const client = handle.client();
    const id = await firstValueFrom(client.send<string>('login', 'carol'));
    const connections = handle.server.connections;
    const connection = connections.get(id)!;
    // The map is a live view without mutators (a ReadonlyMap type alone was a compile-time promise only).
    for (const mutator of ['set', 'delete', 'clear']) expect((connections as unknown as Record<string, unknown>)[mutator]).toBeUndefined();
    expect([...connections]).toEqual([[id, connection]]);
    // The id the server finds the connection by, and what it says of the peer, cannot be reassigned.
    expect(() => void ((connection as unknown as { id: string }).id = 'renamed')).toThrow(TypeError);
    expect(() => void ((connection as unknown as { remoteAddress: string }).remoteAddress = 'elsewhere')).toThrow(TypeError);
    // Nor can an app make a connection of its own (it would register a session as a connection's).
    const Made = connection.constructor as new (...args: unknown[]) => unknown;
    expect(() => new Made({ id: 'fake', session: {} })).toThrow(TypeError);
    // The session's public events are anyone's: emitting 'close' on a live session, or removing its listeners, does
    // not make the server forget the connection (the transport does not listen on them).
    const session = handle.sessions[0];
    session.emit('close', undefined);
    session.removeAllListeners();
    expect(connections.get(id)).toBe(connection);
    expect(connection.closed).toBe(false);
    expect(await firstValueFrom(client.send('whoami', {}))).toMatchObject({ id, user: 'carol' });
    const gone = new Promise<string>((resolve) => handle.server.on('disconnect', (c) => resolve(c.id)));
    await client.close();
    expect(await within(gone, 'the disconnect')).toBe(id);
    expect(connections.size).toBe(0); // the same view, live
  });

  test('connection.close() resolves once the connection is closed; the client sees a clean close (found by a new user)', async () => {
    const handle = await startApp({ controllers: [WhoController] });
    const client = handle.client();
    const closes: unknown[] = [];
    client.on('close', (error) => void closes.push(error));
    const id = await firstValueFrom(client.send<string>('login', 'x'));
    const connection = handle.server.connections.get(id)!;
    await connection.close();
    expect(connection.closed).toBe(true);
    expect(handle.server.connections.has(id)).toBe(false);
    await until(() => closes.length === 1, 5_000, "the client's close event");
    expect(closes).toEqual([undefined]); // closed on purpose, no call cut off: not a failure
  });

  test('connection.ping() measures the round trip to a ClientSmux on the control stream', async () => {
    const handle = await startApp({ controllers: [WhoController] });
    const client = handle.client();
    const id = await firstValueFrom(client.send<string>('login', 'x'));
    const connection = handle.server.connections.get(id)!;
    expect(connection.rtt).toBeNull();
    const rtt = await within(connection.ping(), 'the ping');
    expect(rtt).toBeGreaterThanOrEqual(0);
    expect(rtt).toBeLessThan(1_000);
    expect(connection.rtt).toBe(rtt);
    expect(handle.server.metrics.snapshot().rtt).toMatchObject({ count: 1, sum: rtt });
  });

  test('a peer that did not name the control feature (a Go caller of protocol 1) is not pinged: ERR_SMUX_UNAVAILABLE at once', async () => {
    const handle = await startApp({ controllers: [WhoController] });
    const accepted: SmuxConnection[] = [];
    handle.server.on('connection', (connection) => void accepted.push(connection));
    const session = await rawSession(handle.port);
    const hello = rawCall(session, encodeMessage(Kind.HELLO, 0, { protocol: 1 }));
    await until(() => hello.messages.length === 1, 5_000, 'the hello');
    expect(await rejection(accepted[0].ping())).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE' });
    expect(hello.messages.map((m) => m.kind)).toEqual([Kind.HELLO]); // no PING it could not read
  });

  test('a ClientSmux does not serve calls: send() and emit() to it fail at once with ERR_SMUX_UNAVAILABLE, saying who does', async () => {
    const handle = await startApp({ controllers: [WhoController] });
    const client = handle.client();
    const id = await firstValueFrom(client.send<string>('login', 'x'));
    const connection = handle.server.connections.get(id)!;
    expect(connection.servesCalls).toBe(false);
    const error = await rejection(firstValueFrom(connection.send('anything', 1)));
    expect(error).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE', message: expect.stringContaining('connectTo') });
    expect(await rejection(firstValueFrom(connection.emit('anything', 1)))).toMatchObject({ code: 'ERR_SMUX_UNAVAILABLE' });
  });

  test('ctx.getConnection() on a context made by hand: ERR_SMUX_UNAVAILABLE', async () => {
    const { createSmuxContext } = await import('../../lib/nest/smux.context.js');
    const session = await rawSession((await startApp({ controllers: [WhoController] })).port);
    const ctx = createSmuxContext(
      session.openChannel(),
      'p',
      {},
      { signal: new AbortController().signal, remainingMs: undefined, duplex: null, notByteStream: () => undefined },
    );
    expect(() => ctx.getConnection()).toThrow(expect.objectContaining({ code: 'ERR_SMUX_UNAVAILABLE' }));
  });

  // Found by a new-user trial: 'connection' came as the socket was accepted, before the peer's hello, so a worker's
  // connection read servesCalls false there and a gateway's listener could not tell it from a plain client.
  test("'connection' comes once the peer said hello: servesCalls tells a worker (connectTo) from a plain client", async () => {
    const gateway = await startApp({ controllers: [WhoController] });
    const seen: boolean[] = [];
    gateway.server.on('connection', (connection) => void seen.push(connection.servesCalls));
    await gateway.client().connect();
    await until(() => seen.length === 1, 5_000, "the client's connection");
    await startApp({ server: { connectTo: { host: '127.0.0.1', port: gateway.port } } });
    await until(() => seen.length === 2, 5_000, "the worker's connection");
    expect(seen).toEqual([false, true]);
    expect([...gateway.server.connections.values()].map((c) => c.servesCalls)).toEqual([false, true]);
  });

  test("from a peer that says no hello, 'connection' still comes before its first call", async () => {
    const handle = await startApp({ controllers: [WhoController] });
    const announced: string[] = [];
    handle.server.on('connection', (connection) => void announced.push(connection.id));
    const session = await rawSession(handle.port);
    const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, 'dave', { id: '1', pattern: 'login' }));
    const id = (await within(call.last, 'the reply')).body;
    expect(announced).toEqual([id]);
    expect(seenInHandlers.map((c) => c.id)).toEqual([id]);
  });
});
