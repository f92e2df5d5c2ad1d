/**
 * ServerCall's state machine on an in-memory session pair with a fake clock, with a stub of the server (no
 * Nest app, no sockets, no sleeps): how a call starts, is answered, refused, cancelled, timed out.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { Observable, of } from 'rxjs';
import { type Session, type SmuxChannel, SmuxError } from '../../lib/smux/index.js';
import { type CallMessage, encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { MessageReader } from '../../lib/nest/message-reader.js';
import type { CallHost } from '../../lib/nest/server-call-host.js';
import { ServerCall } from '../../lib/nest/server-call.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';
import { stubCallHost } from '../helpers/server-call-host.js';

let pair: ReturnType<typeof memorySessions>;
afterEach(() => pair?.close());

interface Harness {
  readonly calls: ServerCall[];
  readonly requests: CallMessage[];
  readonly log: string[];
  readonly host: CallHost;
}

function harness(refuse: SmuxError | null = null, maxReplyBufferBytes = 1 << 20): Harness {
  pair = memorySessions();
  const calls: ServerCall[] = [];
  const { host, requests, log } = stubCallHost(pair.clock, maxReplyBufferBytes);
  pair.server.on('channel', (channel) => calls.push(new ServerCall(host, channel, null, refuse)));
  return { calls, requests, log, host };
}

/** A caller's stream: what it writes, and the messages, FIN and close it sees. */
function caller(session: Session, ...buffers: Buffer[]) {
  const messages: CallMessage[] = [];
  const reader = new MessageReader(1 << 30);
  const seen = { messages, fin: false, closed: false, channel: null as SmuxChannel | null };
  seen.channel = session.openChannel({
    onData: (data) => reader.push(data, { onMessage: (m) => void messages.push(m) }),
    onEnd: () => (seen.fin = true),
    onClose: () => (seen.closed = true),
  });
  for (const buffer of buffers) seen.channel.write(buffer);
  return seen;
}

const request = (data: unknown, fields: Record<string, unknown> = {}) =>
  Buffer.concat(encodeMessage(Kind.REQUEST, 0, data, { id: '1', pattern: 'p', ...fields }));

