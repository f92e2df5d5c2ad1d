import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { defer, firstValueFrom } from 'rxjs';
import { SmuxError, SmuxRecordBuilder } from '../../lib/index.js';
import { encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import {
  closeAll,
  codeOf,
  type Deferred,
  deferred,
  logLines,
  rawCall,
  rawSession,
  rejection,
  smuxError,
  startApp,
  until,
  within,
} from './helpers.js';

let gate: Deferred<void>;
let running = 0;
let maxRunning = 0;

@Controller()
class LimitsController {
  @MessagePattern('gated')
  gated(@Payload() n: number) {
    return defer(async () => {
      running++;
      await gate.promise;
      return n;
    });
  }

  @MessagePattern('gated-async') // an async handler: cancelling the call does not stop it
  async gatedAsync(@Payload() n: number): Promise<number> {
    running++;
    maxRunning = Math.max(maxRunning, running);
    try {
      await gate.promise;
      return n;
    } finally {
      running--;
    }
  }

  @MessagePattern('size')
  size(@Payload() data: Buffer | string) {
    return data.length;
  }

  @MessagePattern('blob')
  blob(@Payload() n: number) {
    return Buffer.alloc(n, 7);
  }

  @MessagePattern('ping')
  ping() {
    return 'pong';
  }
}

/** The server's warnings about a connection it closed. */
function closeWarnings(): string[] {
  return logLines
    .filter((l) => l.level === 'warn' && l.context === 'ServerSmux' && !l.message.startsWith('A call from'))
    .map((l) => l.message);
}

describe('server limits', () => {
  beforeEach(() => {
    gate = deferred();
    running = 0;
    maxRunning = 0;
  });
  afterEach(closeAll);
  beforeEach(() => void (logLines.length = 0));

  test('maxCallsPerConnection: a call over the limit fails with ERR_SMUX_LIMIT, the others succeed', async () => {
    const handle = await startApp({ controllers: [LimitsController], server: { maxCallsPerConnection: 3 } });
    const session = await rawSession(handle.port);
    const held = [1, 2, 3].map((n) => rawCall(session, encodeMessage(Kind.REQUEST, 0, n, { id: String(n), pattern: 'gated' })));
    await until(() => running === 3, 5_000, 'three calls running');
    const refused = rawCall(session, encodeMessage(Kind.REQUEST, 0, 4, { id: '4', pattern: 'gated' }));
    expect(await within(refused.last, 'the refusal')).toMatchObject({
      flags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT,
      body: { code: 'ERR_SMUX_LIMIT', message: 'the connection has reached its limit of 3 calls in flight' },
    });
    expect(running).toBe(3); // the refused call never reached the handler
    gate.resolve();
    expect((await Promise.all(held.map((c) => c.last))).map((m) => m.body)).toEqual([1, 2, 3]);
    // Slots free again.
    const again = [5, 6, 7].map((n) => rawCall(session, encodeMessage(Kind.REQUEST, 0, n, { id: String(n), pattern: 'gated' })));
    expect((await Promise.all(again.map((c) => c.last))).map((m) => m.body)).toEqual([5, 6, 7]);
  });

  test('maxCallsPerConnection holds against "rapid reset": a cancelled call keeps its slot while its handler still runs', async () => {
    // Found by a hostile-peer trial: REQUEST then FIN at once, 20 000 times, ran 8 320 handlers at once at a limit of 1 000.
    const handle = await startApp({ controllers: [LimitsController], server: { maxCallsPerConnection: 3 } });
    const session = await rawSession(handle.port);
    const cancelled = Array.from({ length: 20 }, (_, n) => {
      const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, n, { id: String(n), pattern: 'gated-async' }));
      call.channel.end(); // the caller cancels at once (FIN)
      return call;
    });
    await until(() => running === 3, 5_000, 'three handlers running');
    await Promise.all(cancelled.map((call) => within(call.closed, 'each cancelled stream to close')));
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(maxRunning).toBe(3); // the other 17 were refused: their handlers never ran
    const refusedNow = rawCall(session, encodeMessage(Kind.REQUEST, 0, 'x', { id: 'x', pattern: 'ping' }));
    expect(await within(refusedNow.last, 'the refusal')).toMatchObject({ body: { code: 'ERR_SMUX_LIMIT' } }); // slots still held
    gate.resolve();
    await until(() => running === 0, 5_000, 'the cancelled handlers to return');
    const again = [1, 2, 3].map((n) => rawCall(session, encodeMessage(Kind.REQUEST, 0, n, { id: String(n), pattern: 'ping' })));
    expect((await Promise.all(again.map((c) => within(c.last, 'a call after the slots freed')))).map((m) => m.body)).toEqual([
      'pong',
      'pong',
      'pong',
    ]);
  });

  test('a close waiting for running calls goes on when the last one is cancelled, though its handler still runs', async () => {
    // Found in review: the wait was woken when a call freed its slot, which now waits for its handler to return.
    const handle = await startApp({ controllers: [LimitsController], server: { closeTimeout: 10_000 } });
    const session = await rawSession(handle.port); // says no hello: it cannot read DRAIN, so close() waits for its call
    const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, 1, { id: '1', pattern: 'gated-async' }));
    await until(() => running === 1, 5_000, 'the handler running');
    const started = performance.now();
    const closed = handle.close();
    await new Promise((resolve) => setTimeout(resolve, 50)); // the close is waiting for the running call
    call.channel.end(); // the caller cancels; the handler goes on (the gate stays shut)
    await within(closed, 'the close');
    expect(performance.now() - started).toBeLessThan(5_000); // not the 10 s closeTimeout
    expect(running).toBe(1);
    gate.resolve();
  });

  // Found by a new-user trial: the line named the core's maxStreams (1 064), which the transport derives from
  // maxCallsPerConnection; a Nest user never set it.
  test('a SYN flood past maxCallsPerConnection is cut off, and its warning names maxCallsPerConnection, not maxStreams', async () => {
    const handle = await startApp({
      controllers: [LimitsController],
      server: { maxCallsPerConnection: 4, smux: { maxRefusedStreams: 8 } },
    });
    const session = await rawSession(handle.port);
    for (let i = 0; i < 4 + 64 + 9; i++) session.openChannel(); // bare SYNs, never a byte of a request
    await until(() => session.isClosed, 5_000, 'the flood to be cut off');
    await until(() => handle.sessions[0].isClosed, 5_000, 'the server to see its end');
    const lines = closeWarnings(); // the calls past 4 were refused with lines of their own
    expect(lines).toEqual([
      expect.stringMatching(
        /^Closed the connection from 127\.0\.0\.1:\d+: it opened 9 streams in a row beyond maxCallsPerConnection \(4, and 64 more streams the transport allows\), more than smux\.maxRefusedStreams \(8\)$/,
      ),
    ]);
  });

  test('a SYN flood past a smux.maxStreams the app set: its warning names smux.maxStreams', async () => {
    const server = { maxCallsPerConnection: 4, smux: { maxStreams: 6, maxRefusedStreams: 2 } };
    const handle = await startApp({ controllers: [LimitsController], server });
    const session = await rawSession(handle.port);
    for (let i = 0; i < 6 + 3; i++) session.openChannel();
    await until(() => handle.sessions[0]?.isClosed === true, 5_000, 'the flood to be cut off');
    const lines = closeWarnings();
    expect(lines).toEqual([
      expect.stringMatching(/: it opened 3 streams in a row beyond smux\.maxStreams \(6\), more than smux\.maxRefusedStreams \(2\)$/),
    ]);
  });

  test("a ClientSmux learns maxCallsPerConnection from the server's hello and queues its extra calls instead of being refused", async () => {
    const handle = await startApp({ controllers: [LimitsController], server: { maxCallsPerConnection: 3 } });
    const client = handle.client();
    const calls = [1, 2, 3, 4, 5].map((n) => firstValueFrom(client.send('gated', n)));
    await until(() => running === 3, 5_000, 'three calls running');
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(running).toBe(3); // the other two wait on the client
    gate.resolve();
    expect(await Promise.all(calls)).toEqual([1, 2, 3, 4, 5]);
  });

  test('maxCallsPerConnection counts per connection: another client is not affected', async () => {
    const handle = await startApp({ controllers: [LimitsController], server: { maxCallsPerConnection: 1 } });
    const busy = handle.client();
    const held = firstValueFrom(busy.send('gated', 1));
    await until(() => running === 1, 5_000, 'the call running');
    expect(await firstValueFrom(handle.client().send('ping', {}))).toBe('pong');
    gate.resolve();
    expect(await held).toBe(1);
  });

  test('maxMessageBytes: a request over it fails with ERR_SMUX_LIMIT; the process and the connection carry on', async () => {
    const handle = await startApp({ controllers: [LimitsController], server: { maxMessageBytes: 64 * 1024 } });
    const client = handle.client();
    expect(await firstValueFrom(client.send('size', Buffer.alloc(1000)))).toBe(1000);
    const refused = await rejection(firstValueFrom(client.send('size', Buffer.alloc(256 * 1024))));
    expect(refused).toEqual(smuxError('ERR_SMUX_LIMIT'));
    const tooLongText = await rejection(firstValueFrom(client.send('size', 'x'.repeat(100 * 1024))));
    expect(codeOf(tooLongText)).toBe('ERR_SMUX_LIMIT');
    expect(await firstValueFrom(client.send('size', Buffer.alloc(60 * 1024)))).toBe(60 * 1024);
    expect(await firstValueFrom(client.send('ping', {}))).toBe('pong');
    expect(handle.sessions).toHaveLength(1);
    await until(() => handle.sessions[0].numStreams === 1, 5_000, 'the refused streams to be released (the control stream stays)');
  });

  test("the client's maxMessageBytes refuses a reply over it with ERR_SMUX_LIMIT, and carries on", async () => {
    const handle = await startApp({ controllers: [LimitsController] });
    const client = handle.client({ maxMessageBytes: 32 * 1024 });
    const refused = await rejection(firstValueFrom(client.send('blob', 100 * 1024)));
    expect(codeOf(refused)).toBe('ERR_SMUX_LIMIT');
    expect((await firstValueFrom(client.send<Buffer>('blob', 1024))).length).toBe(1024);
  });

  test('maxConnections: calls on a connection over the limit fail with ERR_SMUX_LIMIT; the others work', async () => {
    const handle = await startApp({ controllers: [LimitsController], server: { maxConnections: 1 } });
    const first = handle.client();
    expect(await firstValueFrom(first.send('ping', {}))).toBe('pong');
    const extra = handle.client();
    // The server answers the new connection's hello with ERR_SMUX_LIMIT: no connection for the extra client.
    const refused = await rejection(firstValueFrom(extra.send('ping', {})));
    expect(refused).toEqual(
      smuxError('ERR_SMUX_UNAVAILABLE', 'the server has reached its connection limit: 1 connections open (maxConnections 1)'),
    );
    expect((refused as Error).cause).toEqual(smuxError('ERR_SMUX_LIMIT'));
    expect(await firstValueFrom(first.send('ping', {}))).toBe('pong');
    // The refused connection is closed by the server.
    const extraSession = handle.sessions[1];
    await until(() => extraSession.isClosed, 5_000, 'the extra connection to be closed');
    expect(handle.sessions[0].isClosed).toBe(false);
  });

  test('once a connection goes, its slot is free for a new one', async () => {
    const handle = await startApp({ controllers: [LimitsController], server: { maxConnections: 1 } });
    const first = handle.client();
    expect(await firstValueFrom(first.send('ping', {}))).toBe('pong');
    await first.close();
    await until(() => handle.sessions[0].isClosed, 5_000, 'the first connection to be gone');
    const second = handle.client();
    expect(await firstValueFrom(second.send('ping', {}))).toBe('pong');
  });

  test('the client queues calls beyond maxConcurrentCalls and refuses beyond maxQueuedCalls with ERR_SMUX_LIMIT', async () => {
    const handle = await startApp({ controllers: [LimitsController] });
    const client = handle.client({ maxConcurrentCalls: 2, maxQueuedCalls: 1 });
    const running2 = [1, 2].map((n) => firstValueFrom(client.send('gated', n)));
    const queued = firstValueFrom(client.send('gated', 3));
    const refused = await rejection(firstValueFrom(client.send('gated', 4)));
    expect(codeOf(refused)).toBe('ERR_SMUX_LIMIT');
    expect((refused as SmuxError).retryable).toBe(true); // never sent: safe to retry once the queue has room
    await until(() => running === 2, 5_000, 'two calls running');
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(running).toBe(2); // the third waits on the client
    gate.resolve();
    expect(await Promise.all([...running2, queued])).toEqual([1, 2, 3]);
    expect(running).toBe(3);
  });

  test('a queued call that was unsubscribed no longer takes a queue slot, and never runs', async () => {
    const handle = await startApp({ controllers: [LimitsController] });
    const client = handle.client({ maxConcurrentCalls: 1, maxQueuedCalls: 1 });
    const first = firstValueFrom(client.send('gated', 1));
    await until(() => running === 1, 5_000, 'the first call running');
    client
      .send('gated', 2)
      .subscribe({ error: () => undefined })
      .unsubscribe(); // queued, then abandoned
    const queued = firstValueFrom(client.send('gated', 3)); // nothing waits any more: this one must queue, not fail
    queued.catch(() => undefined);
    gate.resolve();
    expect(await first).toBe(1);
    expect(await queued).toBe(3);
    expect(running).toBe(2); // the abandoned call never reached the server
  });

  test('a queued call that timed out no longer takes a queue slot', async () => {
    const handle = await startApp({ controllers: [LimitsController] });
    const client = handle.client({ maxConcurrentCalls: 1, maxQueuedCalls: 1 });
    const first = firstValueFrom(client.send('gated', 1));
    await until(() => running === 1, 5_000, 'the first call running');
    const expired = await rejection(firstValueFrom(client.send('gated', new SmuxRecordBuilder(2).setTimeout(20).build())));
    expect(codeOf(expired)).toBe('ERR_SMUX_TIMEOUT');
    const queued = firstValueFrom(client.send('gated', 3));
    queued.catch(() => undefined);
    gate.resolve();
    expect(await first).toBe(1);
    expect(await queued).toBe(3);
    expect(running).toBe(2);
  });

  test('many concurrent calls within the default limits all succeed', async () => {
    const handle = await startApp({ controllers: [LimitsController] });
    const client = handle.client();
    gate.resolve();
    const results = await Promise.all(Array.from({ length: 2000 }, (_, i) => firstValueFrom(client.send<number>('gated', i))));
    expect(results).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    expect(handle.sessions[0].stats.streamsAccepted).toBe(2001); // and the hello
  });
});
