/**
 * What one connection may hold of the server: requests still arriving (maxPendingRequestBytes), replies it does
 * not read (maxQueuedReplyBytes, then replyStallTimeout), requests that trickle in (requestTimeout), and the
 * connection slots (maxConnections, maxConnectionsPerAddress, evicting the connection idle longest). Raw smux
 * peers play the misbehaving clients; the server's time is a fake clock, so no test sleeps.
 */
import * as net from 'node:net';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { concat, count, delay, firstValueFrom, from, lastValueFrom, type Observable, of } from 'rxjs';
import { ClientSmux, Session, type SmuxError } from '../../lib/index.js';
import { encodeMessage, Kind } from '../../lib/nest/call-codec.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { logLines } from '../helpers/logs.js';
import { type AppHandle, closeAll, rawCall, rawSession, rejection, smuxError, startApp, trackClient, until, within } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

@Controller()
class BudgetController {
  @MessagePattern('blob') // `size` bytes back
  blob(@Payload() size: number): Buffer {
    return Buffer.alloc(size, 1);
  }

  @MessagePattern('echo')
  echo(@Payload() value: unknown): unknown {
    return value;
  }

  @MessagePattern('burst') // `size` bytes back in 64 KiB values, emitted in one turn; with `more`, one more value later
  burst(@Payload() { size, more }: { size: number; more?: boolean }): Observable<Buffer> {
    const values = from(Array.from({ length: size / (64 * KiB) }, () => Buffer.alloc(64 * KiB, 3)));
    return more === true ? concat(values, of(Buffer.alloc(64 * KiB, 4)).pipe(delay(50))) : values;
  }

  @MessagePattern('pulled') // `items` values of `size` bytes, pulled as the caller reads
  async *pulled(@Payload() { items, size }: { items: number; size: number }): AsyncGenerator<Buffer> {
    for (let i = 0; i < items; i++) yield Buffer.alloc(size, i & 0xff);
  }
}

/** A REQUEST declaring `size` bytes of body, cut to its first `sent` bytes. */
function partialRequest(id: string, size: number, sent: number): Buffer {
  return Buffer.concat(encodeMessage(Kind.REQUEST, 0, Buffer.alloc(size, 2), { id, pattern: 'echo' })).subarray(0, sent);
}

const request = (pattern: string, data: unknown, id = '1'): Buffer[] => encodeMessage(Kind.REQUEST, 0, data, { id, pattern });

/** Advances the server's fake clock in sweep-sized steps, letting I/O run between them. */
async function advance(clock: FakeClock, ms: number): Promise<void> {
  for (let left = ms; left > 0; left -= 500) {
    clock.advance(Math.min(500, left));
    await new Promise((resolve) => setImmediate(resolve));
  }
}

afterEach(closeAll);

