/**
 * Metrics (lib/nest/metrics.ts): the recorder's counters and Prometheus-shaped histograms, and what the call engine
 * records into it — ClientCall, ClientRawCall and ServerCall on an in-memory session pair with a fake clock and stub
 * hosts (no Nest app, no sockets, no sleeps). The end-to-end view through ClientSmux/ServerSmux is metrics.pending.ts.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import type { WritePacket } from '@nestjs/microservices';
import { type Session, type SmuxChannel, SmuxError } from '../../lib/smux/index.js';
import { encodeMessage, encodeTransportError, Flag, Kind } from '../../lib/nest/call-codec.js';
import { ClientCall, type ClientCallHost, failCall, openCall } from '../../lib/nest/client-call.js';
import { ClientRawCall } from '../../lib/nest/client-raw-call.js';
import { createSmuxMetrics, type MetricsRecorder, SMUX_LATENCY_BUCKETS_MS } from '../../lib/nest/metrics.js';
import { createPacketCodec } from '../../lib/nest/packet-codec.js';
import { SmuxDuplex } from '../../lib/nest/raw-duplex.js';
import { ServerCall } from '../../lib/nest/server-call.js';
import type { FakeClock } from '../helpers/fake-clock.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';
import { stubCallHost } from '../helpers/server-call-host.js';

let pair: ReturnType<typeof memorySessions>;
afterEach(() => pair?.close());

const bytes = (buffers: Buffer[]): number => buffers.reduce((n, b) => n + b.length, 0);

describe('the recorder', () => {
  test('a fresh snapshot: zeros, the fixed bounds, a plain JSON-serialisable object', () => {
    const { metrics } = createSmuxMetrics('client');
    const snapshot = metrics.snapshot();
    expect(metrics.side).toBe('client');
    expect(snapshot).toEqual({
      side: 'client',
      calls: { started: 0, completed: 0, failed: {}, inFlight: 0 },
      events: { sent: 0, received: 0 },
      bytes: { sent: 0, received: 0 },
      latency: { bounds: SMUX_LATENCY_BUCKETS_MS, counts: SMUX_LATENCY_BUCKETS_MS.map(() => 0), count: 0, sum: 0 },
      rtt: { bounds: SMUX_LATENCY_BUCKETS_MS, counts: SMUX_LATENCY_BUCKETS_MS.map(() => 0), count: 0, sum: 0 },
    });
    expect(JSON.parse(JSON.stringify(snapshot))).toEqual(snapshot);
    expect(Object.isFrozen(SMUX_LATENCY_BUCKETS_MS)).toBe(true);
    expect([...SMUX_LATENCY_BUCKETS_MS].sort((a, b) => a - b)).toEqual(SMUX_LATENCY_BUCKETS_MS);
  });

  test('histograms are cumulative like Prometheus `le` buckets: a value on a bound counts in that bound; past the last only in `count`', () => {
    const { metrics, recorder } = createSmuxMetrics('server');
    for (const ms of [0.01, 0.05, 0.07, 1, 1.5, 99999]) recorder.recordRtt(ms);
    const rtt = metrics.snapshot().rtt;
    const le = (bound: number): number => rtt.counts[SMUX_LATENCY_BUCKETS_MS.indexOf(bound)];
    expect([le(0.05), le(0.1), le(0.5), le(1), le(2.5), le(30000)]).toEqual([2, 3, 3, 4, 5, 5]);
    expect(rtt.count).toBe(6);
    expect(rtt.sum).toBeCloseTo(0.01 + 0.05 + 0.07 + 1 + 1.5 + 99999, 6);
    expect(metrics.snapshot().latency.count).toBe(0); // RTT samples are not call latencies
  });

  test('calls: started, completed, failed by key, in flight; latency on the side’s clock', () => {
    pair = memorySessions();
    const clock = pair.clock;
    const { metrics, recorder } = createSmuxMetrics('client', clock);
    const a = recorder.callStarted();
    const b = recorder.callStarted();
    const c = recorder.callStarted();
    clock.advance(3);
    recorder.callEnded(a, null);
    recorder.callEnded(b, 'ERR_SMUX_TIMEOUT');
    expect(metrics.snapshot().calls).toEqual({ started: 3, completed: 1, failed: { ERR_SMUX_TIMEOUT: 1 }, inFlight: 1 });
    recorder.callEnded(c, 'handler');
    const { calls, latency } = metrics.snapshot();
    expect(calls).toEqual({ started: 3, completed: 1, failed: { ERR_SMUX_TIMEOUT: 1, handler: 1 }, inFlight: 0 });
    expect([latency.count, latency.sum, latency.counts[SMUX_LATENCY_BUCKETS_MS.indexOf(2.5)], latency.counts.at(-1)]).toEqual([3, 9, 0, 3]);
  });
});

// ── the client's calls ──────────────────────────────────────────────────────────────────────────────────────

/** A client host of the tests, recording into `recorder`. */
function clientHost(clock: FakeClock, recorder: MetricsRecorder): ClientCallHost {
  return {
    clock,
    maxMessageBytes: 1 << 20,
    maxSourceBufferBytes: 1 << 20,
    codec: createPacketCodec(false, {
      serializer: { serialize: (v: unknown) => v },
      deserializer: { deserialize: (v: unknown) => v },
      normalizePattern: (p) => JSON.stringify(p),
      patternAsString: (p) => String(p),
    }),
    launch: () => undefined,
    settled: () => undefined,
    cutOff: () => undefined,
    connectError: () => null,
    closing: () => false,
    closes: () => 0,
    metrics: recorder,
  };
}

