import net from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { type CallHandler, Controller, type ExecutionContext, Injectable, type NestInterceptor, UseInterceptors } from '@nestjs/common';
import { type Deserializer, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, type Observable, toArray } from 'rxjs';
import { type CallMessage, encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { MessageReader } from '../../lib/nest/message-reader.js';
import { Cmd, type SmuxChannel } from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { RawPeer, settle, watchUncaught } from '../helpers/sessions.js';
import { closeAll, type Deferred, deferred, loggedErrors, rawCall, rawSession, startApp, until, within } from './helpers.js';

/*
 * Regression tests for the review's server-side findings (ServerSmux / ServerCall): each one is named after
 * the failure it prevents, and failed before the fix.
 */

let gate: Deferred<void>;
let running = 0;
let ran = 0;
const events: unknown[] = [];

@Injectable()
class PassThrough implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle();
  }
}

@Controller()
class RegressionsController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
  }

  @MessagePattern('ping')
  ping() {
    return 'pong';
  }

  @MessagePattern('gated')
  async gated(@Payload() n: number) {
    running++;
    await gate.promise;
    return n;
  }

  @MessagePattern('blob')
  blob(@Payload() n: number) {
    return Buffer.alloc(n, 7);
  }

  @MessagePattern('work')
  work() {
    ran++;
    return 'done';
  }

  @MessagePattern({ cmd: 'sum' })
  sum(@Payload() data: number[]) {
    return data.reduce((a, b) => a + b, 0);
  }

  @MessagePattern('generator')
  @UseInterceptors(PassThrough)
  async *generator(@Payload() n: number): AsyncGenerator<number> {
    for (let i = 1; i <= n; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      yield i * 10;
    }
  }

  @MessagePattern('readable')
  @UseInterceptors(PassThrough)
  readable() {
    return Readable.from(['alpha', 'beta', 'gamma']);
  }

  @EventPattern('evt')
  evt(@Payload() data: unknown) {
    events.push(data);
  }
}

const MiB = 1024 * 1024;

/** The call messages in a stream's bytes. */
function messagesOf(bytes: Buffer): CallMessage[] {
  const messages: CallMessage[] = [];
  new MessageReader(64 * MiB).push(bytes, { onMessage: (m: CallMessage) => void messages.push(m) });
  return messages;
}

/** One REQUEST as a single buffer. */
const request = (pattern: string, body: unknown, id = '1', fields: { patternIsJson?: boolean; timeout?: number } = {}): Buffer =>
  Buffer.concat(encodeMessage(Kind.REQUEST, 0, body, { id, pattern, ...fields }));

/** A raw smux peer (hand-built frames) on a TCP connection that, like Go, keeps writing after our EOF. */
async function rawPeer(port: number, version: 1 | 2): Promise<RawPeer> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  peers.add(socket);
  return new RawPeer(socket, version);
}
const peers = new Set<net.Socket>();

let guard: ReturnType<typeof watchUncaught>;