describe('ServerCall', () => {
  test('REQUEST → the server dispatches it; a plain result is one RESPONSE with LAST, then FIN and a bounded wait for the caller', async () => {
    const { calls, requests, log } = harness();
    const c = caller(pair.client, request([1, 2]));
    await flush();
    expect(requests.map((m) => m.body)).toEqual([[1, 2]]);
    await calls[0].run(
      (data) => (data as number[]).length,
      [1, 2],
      null,
      () => log.push('end hook'),
    );
    await flush();
    expect(c.messages).toEqual([expect.objectContaining({ kind: Kind.RESPONSE, flags: Flag.LAST, body: 2 })]);
    expect(c.fin).toBe(true);
    expect(log).toEqual(['settled', 'end hook', 'awaitCallerFin']);
  });

  test('bytes after a unary request change nothing, whether they come in its frame or a later one', async () => {
    for (const sameFrame of [true, false]) {
      const { calls } = harness();
      const trailing = Buffer.from('not a message at all');
      const c = caller(pair.client, ...(sameFrame ? [Buffer.concat([request('x'), trailing])] : [request('x')]));
      if (!sameFrame) {
        await flush();
        c.channel!.write(trailing);
      }
      await flush();
      await calls[0].run(() => 'ok', 'x', null, null);
      await flush();
      expect(c.messages.map((m) => [m.flags, m.body])).toEqual([[Flag.LAST, 'ok']]);
      pair.close();
    }
  });

  test('a refused call is answered with the refusal on its first bytes; its request is never read', async () => {
    const { requests, log } = harness(new SmuxError('ERR_SMUX_LIMIT', 'full'));
    const c = caller(pair.client, request('x'));
    await flush();
    expect(requests).toEqual([]);
    expect(c.messages).toEqual([
      expect.objectContaining({ flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT, body: { code: 'ERR_SMUX_LIMIT', message: 'full' } }),
    ]);
    expect(c.fin).toBe(true);
    expect(log).toEqual(['settled', 'awaitCallerFin']);
  });

  test('a malformed first message is refused with ERR_SMUX_PROTOCOL', async () => {
    harness();
    const c = caller(pair.client, Buffer.concat(encodeMessage(Kind.RESPONSE, 0, 'wrong kind')));
    await flush();
    expect(c.messages[0]).toMatchObject({ flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT, body: { code: 'ERR_SMUX_PROTOCOL' } });
  });

  test('the deadline (on the fake clock) ends the call with ERR_SMUX_TIMEOUT and aborts ctx.signal', async () => {
    const { calls } = harness();
    const c = caller(pair.client, request('x', { timeout: 100 }));
    await flush();
    const call = calls[0];
    let torn = false;
    void call.run(() => new Observable(() => () => (torn = true)), 'x', null, null);
    expect(call.remainingMs).toBe(100);
    pair.clock.advance(99);
    expect(call.running).toBe(true);
    pair.clock.advance(1);
    await flush();
    expect(c.messages).toEqual([
      expect.objectContaining({
        flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT,
        body: expect.objectContaining({ code: 'ERR_SMUX_TIMEOUT' }),
      }),
    ]);
    expect(torn).toBe(true);
    expect(call.signal.reason).toMatchObject({ code: 'ERR_SMUX_TIMEOUT' });
  });

  test("the caller's FIN before LAST cancels: ERR_SMUX_CANCELLED on the signal, the Observable torn down, nothing written", async () => {
    const { calls, log } = harness();
    const c = caller(pair.client, request('x'));
    await flush();
    const call = calls[0];
    let torn = false;
    void call.run(
      () => new Observable(() => () => (torn = true)),
      'x',
      null,
      () => log.push('end hook'),
    );
    c.channel!.end();
    await flush();
    expect(torn).toBe(true);
    expect(call.signal.reason).toMatchObject({ code: 'ERR_SMUX_CANCELLED' });
    expect(c.messages).toEqual([]);
    expect(log).toContain('end hook');
  });

  test('an AsyncIterable reply is pulled only as the window allows: the producer stays a bounded number of items ahead (maxReplyBufferBytes, the bound of an Observable, which cannot wait, does not apply)', async () => {
    const { calls } = harness(null, 32 * 1024); // less than the window and the queue hold of it
    const c = caller(pair.client, request('x'));
    c.channel!.pause(); // the caller reads nothing
    await flush();
    let produced = 0;
    async function* items() {
      for (;;) {
        produced++;
        yield Buffer.alloc(16 * 1024);
      }
    }
    void calls[0].run(() => items(), 'x', null, null);
    await flush(20);
    const ahead = produced;
    expect(ahead).toBeLessThan(40); // ≈ 256 KiB window + 64 KiB queue of 16 KiB items, not unbounded
    await flush(20);
    expect(produced).toBe(ahead); // and it stays there while nobody reads
    expect(calls[0].running).toBe(true);
    c.channel!.resume();
    await flush(20);
    expect(produced).toBeGreaterThan(ahead); // the caller reads: pulled on
    expect(c.messages.some((m) => (m.flags & Flag.ERROR) !== 0)).toBe(false);
    c.channel!.destroy(); // the caller cancels: the endless source is released
    await flush();
    expect(calls[0].running).toBe(false);
  });

  test('a limit that ends a running call is not retryable, whatever the budget said: the handler has run', async () => {
    const { calls, log } = harness();
    const c = caller(pair.client, request('x'));
    await flush();
    void calls[0].run(() => new Observable(() => undefined), 'x', null, null); // runs until ended
    calls[0].end(new SmuxError('ERR_SMUX_LIMIT', 'over the budget', { retryable: true }));
    await flush();
    expect(c.messages).toEqual([
      expect.objectContaining({
        flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT,
        body: { code: 'ERR_SMUX_LIMIT', message: 'over the budget' },
      }),
    ]);
    expect(log).toContain('limit: ERR_SMUX_LIMIT');
  });

  test('an Observable reply that outruns a caller who does not read fails with ERR_SMUX_LIMIT past maxReplyBufferBytes', async () => {
    const { calls } = harness(null, 256 * 1024);
    const c = caller(pair.client, request('x'));
    c.channel!.pause();
    await flush();
    const big = Buffer.alloc(64 * 1024);
    void calls[0].run(() => new Observable((s) => void Array.from({ length: 20 }, () => s.next(big))), 'x', null, null);
    await flush();
    expect(calls[0].running).toBe(false);
    c.channel!.resume();
    await flush(20);
    expect(c.messages.at(-1)).toMatchObject({
      flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT,
      body: expect.objectContaining({ code: 'ERR_SMUX_LIMIT' }),
    });
  });

  test('maxReplyBufferBytes does not hold the last value: a value over it alone is delivered', async () => {
    const limit = 256 * 1024;
    const huge = Buffer.alloc(limit + 1);
    const { calls } = harness(null, limit);
    const c = caller(pair.client, request('x'));
    await flush();
    void calls[0].run(() => of(huge), 'x', null, null); // nothing queues after the last value
    await flush(20);
    expect(c.messages).toEqual([expect.objectContaining({ flags: Flag.LAST, body: huge })]);
  });

  test('maxReplyBufferBytes counts a value in full as it is queued: one over it, followed by another, fails the call', async () => {
    const limit = 256 * 1024;
    const { calls } = harness(null, limit);
    const c = caller(pair.client, request('x'));
    await flush();
    void calls[0].run(() => of(Buffer.alloc(limit + 1), 'small'), 'x', null, null);
    await flush(20);
    expect(c.messages.at(-1)).toMatchObject({
      flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT,
      body: expect.objectContaining({ code: 'ERR_SMUX_LIMIT', message: expect.stringContaining('or one value is that large') }),
    });
  });

  test('HELLO makes the stream the control stream; an EVENT closes the stream at once', async () => {
    const { log, requests } = harness();
    caller(pair.client, Buffer.concat(encodeMessage(Kind.HELLO, 0, { protocol: 1 })));
    const e = caller(pair.client, Buffer.concat(encodeMessage(Kind.EVENT, 0, 'evt', { pattern: 'e' })));
    await flush();
    expect(log).toContain('control');
    expect(requests.map((m) => m.body)).toEqual(['evt']);
    expect(e.closed || e.fin).toBe(true);
  });
});