/** The server end of the next stream the client opens: what it wrote to us, and a way to answer. */
function serverEnd(session: Session) {
  const end = { channel: null as SmuxChannel | null, received: 0 };
  session.on('channel', (channel) => {
    end.channel = channel;
    channel.setHandler({ onData: (data) => (end.received += data.length), onEnd: () => undefined, onClose: () => undefined });
  });
  return end;
}

async function clientCall(timeout = 0) {
  pair = memorySessions();
  const { metrics, recorder } = createSmuxMetrics('client', pair.clock);
  const server = serverEnd(pair.server);
  const packets: WritePacket[] = [];
  const request = encodeMessage(Kind.REQUEST, 0, 'data', { id: '1', pattern: 'p' });
  const call = new ClientCall(clientHost(pair.clock, recorder), (p) => void packets.push(p), request, timeout, false);
  const answer = (value: unknown, flags: number): number => {
    const message = Buffer.concat(encodeMessage(Kind.RESPONSE, flags, value));
    server.channel!.write(message);
    return message.length;
  };
  return { call, metrics, packets, server, answer, requestBytes: bytes(request), clock: pair.clock };
}

describe('ClientCall records', () => {
  test('a call from its start (queued, connecting) until its last response: bytes both ways, latency', async () => {
    const { call, metrics, server, answer, requestBytes, clock } = await clientCall();
    expect(metrics.snapshot().calls).toEqual({ started: 1, completed: 0, failed: {}, inFlight: 1 }); // before a stream
    clock.advance(2);
    openCall(call, pair.client.openChannel());
    await flush();
    const answered = answer('one', 0) + answer('two', Flag.LAST);
    await flush();
    const snapshot = metrics.snapshot();
    expect(snapshot.calls).toEqual({ started: 1, completed: 1, failed: {}, inFlight: 0 });
    expect(snapshot.bytes).toEqual({ sent: requestBytes, received: answered });
    expect(server.received).toBe(requestBytes);
    expect([snapshot.latency.count, snapshot.latency.sum]).toEqual([1, 2]);
  });

  test('how it failed: the handler’s error value, a transport error’s code, a cancel, a deadline, no connection', async () => {
    const failures: Record<string, number>[] = [];
    const run = async (how: (c: Awaited<ReturnType<typeof clientCall>>) => void, timeout = 0): Promise<void> => {
      const c = await clientCall(timeout);
      openCall(c.call, pair.client.openChannel());
      await flush();
      how(c);
      await flush();
      const { calls } = c.metrics.snapshot();
      expect(calls.inFlight).toBe(0);
      failures.push(calls.failed);
      pair.close();
    };
    await run((c) => c.answer({ status: 'error', message: 'no' }, Flag.LAST | Flag.ERROR));
    await run((c) => c.server.channel!.write(Buffer.concat(encodeTransportError(new SmuxError('ERR_SMUX_LIMIT', 'full')))));
    await run((c) => c.call.unsubscribe());
    await run((c) => c.clock.advance(50), 50);
    await run((c) => failCall(c.call, new SmuxError('ERR_SMUX_UNAVAILABLE', 'no connection')));
    await run((c) => failCall(c.call, new Error('the source failed')));
    expect(failures).toEqual([
      { handler: 1 },
      { ERR_SMUX_LIMIT: 1 },
      { ERR_SMUX_CANCELLED: 1 },
      { ERR_SMUX_TIMEOUT: 1 },
      { ERR_SMUX_UNAVAILABLE: 1 },
      { other: 1 },
    ]);
  });

  test('a byte stream: RAW bytes both ways are counted; ending both ways completes it, a destroy cancels it', async () => {
    for (const outcome of ['complete', 'destroy'] as const) {
      pair = memorySessions();
      const { metrics, recorder } = createSmuxMetrics('client', pair.clock);
      const server = serverEnd(pair.server);
      const request = encodeMessage(Kind.REQUEST, Flag.RAW, { name: 'f' }, { id: '1', pattern: 'upload' });
      const duplex = new SmuxDuplex(64 * 1024);
      duplex.on('error', () => undefined);
      duplex.resume();
      const call = new ClientRawCall(clientHost(pair.clock, recorder), duplex, request, 0, false);
      openCall(call, pair.client.openChannel());
      duplex.write(Buffer.alloc(1000));
      await flush();
      const theirs = Buffer.concat([...encodeMessage(Kind.RAW, 0, Buffer.alloc(300)), ...encodeMessage(Kind.END, Flag.LAST, undefined)]);
      server.channel!.write(theirs);
      await flush();
      if (outcome === 'complete') duplex.end();
      else duplex.destroy();
      await flush();
      const snapshot = metrics.snapshot();
      expect(snapshot.calls).toEqual(
        outcome === 'complete'
          ? { started: 1, completed: 1, failed: {}, inFlight: 0 }
          : { started: 1, completed: 0, failed: { ERR_SMUX_CANCELLED: 1 }, inFlight: 0 },
      );
      expect(snapshot.bytes.received).toBe(theirs.length);
      expect(snapshot.bytes.sent).toBe(server.received);
      expect(snapshot.bytes.sent).toBeGreaterThan(bytes(request) + 1000);
      pair.close();
    }
  });
});