describe('maxPendingRequestBytes: what a connection sends and no handler has read yet', () => {
  test('partial requests past the budget fail with the retryable ERR_SMUX_LIMIT; cancelling them frees the budget', async () => {
    const handle = await startApp({
      controllers: [BudgetController],
      server: { maxMessageBytes: 1 * MiB, maxPendingRequestBytes: 1 * MiB },
    });
    const session = await rawSession(handle.port);
    // Three requests of 1 MiB, 400 KiB of each sent: the third passes the 1 MiB budget.
    // Three requests of 1 MiB, 400 KiB of each sent: whichever passes the 1 MiB budget (they arrive interleaved)
    // is refused, the others are held.
    const calls = ['1', '2', '3'].map((id) => rawCall(session, [partialRequest(id, 1 * MiB - 64, 400 * KiB)]));
    const refused = await within(Promise.race(calls.map((call) => call.last)), 'a request to be refused');
    expect(refused.body).toEqual({
      code: 'ERR_SMUX_LIMIT',
      message: expect.stringContaining("the server's maxPendingRequestBytes"),
      retryable: true,
    });
    expect(calls.map((call) => call.messages.length).sort()).toEqual([0, 0, 1]);
    // The caller gives up on them: their bytes are released, and the connection can send as much again.
    for (const call of calls) call.channel.destroy();
    const again = ['4', '5'].map((id) => rawCall(session, [partialRequest(id, 1 * MiB - 64, 400 * KiB)]));
    const whole = rawCall(session, request('echo', 'still served', '6'));
    expect((await within(whole.last, 'a whole request')).body).toBe('still served');
    expect(again.every((call) => call.messages.length === 0)).toBe(true);
  });

  test('the budget is per connection: a peer that fills its own does not touch another client', async () => {
    const handle = await startApp({
      controllers: [BudgetController],
      server: { maxMessageBytes: 1 * MiB, maxPendingRequestBytes: 1 * MiB },
    });
    const hog = await rawSession(handle.port);
    const held = rawCall(hog, [partialRequest('1', 1 * MiB - 64, 900 * KiB)]);
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: handle.port }));
    expect(await firstValueFrom(client.send<Buffer>('echo', Buffer.alloc(800 * KiB)))).toHaveLength(800 * KiB);
    expect(held.messages).toEqual([]);
  });

  test('the server refuses a budget below maxMessageBytes at construction', async () => {
    await expect(startApp({ server: { maxMessageBytes: 2 * MiB, maxPendingRequestBytes: 1 * MiB } })).rejects.toEqual(
      smuxError('ERR_SMUX_INVALID_CONFIG', 'maxPendingRequestBytes must be at least maxMessageBytes'),
    );
  });
});

