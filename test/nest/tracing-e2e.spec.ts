/**
 * OpenTelemetry end to end: real client and server apps on 127.0.0.1 with the SDK's in-memory exporter. One trace
 * runs from the caller's span through the CLIENT span of the call to the SERVER span around its handler and the
 * spans the handler starts; also through a handler that calls on, for events, byte streams and failures.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, MessagePattern, Payload, RpcException } from '@nestjs/microservices';
import { context, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { type ClientSmux, SmuxContext } from '../../lib/index.js';
import { tracingReady } from '../../lib/nest/tracing.js';
import { installOtel, type OtelSdk } from '../helpers/otel.js';
import { type AppHandle, closeAll, rejection, startApp, until, within } from './helpers.js';

const tracer = trace.getTracer('test app');
let onward: ClientSmux | null = null; // the app's own client, for a handler that calls on
const headersSeen: Record<string, string>[] = [];

@Controller()
class TracedController {
  @MessagePattern('sum')
  sum(@Payload() data: number[], @Ctx() ctx: SmuxContext): number {
    headersSeen.push({ ...ctx.getHeaders() });
    return tracer.startActiveSpan('db query', (span: Span) => {
      span.end();
      return data.reduce((a, b) => a + b, 0);
    });
  }

  @MessagePattern('fails')
  fails(): never {
    throw new RpcException({ status: 'error', message: 'no' });
  }

  @MessagePattern('relay')
  async relay(@Payload() data: number[]): Promise<number> {
    await new Promise((resolve) => setImmediate(resolve)); // the context survives awaits
    return firstValueFrom(onward!.send<number>('sum', data));
  }

  @MessagePattern('echo bytes')
  echoBytes(@Ctx() ctx: SmuxContext): void {
    const duplex = ctx.getDuplex();
    duplex.on('data', (chunk: Buffer) => duplex.write(chunk));
    duplex.on('end', () => duplex.end());
  }

  @EventPattern<string>('note')
  note(): void {
    tracer.startSpan('note handled').end();
  }
}

let sdk: OtelSdk;
let app: AppHandle;
let client: ClientSmux;

beforeAll(async () => {
  expect(await tracingReady()).toBe(true);
  sdk = installOtel();
  app = await startApp({ controllers: [TracedController] });
  client = app.client();
  onward = app.client();
  await Promise.all([client.connect(), onward.connect()]);
});
beforeEach(() => sdk.exporter.reset());
afterAll(async () => {
  await closeAll();
  sdk.uninstall();
});

/** Runs `work` inside a root span of the test ("the caller's request"); returns that span's context. */
async function inRequest(work: () => Promise<unknown>): Promise<{ traceId: string; spanId: string }> {
  const root = tracer.startSpan('incoming request');
  await context.with(trace.setSpan(context.active(), root), work);
  root.end();
  return root.spanContext();
}

const byKind = (kind: SpanKind): ReadableSpan[] => sdk.spans().filter((s) => s.kind === kind);
const parentOf = (span: ReadableSpan): string | undefined => span.parentSpanContext?.spanId;
/** `a` is not after `b` (OpenTelemetry times are [seconds, nanoseconds]: `<=` on the arrays compared them as text). */
const notAfter = (a: readonly [number, number], b: readonly [number, number]): boolean => a[0] < b[0] || (a[0] === b[0] && a[1] <= b[1]);