// ── the server's calls ──────────────────────────────────────────────────────────────────────────────────────

function serverCalls(refusal: SmuxError | null = null) {
  pair = memorySessions();
  const { metrics, recorder } = createSmuxMetrics('server', pair.clock);
  const host = { ...stubCallHost(pair.clock).host, metrics: recorder };
  const calls: ServerCall[] = [];
  pair.server.on('channel', (channel) => calls.push(new ServerCall(host, channel, null, refusal)));
  const call = (message: Buffer[]) => {
    const seen = { received: 0 };
    const channel = pair.client.openChannel({
      onData: (d) => (seen.received += d.length),
      onEnd: () => undefined,
      onClose: () => undefined,
    });
    for (const buffer of message) channel.write(buffer);
    return { channel, seen };
  };
  return { metrics, calls, call, clock: pair.clock };
}

const request = (data: unknown): Buffer[] => encodeMessage(Kind.REQUEST, 0, data, { id: '1', pattern: 'p' });

describe('ServerCall records', () => {
  test('a call from its stream opening until its reply is written: bytes both ways, latency', async () => {
    const { metrics, calls, call, clock } = serverCalls();
    const sent = request('x');
    const { seen } = call(sent);
    await flush();
    expect(metrics.snapshot().calls).toEqual({ started: 1, completed: 0, failed: {}, inFlight: 1 });
    clock.advance(7);
    await calls[0].run(() => 'a reply', 'x', null, null);
    await flush();
    const snapshot = metrics.snapshot();
    expect(snapshot.calls).toEqual({ started: 1, completed: 1, failed: {}, inFlight: 0 });
    expect(snapshot.bytes).toEqual({ sent: seen.received, received: bytes(sent) });
    expect([snapshot.latency.count, snapshot.latency.sum]).toEqual([1, 7]);
  });

  test('how it failed: the handler threw, the caller cancelled, the deadline passed, the connection closed', async () => {
    const failures: Record<string, number>[] = [];
    const run = async (how: (s: ReturnType<typeof serverCalls>, channel: SmuxChannel) => Promise<void> | void): Promise<void> => {
      const s = serverCalls();
      const { channel } = s.call(encodeMessage(Kind.REQUEST, 0, 'x', { id: '1', pattern: 'p', timeout: 100 }));
      await flush();
      await how(s, channel);
      await flush();
      expect(s.metrics.snapshot().calls.inFlight).toBe(0);
      failures.push(s.metrics.snapshot().calls.failed);
      pair.close();
    };
    await run((s) =>
      s.calls[0].run(
        () => {
          throw new Error('boom');
        },
        'x',
        null,
        null,
      ),
    );
    await run((_s, channel) => channel.end());
    await run((s) => s.clock.advance(100));
    await run(() => pair.server.destroy());
    expect(failures).toEqual([{ handler: 1 }, { ERR_SMUX_CANCELLED: 1 }, { ERR_SMUX_TIMEOUT: 1 }, { ERR_SMUX_SESSION_CLOSED: 1 }]);
  });

  test('a refused stream is a call started and failed with the refusal’s code; an event counts as received, not as a call', async () => {
    const refused = serverCalls(new SmuxError('ERR_SMUX_LIMIT', 'full'));
    refused.call(request('x'));
    await flush();
    expect(refused.metrics.snapshot().calls).toEqual({ started: 1, completed: 0, failed: { ERR_SMUX_LIMIT: 1 }, inFlight: 0 });
    pair.close();
    const { metrics, call } = serverCalls();
    const event = encodeMessage(Kind.EVENT, 0, 'e', { pattern: 'note' });
    call(event).channel.end();
    await flush();
    const snapshot = metrics.snapshot();
    expect(snapshot.calls.started).toBe(0);
    expect(snapshot.events).toEqual({ sent: 0, received: 1 });
    expect(snapshot.bytes.received).toBe(bytes(event));
  });
});