describe('maxQueuedReplyBytes and replyStallTimeout: a caller that does not read its replies', () => {
  test('replies past the budget fail their calls with ERR_SMUX_LIMIT; a caller that stays stalled is disconnected', async () => {
    const clock = new FakeClock();
    // maxRefusedStreams 0: the session's own ERR_SMUX_LIMIT (a stream flood) would need no refusal; ours is not one.
    const handle = await startApp({
      controllers: [BudgetController],
      server: { smux: { clock, maxRefusedStreams: 0 }, maxQueuedReplyBytes: 2 * MiB, replyStallTimeout: 5_000 },
    });
    const session = await rawSession(handle.port);
    // A caller that never reads: each reply's stream window (256 KiB) fills, the rest stays queued on the server.
    const unread = ['1', '2', '3'].map((id) => {
      const call = rawCall(session, request('blob', 1 * MiB, id));
      call.channel.pause();
      return call;
    });
    // Once the writer had its turn, 3 × (1 MiB − the 256 KiB window) stays queued: the caller is behind, and even
    // without the call holding the most, another 1 MiB does not fit the budget.
    await until(() => (handle.sessions[0]?.stats.bytesOut ?? 0) >= 768 * KiB, 5_000, 'the three windows to go out');
    const fourth = rawCall(session, request('blob', 1 * MiB, '4'));
    const refused = await within(fourth.last, 'the fourth reply to be refused');
    expect(unread.every((call) => call.messages.length === 0)).toBe(true);
    // Not retryable (ERR_SMUX_LIMIT's default, so the body leaves it out): the handler ran, a retry would run it again.
    expect(refused.body).toEqual({ code: 'ERR_SMUX_LIMIT', message: expect.stringContaining("the server's maxQueuedReplyBytes") });

    // Still not reading after replyStallTimeout: the server disconnects the caller, and says why.
    const closed = new Promise<unknown>((resolve) => session.once('close', resolve));
    await advance(clock, 6_000);
    await within(closed, 'the stalled caller to be disconnected');
    expect(
      logLines.some((l) => l.level === 'warn' && /^Disconnected 127\.0\.0\.1:\d+: it left \d+ bytes of replies unread/.test(l.message)),
    ).toBe(true);
    await until(() => handle.sessions[0].isClosed, 5_000, 'the server to see its end');
    expect(logLines.filter((l) => /streams in a row/.test(l.message))).toEqual([]);
    // One WARN says it: the connection's end is not reported again as lost ("Lost the connection …").
    await new Promise((resolve) => setImmediate(resolve));
    const warnings = logLines.filter((l) => l.level === 'warn' && l.context === 'ServerSmux').map((l) => l.message);
    expect(warnings.filter((m) => !m.startsWith('A call from'))).toEqual([
      expect.stringMatching(/^Disconnected 127\.0\.0\.1:\d+: it left/),
    ]);
  });

  test('a large reply the caller has not taken yet does not refuse the calls beside it; the call holding it is refused', async () => {
    const handle = await startApp({ controllers: [BudgetController], server: { maxQueuedReplyBytes: 2 * MiB } });
    const linesBefore = logLines.length;
    const session = await rawSession(handle.port);
    // 3 MiB emitted in one turn: a burst within twice the budget. The caller takes its stream's window (256 KiB) and
    // no more for now, so ≈ 2.75 MiB stays queued — past the budget, and the caller is behind.
    const big = rawCall(session, request('burst', { size: 3 * MiB, more: true }, 'big'));
    big.channel.pause();
    await until(() => (handle.sessions[0]?.stats.bytesOut ?? 0) >= 256 * KiB, 5_000, 'the big reply’s window to go out');
    // Small calls on the same connection are answered: their replies fit the budget beside the big one (before,
    // each was refused with ERR_SMUX_LIMIT until the big reply had drained below the budget).
    const small = ['1', '2', '3'].map((id) => rawCall(session, request('echo', `small ${id}`, id)));
    const answers = await within(Promise.all(small.map((call) => call.last)), 'the small calls to be answered');
    expect(answers.map((message) => message.body)).toEqual(['small 1', 'small 2', 'small 3']);
    // The big call's next value, 50 ms later, is refused: it holds the queue. The caller reads on and gets every
    // value queued before it, then the error.
    await until(() => handle.server.metrics.snapshot().calls.failed.ERR_SMUX_LIMIT === 1, 5_000, 'the big call to be refused');
    big.channel.resume();
    const last = await within(big.last, 'the big call to end');
    expect(last.body).toEqual({ code: 'ERR_SMUX_LIMIT', message: expect.stringContaining("the server's maxQueuedReplyBytes") });
    expect(big.messages.slice(0, -1).map((message) => (message.body as Buffer).length)).toEqual(Array(48).fill(64 * KiB));
    // The server says so in its log (a rate-limited warn).
    const warned = logLines
      .slice(linesBefore)
      .filter(
        (l) => l.level === 'warn' && /^A call from 127\.0\.0\.1:\d+ failed: the connection has \d+ bytes of replies queued/.test(l.message),
      );
    expect(warned).toHaveLength(1);
  });

  test('beside the call holding the most, the burst ceiling (twice the budget) still bounds the connection', async () => {
    const handle = await startApp({ controllers: [BudgetController], server: { maxQueuedReplyBytes: 2 * MiB } });
    const session = await rawSession(handle.port);
    // 3.75 MiB held unread, ≈ 3.5 MiB of it queued: beside it, at most ≈ 0.5 MiB more fits the 4 MiB ceiling.
    const big = rawCall(session, request('burst', { size: 3.75 * MiB }, 'big'));
    big.channel.pause();
    await until(() => (handle.sessions[0]?.stats.bytesOut ?? 0) >= 256 * KiB, 5_000, 'the big reply’s window to go out');
    const fits = rawCall(session, request('echo', 'fits', '1'));
    expect((await within(fits.last, 'the small reply')).body).toBe('fits');
    const tooBig = rawCall(session, request('blob', 1 * MiB, '2')); // fits beside the big reply, not within the ceiling
    expect((await within(tooBig.last, 'the reply past the ceiling to be refused')).body).toEqual({
      code: 'ERR_SMUX_LIMIT',
      message: expect.stringMatching(
        /the server's maxQueuedReplyBytes \(2097152 bytes; 4194304 for a burst.*\): reply with an AsyncIterable .*, or raise maxQueuedReplyBytes$/,
      ),
    });
  });

  test('a caller that reads slowly but reads is never cut off: every reply arrives', async () => {
    const clock = new FakeClock();
    const handle = await startApp({
      controllers: [BudgetController],
      server: { smux: { clock }, maxQueuedReplyBytes: 2 * MiB, replyStallTimeout: 5_000 },
    });
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: handle.port }));
    const replies = await Promise.all([1, 2, 3].map(() => firstValueFrom(client.send<Buffer>('blob', 1 * MiB))));
    expect(replies.map((r) => r.length)).toEqual([MiB, MiB, MiB]);
  });
});