describe('regressions: ServerSmux', () => {
  beforeEach(() => {
    guard = watchUncaught();
    gate = deferred();
    running = 0;
    ran = 0;
    events.length = 0;
  });
  afterEach(async () => {
    guard.dispose();
    for (const socket of peers) socket.destroy();
    peers.clear();
    await closeAll();
  });

  // ── (1) writes on a stream the session already ended ──────────────────────────────────────────────────

  test('a refused connection (over maxConnections) whose client keeps sending after our EOF does not crash the server; the call gets ERR_SMUX_LIMIT at once', async () => {
    const clock = new FakeClock();
    const handle = await startApp({ controllers: [RegressionsController], server: { maxConnections: 1, smux: { clock } } });
    await rawPeer(handle.port, 2); // takes the one slot
    await until(() => handle.sessions.length === 1, 5_000, 'the first connection');
    const raw = await rawPeer(handle.port, 2);
    const req = request('echo', 'x'.repeat(1000));
    raw.send(Cmd.SYN, 3);
    raw.send(Cmd.PSH, 3, req.subarray(0, 500)); // half a request
    await until(() => handle.sessions[1]?.stats.framesIn === 2, 5_000, 'the half request at the server');
    clock.advance(1_000); // the server hangs up on the refused connection
    await until(() => raw.ended, 5_000, "the server's EOF");
    const beforeTheRest = messagesOf(raw.dataFor(3));
    raw.send(Cmd.PSH, 3, req.subarray(500)); // the client did not notice and completes its request
    await settle();
    expect(guard.errors).toEqual([]);
    // The refusal was answered on the first bytes, not once the request was complete.
    expect(beforeTheRest).toEqual([
      expect.objectContaining({
        flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT,
        body: { code: 'ERR_SMUX_LIMIT', message: expect.any(String), retryable: true },
      }),
    ]);
    expect(raw.finFor(3)).toBe(true);
  });

  test('server.close() while a client is still sending on a stream the closing session ended does not crash the server; the call gets ERR_SMUX_SHUTTING_DOWN', async () => {
    const clock = new FakeClock();
    // Protocol v1 (no stream window): a 16 MiB reply the client does not read keeps the server's flush blocked,
    // so the closing session is still reading when the rest of the request arrives.
    // (A budget for unread replies above the 16 MiB, or the small reply would be refused.)
    const handle = await startApp({
      controllers: [RegressionsController],
      server: { smux: { version: 1, clock }, maxQueuedReplyBytes: 32 * MiB },
    });
    const raw = await rawPeer(handle.port, 1);
    raw.socket.pause();
    raw.send(Cmd.SYN, 3);
    raw.send(Cmd.PSH, 3, request('blob', 16 * MiB, '3'));
    raw.send(Cmd.SYN, 7);
    raw.send(Cmd.PSH, 7, request('gated', 7, '7'));
    await until(() => running === 1 && handle.sessions[0]?.stats.writeBlocked === true, 10_000, 'a running call and a blocked flush');
    const session = handle.sessions[0];

    const closing = handle.server.close(); // waits for 'gated'
    const req = request('echo', 'y'.repeat(1000), '5');
    raw.send(Cmd.SYN, 5);
    raw.send(Cmd.PSH, 5, req.subarray(0, 500));
    await until(() => session.stats.framesIn >= 6, 5_000, 'the half request at the server');
    gate.resolve(); // shutdown goes on: the session closes, ending every stream, with its flush still blocked
    await until(() => session.isClosed, 5_000, 'the session closing');
    raw.send(Cmd.PSH, 5, req.subarray(500));
    await until(() => session.stats.framesIn >= 7, 5_000, 'the rest of the request at the closing server');
    await settle();
    expect(guard.errors).toEqual([]);

    raw.socket.resume();
    await until(() => raw.ended, 10_000, 'everything and EOF at the client');
    await within(closing, 'server.close()');
    expect(messagesOf(raw.dataFor(5))).toEqual([
      expect.objectContaining({
        flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT,
        body: { code: 'ERR_SMUX_SHUTTING_DOWN', message: expect.any(String) },
      }),
    ]);
    expect(messagesOf(raw.dataFor(7))).toEqual([expect.objectContaining({ flags: Flag.LAST, body: 7 })]);
    expect((messagesOf(raw.dataFor(3))[0].body as Buffer).length).toBe(16 * MiB);
    expect(guard.errors).toEqual([]);
  });

  test('a call whose request was still arriving when server.close() began gets the retryable ERR_SMUX_SHUTTING_DOWN, not a bare FIN', async () => {
    const handle = await startApp({ controllers: [RegressionsController] });
    const raw = await rawPeer(handle.port, 2);
    const req = request('echo', 'z'.repeat(1000), '3');
    raw.send(Cmd.SYN, 3);
    raw.send(Cmd.PSH, 3, req.subarray(0, 500)); // half a request: the call is not running yet
    await until(() => (handle.sessions[0]?.stats.framesIn ?? 0) >= 2, 5_000, 'the half request at the server');
    const closing = handle.server.close();
    await until(() => raw.ended, 10_000, 'the answer and EOF at the client');
    await within(closing, 'server.close()');
    expect(messagesOf(raw.dataFor(3))).toEqual([
      expect.objectContaining({
        flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT,
        body: { code: 'ERR_SMUX_SHUTTING_DOWN', message: expect.any(String) },
      }),
    ]);
    expect(guard.errors).toEqual([]);
  });

  // ── (3) events whose deserialization fails ────────────────────────────────────────────────────────────

  test('an event whose custom deserializer throws, or whose PATTERN_JSON is not JSON, is no unhandled rejection; the server keeps serving', async () => {
    const strict: Deserializer = {
      deserialize(value: unknown) {
        if (typeof value !== 'object' || value === null || !('pattern' in value)) throw new Error('bad packet');
        return value;
      },
    };
    const handle = await startApp({ controllers: [RegressionsController], server: { deserializer: strict } });
    const session = await rawSession(handle.port);
    const logged = loggedErrors.length;
    for (const buffers of [
      encodeMessage(Kind.EVENT, Flag.OPAQUE, 'garbage'),
      encodeMessage(Kind.EVENT, 0, 1, { pattern: '{not json', patternIsJson: true }),
    ]) {
      const channel = session.openChannel({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined });
      for (const buffer of buffers) channel.write(buffer);
      channel.end();
    }
    await until(() => loggedErrors.length >= logged + 2 || guard.errors.length > 0, 5_000, 'both events handled');
    await settle();
    expect(guard.errors).toEqual([]);
    const client = handle.client();
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    await within(lastValueFrom(client.emit('evt', 42), { defaultValue: undefined }), 'emit()');
    await until(() => events.length === 1, 5_000, 'the valid event');
    expect(events).toEqual([42]);
    expect(guard.errors).toEqual([]);
  });

  // ── (5) calls count from their SYN ────────────────────────────────────────────────────────────────────

  test('maxCallsPerConnection counts calls from their SYN: partial requests beyond it are refused on their first bytes', async () => {
    const handle = await startApp({ controllers: [RegressionsController], server: { maxCallsPerConnection: 10 } });
    const session = await rawSession(handle.port);
    const requests = Array.from({ length: 20 }, (_, i) => request('echo', `${i}:${'z'.repeat(1000)}`, String(i)));
    const calls = requests.map((req) => rawCall(session, [req.subarray(0, 500)]));
    const refused = await within(
      Promise.all(calls.slice(10).map((c) => c.last)),
      'the ten extra calls refused before their requests complete',
    );
    for (const message of refused)
      expect(message).toMatchObject({ flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT, body: { code: 'ERR_SMUX_LIMIT' } });
    expect(calls.slice(0, 10).map((c) => c.messages.length)).toEqual(Array(10).fill(0));
    for (let i = 0; i < 10; i++) calls[i].channel.write(requests[i].subarray(500));
    const answered = await within(Promise.all(calls.slice(0, 10).map((c) => c.last)), 'the first ten calls');
    expect(answered.map((m) => m.body)).toEqual(Array.from({ length: 10 }, (_, i) => `${i}:${'z'.repeat(1000)}`));
  });

  // ── (6) finTimeout and slow readers ───────────────────────────────────────────────────────────────────

  test('finTimeout does not cut off a caller reading a large final reply slowly but steadily; a caller that stopped reading is still forgotten', async () => {
    const clock = new FakeClock();
    const handle = await startApp({ controllers: [RegressionsController], server: { finTimeout: 300, smux: { clock } } });
    const session = await rawSession(handle.port);
    const size = 2 * MiB;
    const step = 128 * 1024;

    const steady = { bytes: 0, quota: step, ended: false, chunks: [] as Buffer[] };
    const slow: SmuxChannel = session.openChannel({
      onData: (data) => {
        steady.chunks.push(data);
        steady.bytes += data.length;
        if (steady.bytes >= steady.quota) slow.pause(); // reads about 128 KiB per 300 ms
      },
      onEnd: () => void (steady.ended = true),
      onClose: () => undefined,
    });
    for (const buffer of encodeMessage(Kind.REQUEST, 0, size, { id: 'slow', pattern: 'blob' })) slow.write(buffer);

    const stopped = { bytes: 0, ended: false };
    const gone: SmuxChannel = session.openChannel({
      onData: (data) => {
        stopped.bytes += data.length;
        gone.pause(); // reads its first bytes, then never again
      },
      onEnd: () => void (stopped.ended = true),
      onClose: () => undefined,
    });
    for (const buffer of encodeMessage(Kind.REQUEST, 0, size, { id: 'gone', pattern: 'blob' })) gone.write(buffer);

    const server = handle.sessions[0];
    await until(() => steady.bytes >= step && stopped.bytes > 0, 5_000, 'both replies flowing');
    for (let rounds = 0; !steady.ended && rounds < 100; rounds++) {
      clock.advance(300);
      steady.quota += step;
      slow.resume();
      await until(() => steady.bytes >= steady.quota || steady.ended || slow.isClosed, 5_000, 'the next part of the reply');
      if (rounds === 0) {
        // finTimeout has passed with the reply still draining; give a sweep on the wrong (real) clock its chance.
        await settle(350);
        expect(slow.peerEnded).toBe(false);
      }
    }
    expect(steady.ended).toBe(true);
    const [reply] = messagesOf(Buffer.concat(steady.chunks));
    expect(reply?.flags).toBe(Flag.LAST);
    expect((reply?.body as Buffer).length).toBe(size);

    expect(stopped.ended).toBe(false);
    for (let i = 0; i < 4 && server.numStreams > 0; i++) {
      clock.advance(300);
      await settle(5, 2);
    }
    await until(() => server.numStreams === 0, 5_000, 'both calls forgotten (neither caller sends FIN)');
  });

  // ── (7) an AsyncIterable / Readable through an interceptor ────────────────────────────────────────────

  test('an async generator wrapped by a pass-through interceptor arrives as its values, not as JSON of the generator', async () => {
    const handle = await startApp({ controllers: [RegressionsController] });
    const client = handle.client();
    expect(await within(lastValueFrom(client.send<number>('generator', 3).pipe(toArray())), 'the generator')).toEqual([10, 20, 30]);
  });

  test('a Readable wrapped by a pass-through interceptor arrives as its chunks, not as JSON of the stream', async () => {
    const handle = await startApp({ controllers: [RegressionsController] });
    const client = handle.client();
    expect(await within(lastValueFrom(client.send<string>('readable', {}).pipe(toArray())), 'the Readable')).toEqual([
      'alpha',
      'beta',
      'gamma',
    ]);
  });

  // ── (11) the route cache ──────────────────────────────────────────────────────────────────────────────

  test('pattern variants are routed but never cached (a client cannot grow the cache); a handler added after listen() is found', async () => {
    const handle = await startApp({ controllers: [RegressionsController] });
    const server = handle.server;
    const lookups: string[] = [];
    const original = server.getHandlerByPattern.bind(server);
    server.getHandlerByPattern = (pattern: string) => {
      lookups.push(pattern);
      return original(pattern);
    };
    const session = await rawSession(handle.port);
    const ask = async (pattern: string, body: unknown, patternIsJson = true): Promise<CallMessage> =>
      within(rawCall(session, [request(pattern, body, 'r', { patternIsJson })]).last, `a call to ${pattern}`);

    const variants = ['{ "cmd": "sum" }', '{"cmd" :"sum"}', '{"cmd":"\\u0073um"}'];
    for (const variant of [...variants, ...variants]) expect((await ask(variant, [1, 2, 3])).body).toBe(6);
    expect(lookups).toEqual([...variants, ...variants]); // every variant is looked up again: none was cached
    lookups.length = 0;
    for (let i = 0; i < 3; i++) expect((await ask('{"cmd":"sum"}', [i, 1])).body).toBe(i + 1);
    const client = handle.client();
    expect(await firstValueFrom(client.send({ cmd: 'sum' }, [4, 5]))).toBe(9);
    expect(lookups).toEqual(['{"cmd":"sum"}']); // the canonical text (also what ClientSmux sends) is cached

    expect((await ask('late', 1, false)).body).toBe('There is no matching message handler defined in the remote service.');
    server.addHandler('late', async (n: unknown) => `late ${String(n)}`, false);
    expect((await ask('late', 1, false)).body).toBe('late 1');
    server.addHandler({ cmd: 'sum' }, async () => 'replaced', false); // the cache starts over
    expect((await ask('{"cmd":"sum"}', [1])).body).toBe('replaced');
  });

  // ── (12) cancelled while an async deserializer runs ───────────────────────────────────────────────────

  test('a call cancelled while an async custom deserializer runs never runs its handler', async () => {
    let deserializing = 0;
    const slowDeserializer: Deserializer = {
      deserialize: async (value: unknown) => {
        deserializing++;
        await gate.promise;
        return value;
      },
    };
    const handle = await startApp({ controllers: [RegressionsController], server: { deserializer: slowDeserializer } });
    const client = handle.client();
    await client.connect();
    const subscription = client.send('work', 1).subscribe({ error: () => undefined });
    await until(() => deserializing === 1, 5_000, 'the deserializer running');
    subscription.unsubscribe(); // cancel: our FIN
    await until(() => handle.sessions[0].numStreams === 1, 5_000, 'the server to see the cancel (the control stream stays)');
    gate.resolve();
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong'); // later work goes through
    await settle();
    expect(ran).toBe(0);
    expect(await firstValueFrom(client.send('work', 2))).toBe('done');
    expect(ran).toBe(1);
  });
});
