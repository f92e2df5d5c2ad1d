/**
 * OpenTelemetry (lib/nest/tracing.ts) with the SDK's in-memory exporter: the spans a call makes on each side, the
 * trace context in its headers, the handler running inside the server span, and what happens with the API but no
 * SDK. The call engine runs on an in-memory session pair with stub hosts; the end-to-end view through
 * ClientSmux/ServerSmux is tracing.pending.ts.
 */
import { afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { WritePacket } from '@nestjs/microservices';
import { Observable, type Subscriber } from 'rxjs';
import { type SmuxChannel, SmuxError } from '../../lib/smux/index.js';
import { encodeMessage, Flag, Kind, type MessagePiece } from '../../lib/nest/call-codec.js';
import { ClientCall, type ClientCallHost, openCall } from '../../lib/nest/client-call.js';
import { MessageReader } from '../../lib/nest/message-reader.js';
import { createPacketCodec } from '../../lib/nest/packet-codec.js';
import { ServerCall } from '../../lib/nest/server-call.js';
import { createSmuxContext } from '../../lib/nest/smux.context.js';
import { serverSpanOf, startClientSpan, startServerSpan, tracingReady, withClientSpan, withServerSpan } from '../../lib/nest/tracing.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';
import { installOtel, type OtelSdk } from '../helpers/otel.js';
import { stubCallHost } from '../helpers/server-call-host.js';
import { piecesBytes } from '../helpers/pieces.js';

let sdk: OtelSdk | null = null;
let pair: ReturnType<typeof memorySessions> | null = null;
afterEach(() => {
  sdk?.uninstall();
  sdk = null;
  pair?.close();
  pair = null;
});

beforeAll(async () => {
  expect(await tracingReady()).toBe(true); // @opentelemetry/api is a devDependency here
});

const codec = createPacketCodec(false, {
  serializer: { serialize: (v: unknown) => v },
  deserializer: { deserialize: (v: unknown) => v },
  normalizePattern: (p) => JSON.stringify(p),
  patternAsString: (p) => String(p),
});

/** The W3C traceparent of a span: version 00, trace id, span id, flags. */
const traceparentOf = (traceId: string, spanId: string): string => `00-${traceId}-${spanId}-01`;

describe('spans', () => {
  test("a client span is the active span's child, CLIENT with rpc attributes; its context goes into a copy of the headers", () => {
    sdk = installOtel();
    const parent = trace.getTracer('app').startSpan('http request');
    const span = context.with(trace.setSpan(context.active(), parent), () => startClientSpan('call', 'math.sum'))!;
    const headers = { tenant: 'a' };
    const injected = span.inject(headers)!;
    span.end(null);
    parent.end();
    const finished = sdk.span('math.sum');
    expect(finished.kind).toBe(SpanKind.CLIENT);
    expect(finished.attributes).toEqual({ 'rpc.system': 'nestjs-smux', 'rpc.method': 'math.sum' });
    expect(finished.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    expect(finished.spanContext().traceId).toBe(parent.spanContext().traceId);
    expect(finished.status.code).toBe(SpanStatusCode.UNSET);
    expect(injected).toEqual({ tenant: 'a', traceparent: traceparentOf(finished.spanContext().traceId, finished.spanContext().spanId) });
    expect(headers).toEqual({ tenant: 'a' });
  });

  test('an object pattern names the span as JSON; an event is a PRODUCER; a failure is status ERROR with error.type; end() twice ends once', () => {
    sdk = installOtel();
    const span = startClientSpan('event', { cmd: 'sum' })!;
    span.end('ERR_SMUX_UNAVAILABLE');
    span.end(null);
    const [finished] = sdk.spans();
    expect(sdk.spans()).toHaveLength(1);
    expect([finished.name, finished.kind]).toEqual(['{"cmd":"sum"}', SpanKind.PRODUCER]);
    expect(finished.status).toEqual({ code: SpanStatusCode.ERROR, message: 'ERR_SMUX_UNAVAILABLE' });
    expect(finished.attributes['error.type']).toBe('ERR_SMUX_UNAVAILABLE');
  });

  test("a server span's parent is the span in the headers; run() makes it active; without a traceparent it starts a trace", () => {
    sdk = installOtel();
    const client = startClientSpan('call', 'p')!;
    const headers = client.inject(undefined);
    const server = startServerSpan('call', 'p', headers)!;
    const active = server.run(() => trace.getActiveSpan()?.spanContext().spanId);
    server.end('handler');
    client.end(null);
    const [s, c] = sdk.spans();
    expect([s.kind, c.kind]).toEqual([SpanKind.SERVER, SpanKind.CLIENT]);
    expect(s.parentSpanContext?.spanId).toBe(c.spanContext().spanId);
    expect(s.parentSpanContext?.isRemote).toBe(true);
    expect(s.spanContext().traceId).toBe(c.spanContext().traceId);
    expect(active).toBe(s.spanContext().spanId);
    expect(s.status).toEqual({ code: SpanStatusCode.ERROR, message: 'handler' });
    const root = startServerSpan('event', 'q', { other: 'header' })!;
    root.end(null);
    expect(sdk.span('q').parentSpanContext).toBeUndefined();
    expect(sdk.span('q').kind).toBe(SpanKind.CONSUMER);
  });

  test('withServerSpan / withClientSpan end the span when the promise settles: a SmuxError by its code, anything else as the handler', async () => {
    sdk = installOtel();
    await withServerSpan('event', 'ok', undefined, async () => {
      await flush(1);
      expect(trace.getActiveSpan()).toBeDefined(); // still inside after an await
    });
    await expect(withServerSpan('event', 'thrown', undefined, () => Promise.reject(new Error('x')))).rejects.toThrow('x');
    const refused = new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'bye');
    await expect(withClientSpan('event', 'closed', () => Promise.reject(refused))).rejects.toBe(refused);
    let given: unknown;
    await withClientSpan('event', 'sent', (span) => Promise.resolve((given = span)));
    expect(given).not.toBeNull();
    expect(['ok', 'thrown', 'closed', 'sent'].map((name) => sdk!.span(name).status)).toEqual([
      { code: SpanStatusCode.UNSET },
      { code: SpanStatusCode.ERROR, message: 'handler' },
      { code: SpanStatusCode.ERROR, message: 'ERR_SMUX_SHUTTING_DOWN' },
      { code: SpanStatusCode.UNSET },
    ]);
  });

  test('the API without an SDK: no span, no header; an SDK registered later (or again) is used from the next call', async () => {
    expect(startClientSpan('call', 'p')).toBeNull();
    expect(startServerSpan('call', 'p', { traceparent: traceparentOf('1'.repeat(32), '2'.repeat(16)) })).toBeNull();
    expect(await withClientSpan('call', 'p', (span) => Promise.resolve(span))).toBeNull();
    expect(codec.encodeCall(Kind.REQUEST, { pattern: 'p', data: 1, headers: undefined, span: null })).toEqual(
      encodeMessage(Kind.REQUEST, 0, 1, { pattern: 'p' }),
    );
    for (const round of ['first', 'second']) {
      sdk = installOtel();
      startClientSpan('call', round)!.end(null);
      expect(sdk.spans().map((span) => span.name)).toEqual([round]);
      sdk.uninstall();
      sdk = null;
      expect(startClientSpan('call', 'p')).toBeNull();
    }
  });
});

describe('the call engine', () => {
  test("encodeCall puts the span's context into the headers, for the native codec and a custom serializer alike", () => {
    sdk = installOtel();
    const custom = createPacketCodec(true, {
      serializer: { serialize: (v: unknown) => JSON.stringify(v) },
      deserializer: { deserialize: (v: unknown) => v },
      normalizePattern: (p) => JSON.stringify(p),
      patternAsString: (p) => String(p),
    });
    const span = startClientSpan('call', 'p')!;
    const read = (pieces: MessagePiece[]) => {
      const messages: unknown[] = [];
      new MessageReader(1 << 20).push(piecesBytes(pieces), { onMessage: (m) => void messages.push(m) });
      return messages[0] as { headers?: Record<string, string>; body: unknown };
    };
    const native = read(codec.encodeCall(Kind.REQUEST, { pattern: 'p', data: 1, headers: { a: 'b' }, span }));
    const opaque = read(custom.encodeCall(Kind.REQUEST, { pattern: 'p', data: 1, headers: undefined, span }));
    const traceparent = traceparentOf(span.inject(undefined)!.traceparent.split('-')[1], span.inject(undefined)!.traceparent.split('-')[2]);
    expect(native.headers).toEqual({ a: 'b', traceparent });
    expect(JSON.parse(opaque.body as string)).toMatchObject({ metadata: { traceparent } });
  });

  test('ClientCall ends its span when the call is over: at its last response, or with the failure', async () => {
    sdk = installOtel();
    const statuses: unknown[] = [];
    for (const how of ['answered', 'cancelled'] as const) {
      pair = memorySessions();
      let server: SmuxChannel | null = null;
      pair.server.on('channel', (channel) => {
        server = channel;
        channel.setHandler({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined });
      });
      const host: ClientCallHost = {
        clock: pair.clock,
        maxMessageBytes: 1 << 20,
        maxSourceBufferBytes: 1 << 20,
        codec,
        launch: () => undefined,
        settled: () => undefined,
        cutOff: () => undefined,
        connectError: () => null,
        closing: () => false,
        closes: () => 0,
      };
      const span = startClientSpan('call', how);
      const request = codec.encodeCall(Kind.REQUEST, { pattern: how, data: 1, headers: undefined, span });
      const packets: WritePacket[] = [];
      const call = new ClientCall(host, (p) => void packets.push(p), request, 0, false, null, span);
      openCall(call, pair.client.openChannel());
      await flush();
      expect(sdk.spans()).toHaveLength(statuses.length); // not before the call is over
      if (how === 'answered') server!.write(Buffer.concat(encodeMessage(Kind.RESPONSE, Flag.LAST, 'v')));
      else call.unsubscribe();
      await flush();
      statuses.push(sdk.span(how).status);
      pair.close();
      pair = null;
    }
    expect(statuses).toEqual([{ code: SpanStatusCode.UNSET }, { code: SpanStatusCode.ERROR, message: 'ERR_SMUX_CANCELLED' }]);
  });

  test("ServerCall runs the handler and its reply inside the server span, the caller's span its parent; the span ends with the call", async () => {
    sdk = installOtel();
    pair = memorySessions();
    const { host } = stubCallHost(pair.clock);
    const calls: ServerCall[] = [];
    pair.server.on('channel', (channel) => calls.push(new ServerCall(host, channel, null)));
    const client = startClientSpan('call', 'ticks')!;
    const headers = client.inject(undefined)!;
    const channel = pair.client.openChannel({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined });
    for (const b of encodeMessage(Kind.REQUEST, 0, 1, { id: '1', pattern: 'ticks', headers })) channel.write(b);
    await flush();
    const seen: (string | undefined)[] = [];
    let subscriber: Subscriber<number> | null = null;
    const ctx = createSmuxContext(calls[0].channel, 'ticks', headers, calls[0]);
    await calls[0].run(
      () => {
        seen.push(trace.getActiveSpan()?.spanContext().spanId);
        // A cold Observable: subscribed by the reply after the handler returned, still inside the span.
        return new Observable<number>((s) => {
          seen.push(trace.getActiveSpan()?.spanContext().spanId);
          subscriber = s;
        });
      },
      1,
      ctx,
      null,
    );
    await flush();
    expect(sdk.spans()).toEqual([]); // the handler returned; the call is not over
    subscriber!.next(1);
    subscriber!.complete();
    await flush();
    client.end(null);
    const server = sdk.spans().find((s) => s.kind === SpanKind.SERVER)!;
    expect(server.name).toBe('ticks');
    expect(server.parentSpanContext?.spanId).toBe(headers.traceparent.split('-')[2]);
    expect(seen).toEqual([server.spanContext().spanId, server.spanContext().spanId]);
    expect(server.status.code).toBe(SpanStatusCode.UNSET);
  });

  test('a cancelled server call ends its span with ERR_SMUX_CANCELLED; a context that is not a SmuxContext has no span', async () => {
    sdk = installOtel();
    pair = memorySessions();
    const { host } = stubCallHost(pair.clock);
    const calls: ServerCall[] = [];
    pair.server.on('channel', (channel) => calls.push(new ServerCall(host, channel, null)));
    const channel = pair.client.openChannel({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined });
    for (const b of encodeMessage(Kind.REQUEST, 0, 1, { id: '1', pattern: 'slow' })) channel.write(b);
    await flush();
    expect(serverSpanOf({ not: 'a SmuxContext' })).toBeNull();
    void calls[0].run(() => new Promise(() => undefined), 1, createSmuxContext(calls[0].channel, 'slow', undefined, calls[0]), null);
    channel.end(); // the caller's FIN before the reply: a cancel
    await flush();
    expect(sdk.span('slow').status).toEqual({ code: SpanStatusCode.ERROR, message: 'ERR_SMUX_CANCELLED' });
    expect(sdk.span('slow').parentSpanContext).toBeUndefined(); // no traceparent: a trace of its own
  });
});