describe('a pulled reply (an AsyncIterable) waits for room in the budget instead of failing', () => {
  test('64 async-generator replies at once, 16 MiB of windows against a budget of 2 MiB, to a caller that reads: all arrive whole', async () => {
    const handle = await startApp({ controllers: [BudgetController], server: { maxQueuedReplyBytes: 2 * MiB } });
    const client = handle.client();
    // Before (a hostile-peer trial, 500 such calls at the default budget): half of them failed with ERR_SMUX_LIMIT.
    const calls = Array.from({ length: 64 }, () =>
      lastValueFrom(client.send<Buffer>('pulled', { items: 64, size: 16 * KiB }).pipe(count())),
    );
    expect(await within(Promise.all(calls), 'every reply', 30_000)).toEqual(Array.from({ length: 64 }, () => 64));
  });

  test('what waits for room is counted: past the budget, a waiting item fails its call instead of waiting in memory', async () => {
    const handle = await startApp({ controllers: [BudgetController], server: { maxQueuedReplyBytes: 2 * MiB } });
    const session = await rawSession(handle.port);
    // 40 pulled replies of 256 KiB items to a caller that reads none: past the windows and the queues, at most 2 MiB
    // of items (8) may wait for room; the calls beyond are refused (on the old code all 40 waited, holding an item each).
    for (let i = 0; i < 40; i++) rawCall(session, request('pulled', { items: 10, size: 256 * KiB }, String(i))).channel.pause();
    const refused = (): number => handle.server.metrics.snapshot().calls.failed.ERR_SMUX_LIMIT ?? 0;
    await until(() => refused() >= 10, 5_000, 'the calls past the budget to be refused');
  });

  test('a caller that stops reading them is still disconnected after replyStallTimeout', async () => {
    const clock = new FakeClock();
    const handle = await startApp({
      controllers: [BudgetController],
      server: { smux: { clock, maxRefusedStreams: 0 }, maxQueuedReplyBytes: 2 * MiB, replyStallTimeout: 5_000 },
    });
    const session = await rawSession(handle.port);
    // 96 pulled replies to a caller that reads none: past each window, each queues up to its stream's 64 KiB
    // high-water mark — 6 MiB, past the budget's burst ceiling (4 MiB), so pulls wait for room that never comes.
    for (let i = 0; i < 96; i++) rawCall(session, request('pulled', { items: 1_000, size: 16 * KiB }, String(i))).channel.pause();
    await until(() => (handle.sessions[0]?.stats.bytesOut ?? 0) >= 4 * MiB, 5_000, 'the windows to go out');
    // The pulls reach the budget over a few turns (PULLS_PER_TURN); the stall counts from then: the clock goes on
    // in sweep-sized steps, with real time between them, until the server gives up on the caller (bounded).
    let closed = false;
    session.once('close', () => (closed = true));
    for (let step = 0; step < 400 && !closed; step++) {
      clock.advance(500);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(closed).toBe(true);
    expect(
      logLines.some((l) => l.level === 'warn' && /^Disconnected 127\.0\.0\.1:\d+: it left \d+ bytes of replies unread/.test(l.message)),
    ).toBe(true);
    await until(() => handle.server.metrics.snapshot().calls.inFlight === 0, 5_000, 'the calls to end');
  });
});

describe('a reply the caller refuses', () => {
  test('a reply over the client’s maxMessageBytes fails that call only: the server drops what stays queued for it', async () => {
    const handle = await startApp({ controllers: [BudgetController], server: { maxMessageBytes: 32 * MiB } });
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: handle.port })); // its maxMessageBytes: 8 MiB
    const error = await rejection(firstValueFrom(client.send('blob', 20 * MiB)));
    expect(error).toEqual(
      smuxError(
        'ERR_SMUX_LIMIT',
        "exceeds the client's maxMessageBytes (8388608 bytes): have the handler stream it (an Observable or AsyncIterable of smaller items), or raise the client's maxMessageBytes",
      ),
    );
    // Before, ≈ 20 MiB stayed queued on the server's stream and every later reply on the connection was refused.
    expect(await firstValueFrom(client.send('echo', 'next'))).toBe('next');
    expect(await firstValueFrom(client.send<Buffer>('blob', 1 * MiB))).toHaveLength(MiB);
  });
});