describe('one trace across client and server', () => {
  test("caller's span → CLIENT span → SERVER span (its parent is the client span) → the handler's own span", async () => {
    const root = await inRequest(async () => expect(await within(firstValueFrom(client.send('sum', [1, 2])), 'sum')).toBe(3));
    const [clientSpan] = byKind(SpanKind.CLIENT);
    const [serverSpan] = byKind(SpanKind.SERVER);
    const query = sdk.span('db query');
    expect(sdk.spans().every((s) => s.spanContext().traceId === root.traceId)).toBe(true);
    expect(parentOf(clientSpan)).toBe(root.spanId);
    expect(parentOf(serverSpan)).toBe(clientSpan.spanContext().spanId);
    expect(serverSpan.parentSpanContext?.isRemote).toBe(true);
    expect(parentOf(query)).toBe(serverSpan.spanContext().spanId);
    for (const span of [clientSpan, serverSpan]) {
      expect(span.name).toBe('sum');
      expect(span.attributes).toMatchObject({ 'rpc.system': 'nestjs-smux', 'rpc.method': 'sum' });
      expect(span.status.code).toBe(SpanStatusCode.UNSET);
    }
    // The server span covers the handler; the client span covers the whole call around it.
    expect(notAfter(clientSpan.startTime, serverSpan.startTime)).toBe(true);
    // The context travelled as a W3C traceparent header, which the handler sees among the call's headers.
    expect(headersSeen.at(-1)?.traceparent).toBe(`00-${root.traceId}-${clientSpan.spanContext().spanId}-01`);
  });

  test('a handler that calls on carries the trace: SERVER → CLIENT → SERVER, one trace id', async () => {
    const root = await inRequest(async () => expect(await within(firstValueFrom(client.send('relay', [2, 3])), 'relay')).toBe(5));
    const relayClient = sdk.spans().find((s) => s.kind === SpanKind.CLIENT && s.name === 'relay')!;
    const relayServer = sdk.spans().find((s) => s.kind === SpanKind.SERVER && s.name === 'relay')!;
    const sumClient = sdk.spans().find((s) => s.kind === SpanKind.CLIENT && s.name === 'sum')!;
    const sumServer = sdk.spans().find((s) => s.kind === SpanKind.SERVER && s.name === 'sum')!;
    expect(new Set(sdk.spans().map((s) => s.spanContext().traceId))).toEqual(new Set([root.traceId]));
    expect([parentOf(relayClient), parentOf(relayServer), parentOf(sumClient), parentOf(sumServer)]).toEqual([
      root.spanId,
      relayClient.spanContext().spanId,
      relayServer.spanContext().spanId,
      sumClient.spanContext().spanId,
    ]);
  });

  test("a handler's error marks both spans ERROR (error.type handler)", async () => {
    await inRequest(() => rejection(firstValueFrom(client.send('fails', 1))));
    for (const span of [...byKind(SpanKind.CLIENT), ...byKind(SpanKind.SERVER)]) {
      expect(span.status).toEqual({ code: SpanStatusCode.ERROR, message: 'handler' });
      expect(span.attributes['error.type']).toBe('handler');
    }
    expect(sdk.spans()).toHaveLength(3); // the two and the test's own
  });

  test('an event: PRODUCER → CONSUMER → the handler’s span', async () => {
    await inRequest(() => within(lastValueFrom(client.emit('note', 1), { defaultValue: undefined }), 'emit'));
    await until(() => byKind(SpanKind.CONSUMER).length === 1, 5_000, 'the event to be handled');
    const [producer] = byKind(SpanKind.PRODUCER);
    const [consumer] = byKind(SpanKind.CONSUMER);
    expect([producer.name, consumer.name]).toEqual(['note', 'note']);
    expect(parentOf(consumer)).toBe(producer.spanContext().spanId);
    expect(parentOf(sdk.span('note handled'))).toBe(consumer.spanContext().spanId);
  });

  test('a byte stream: the CLIENT span lasts until both directions ended; the server span is its child', async () => {
    await inRequest(async () => {
      const duplex = client.openDuplex('echo bytes');
      duplex.end(Buffer.alloc(10_000));
      let n = 0;
      for await (const chunk of duplex) n += (chunk as Buffer).length;
      expect(n).toBe(10_000);
    });
    await until(() => byKind(SpanKind.SERVER).length === 1 && byKind(SpanKind.CLIENT).length === 1, 5_000, 'both spans');
    const [clientSpan] = byKind(SpanKind.CLIENT);
    expect(parentOf(byKind(SpanKind.SERVER)[0])).toBe(clientSpan.spanContext().spanId);
    expect(clientSpan.status.code).toBe(SpanStatusCode.UNSET);
  });
});