describe('requestTimeout: requests that trickle in', () => {
  test('a request not whole within requestTimeout fails with ERR_SMUX_TIMEOUT; a stream that sent nothing is closed', async () => {
    const clock = new FakeClock();
    const handle = await startApp({ controllers: [BudgetController], server: { smux: { clock }, requestTimeout: 3_000 } });
    const session = await rawSession(handle.port);
    const half = rawCall(session, [partialRequest('1', 100 * KiB, 10 * KiB)]);
    const silent = rawCall(session, []);
    await until(() => handle.sessions[0]?.numStreams === 2, 5_000, 'both streams at the server');
    await advance(clock, 2_000);
    expect(half.messages).toEqual([]);
    await advance(clock, 2_000);
    const timedOut = await within(half.last, 'the half request to time out');
    expect(timedOut.body).toEqual({
      code: 'ERR_SMUX_TIMEOUT',
      message: expect.stringContaining("within 3000 ms (the server's requestTimeout)"),
    });
    expect(
      logLines.some((l) => l.level === 'warn' && /^A call from .* failed: the request did not arrive whole within 3000 ms/.test(l.message)),
    ).toBe(true);
    // The server forgot the silent stream; its FIN waits for the stream's first byte (writing on a stream before
    // the opener's first frame could race Go's OpenStream), and nothing else is sent on it.
    silent.channel.write(Buffer.from([0]));
    await within(silent.ended, 'the silent stream to be closed');
    expect(silent.messages).toEqual([]);
    // The connection itself is fine.
    expect((await within(rawCall(session, request('echo', 1, '9')).last, 'a call')).body).toBe(1);
  });
});

describe('connection slots', () => {
  async function connected(port: number, localAddress = '127.0.0.1'): Promise<{ session: Session; socket: net.Socket }> {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const session = Session.client(socket, { version: 2, keepAliveDisabled: true });
    return { session, socket };
  }

  let handle: AppHandle;

  test('when full, a new connection takes the slot of the connection idle longest; without idle ones it gets ERR_SMUX_LIMIT', async () => {
    const clock = new FakeClock();
    handle = await startApp({ controllers: [BudgetController], server: { smux: { clock }, maxConnections: 2, evictIdleAfter: 5_000 } });
    const a = await connected(handle.port);
    const b = await connected(handle.port);
    expect((await within(rawCall(a.session, request('echo', 'a')).last, 'a')).body).toBe('a');
    await advance(clock, 1_000);
    expect((await within(rawCall(b.session, request('echo', 'b')).last, 'b')).body).toBe('b');

    // Neither is idle for 5 s yet: a third connection is refused with a clear error (never a bare close).
    const c = await connected(handle.port);
    const refused = await within(rawCall(c.session, request('echo', 'c')).last, 'the refusal');
    expect(refused.body).toEqual({
      code: 'ERR_SMUX_LIMIT',
      message: expect.stringContaining('2 connections open (maxConnections 2)'),
      retryable: true,
    });
    const cClosed = new Promise((resolve) => c.session.once('close', resolve));
    await advance(clock, 1_500); // a refused connection hangs up 1 s after answering
    await within(cClosed, 'the refused connection to close');

    // Later a is idle for 5 s (and idler than b): a new connection takes a's slot.
    await advance(clock, 3_000);
    const aClosed = new Promise((resolve) => a.session.once('close', resolve));
    const d = await connected(handle.port);
    expect((await within(rawCall(d.session, request('echo', 'd')).last, 'd')).body).toBe('d');
    await within(aClosed, 'the idle connection to be closed');
    expect(b.session.isClosed).toBe(false);
    for (const { session } of [b, d]) session.destroy();
  });

  test('when full, a connection that opened no stream (no hello, no call) for 2 s gives up its slot first, before evictIdleAfter', async () => {
    const clock = new FakeClock();
    handle = await startApp({ controllers: [BudgetController], server: { smux: { clock }, maxConnections: 2, evictIdleAfter: 5_000 } });
    const a = await connected(handle.port);
    expect((await within(rawCall(a.session, request('echo', 'a')).last, 'a')).body).toBe('a');
    await advance(clock, 3_500);
    const silent = await connected(handle.port); // connects and says nothing
    await until(() => handle.sessions.length === 2, 2_000, 'the server to accept the silent connection');
    const silentClosed = new Promise((resolve) => silent.session.once('close', resolve));

    // 1 s later: a has been idle 4.5 s, the silent one silent 1 s (a ClientSmux's hello waits 2 s): neither gives way.
    await advance(clock, 1_000);
    const early = await connected(handle.port);
    const refused = await within(rawCall(early.session, request('echo', 'early')).last, 'the refusal');
    expect(refused.body).toMatchObject({ code: 'ERR_SMUX_LIMIT' });
    early.session.destroy();

    // 1.5 s more: a is idle 6 s (past evictIdleAfter), the silent one silent 2.5 s: the silent one goes, a stays.
    await advance(clock, 1_500);
    const next = await connected(handle.port);
    expect((await within(rawCall(next.session, request('echo', 'next')).last, 'next')).body).toBe('next');
    await within(silentClosed, 'the silent connection to be closed');
    expect(a.session.isClosed).toBe(false);
    expect((await within(rawCall(a.session, request('echo', 'a2')).last, 'a again')).body).toBe('a2');
    for (const { session } of [a, next]) session.destroy();
  });

  test('refused connections still open take no slot: the next refusal counts the connections admitted, and so does the limit', async () => {
    handle = await startApp({ controllers: [BudgetController], server: { maxConnections: 2, evictIdleAfter: 0 } });
    const admitted = [await connected(handle.port), await connected(handle.port)];
    for (const [i, { session }] of admitted.entries()) {
      expect((await within(rawCall(session, request('echo', i)).last, 'an admitted call')).body).toBe(i);
    }
    const refused = [];
    for (let i = 0; i < 3; i++) {
      const peer = await connected(handle.port);
      refused.push(peer);
      const answer = await within(rawCall(peer.session, request('echo', 'x')).last, 'the refusal');
      expect(answer.body).toMatchObject({
        code: 'ERR_SMUX_LIMIT',
        message: expect.stringContaining(': 2 connections open (maxConnections 2)'),
      });
    }
    // The refused ones leave (they hang up 1 s after their refusal); one admitted connection leaves: its slot is free.
    admitted[0].session.destroy();
    await until(() => handle.sessions[0].isClosed, 5_000, 'the server to see the admitted connection leave');
    const next = await connected(handle.port);
    expect((await within(rawCall(next.session, request('echo', 'in')).last, 'a call on the freed slot')).body).toBe('in');
    for (const { session } of [admitted[1], next, ...refused]) session.destroy();
  });

  test('a flood of refused connections holds at most 256 of them open; the rest are closed at once, the admitted one keeps working', async () => {
    handle = await startApp({ controllers: [BudgetController], server: { maxConnections: 1, evictIdleAfter: 0 } });
    const admitted = await connected(handle.port);
    expect((await within(rawCall(admitted.session, request('echo', 'in')).last, 'the admitted call')).body).toBe('in');
    // 300 sockets that say nothing: a refused one waits up to 10 s for its first stream, to answer it with the refusal.
    const flood: { socket: net.Socket; closed: boolean }[] = [];
    for (let i = 0; i < 300; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: 50 }, async () => {
          const socket = net.connect({ port: handle.port, host: '127.0.0.1' });
          socket.on('error', () => undefined); // a close at once may come as a reset
          await new Promise<void>((resolve) => socket.once('connect', resolve));
          const peer = { socket, closed: false };
          socket.once('close', () => (peer.closed = true));
          return peer;
        }),
      );
      flood.push(...batch);
    }
    await until(() => flood.filter((peer) => peer.closed).length >= 300 - 256, 5_000, 'the refused past 256 to be closed');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(flood.filter((peer) => peer.closed).length).toBe(300 - 256); // the first 256 still wait to tell theirs
    expect((await within(rawCall(admitted.session, request('echo', 'still')).last, 'the admitted call')).body).toBe('still');
    expect(
      logLines.some(
        (l) =>
          l.level === 'warn' &&
          /^Closed a connection from .* at once: 1 connections open \(maxConnections 1\), and 256 refused connections wait to hang up$/.test(
            l.message,
          ),
      ),
    ).toBe(true);
    for (const peer of flood) peer.socket.destroy();
    admitted.session.destroy();
  });

  test('a connection that never sends a byte is closed by keep-alive, and the log says it sent nothing (not a lost client)', async () => {
    const clock = new FakeClock();
    handle = await startApp({ controllers: [BudgetController], server: { smux: { clock } } });
    logLines.length = 0;
    const socket = net.connect({ port: handle.port, host: '127.0.0.1' });
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('connect', resolve));
    await until(() => handle.sessions.length === 1, 2_000, 'the server to accept it');
    const closed = new Promise((resolve) => socket.once('close', resolve));
    await advance(clock, 31_000); // keepAliveTimeout: 30 s
    await within(closed, 'the silent socket to be closed');
    await until(() => logLines.some((l) => l.context === 'ServerSmux' && l.level === 'warn'), 2_000, 'the log line');
    const warnings = logLines.filter((l) => l.context === 'ServerSmux' && l.level === 'warn').map((l) => l.message);
    expect(warnings).toEqual([
      expect.stringMatching(/^Closed the connection from 127\.0\.0\.1:\d+: it sent nothing \(no frame received for \d+ ms/),
    ]);
  });

  test('maxConnectionsPerAddress: one address cannot take every slot; other addresses still get in', async () => {
    handle = await startApp({ controllers: [BudgetController], server: { maxConnectionsPerAddress: 1, evictIdleAfter: 0 } });
    const first = await connected(handle.port, '127.0.0.2');
    expect((await within(rawCall(first.session, request('echo', 1)).last, 'the first')).body).toBe(1);
    const second = await connected(handle.port, '127.0.0.2');
    const refused = await within(rawCall(second.session, request('echo', 2)).last, 'the refusal');
    expect(refused.body).toEqual({
      code: 'ERR_SMUX_LIMIT',
      message: expect.stringContaining('1 connections from 127.0.0.2'),
      retryable: true,
    });
    const other = await connected(handle.port, '127.0.0.3');
    expect((await within(rawCall(other.session, request('echo', 3)).last, 'another address')).body).toBe(3);
    for (const { session } of [first, second, other]) session.destroy();
  });

  test('a refused ClientSmux fails with ERR_SMUX_UNAVAILABLE whose cause is the ERR_SMUX_LIMIT, even when its hello is late', async () => {
    handle = await startApp({ controllers: [BudgetController], server: { maxConnections: 1, evictIdleAfter: 0 } });
    const first = trackClient(new ClientSmux({ host: '127.0.0.1', port: handle.port }));
    expect(await firstValueFrom(first.send('echo', 'in'))).toBe('in');
    // A raw peer that waits before its first stream: the server keeps the refused connection open for it.
    const late = await connected(handle.port);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const refused = await within(rawCall(late.session, request('echo', 'late')).last, 'the late refusal');
    expect(refused.body).toEqual({ code: 'ERR_SMUX_LIMIT', message: expect.any(String), retryable: true });
    const extra = trackClient(new ClientSmux({ host: '127.0.0.1', port: handle.port }));
    const error = await rejection(firstValueFrom(extra.send('echo', 'x')));
    expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'connection limit'));
    // The server's refusal reaches the caller as it was made: retryable (a slot may free up).
    expect((error as SmuxError).cause).toMatchObject({ code: 'ERR_SMUX_LIMIT', retryable: true });
    late.session.destroy();
  });
});
