/**
 * Metrics end to end: real client and server apps on 127.0.0.1, what each side's snapshot says after calls that
 * complete, fail in each way, are cancelled, events and a byte stream; and the snapshot through prom-client, as the
 * README's "Metrics" section exports it.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, MessagePattern, RpcException } from '@nestjs/microservices';
import { Counter, Gauge, Registry } from 'prom-client';
import { firstValueFrom, lastValueFrom, NEVER } from 'rxjs';
import { type ClientSmux, SmuxContext, SmuxRecordBuilder, SmuxStatus } from '../../lib/index.js';
import { SMUX_LATENCY_BUCKETS_MS, type SmuxHistogramSnapshot, type SmuxMetrics, type SmuxMetricsSnapshot } from '../../lib/index.js';
import { type AppHandle, closeAll, rejection, startApp, until, within } from './helpers.js';

// ── the README's exporter ("Metrics"), verbatim ──────────────────────────────────────────────────────────────

/**
 * Exposes the metrics of a ClientSmux or a ServerSmux in a prom-client registry, read at each scrape. Names start
 * with `prefix`, e.g. `nestjs_smux_client`; times are in seconds, as Prometheus names them.
 */
function registerSmuxMetrics(registry: Registry, prefix: string, metrics: SmuxMetrics): void {
  const counter = (name: string, help: string, read: (s: SmuxMetricsSnapshot) => number): void => {
    new Counter({
      name: `${prefix}_${name}`,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read(metrics.snapshot()));
      },
    });
  };
  // prom-client cannot set a histogram's buckets: the histogram goes out as its series, the cumulative counts by
  // `le`, the sum and the count, which is what histogram_quantile() reads.
  const le = [...SMUX_LATENCY_BUCKETS_MS.map((ms) => String(ms / 1000)), '+Inf'];
  const histogram = (name: string, help: string, read: (s: SmuxMetricsSnapshot) => SmuxHistogramSnapshot): void => {
    new Counter({
      name: `${prefix}_${name}_bucket`,
      help,
      labelNames: ['le'],
      registers: [registry],
      collect() {
        const { counts, count } = read(metrics.snapshot());
        this.reset();
        [...counts, count].forEach((n, i) => this.inc({ le: le[i] }, n));
      },
    });
    counter(`${name}_sum`, `${help}: sum`, (s) => read(s).sum / 1000);
    counter(`${name}_count`, `${help}: count`, (s) => read(s).count);
  };
  counter('calls_started_total', 'Calls started', (s) => s.calls.started);
  counter('calls_completed_total', 'Calls over with a value', (s) => s.calls.completed);
  new Counter({
    name: `${prefix}_calls_failed_total`,
    help: 'Calls over with a failure, by SmuxError code (handler: an error value)',
    labelNames: ['code'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [code, count] of Object.entries(metrics.snapshot().calls.failed)) this.inc({ code }, count ?? 0);
    },
  });
  new Gauge({
    name: `${prefix}_calls_in_flight`,
    help: 'Calls started and not over',
    registers: [registry],
    collect() {
      this.set(metrics.snapshot().calls.inFlight);
    },
  });
  counter('events_sent_total', 'Events sent', (s) => s.events.sent);
  counter('events_received_total', 'Events received', (s) => s.events.received);
  counter('sent_bytes_total', "Bytes of call messages sent on calls' streams", (s) => s.bytes.sent);
  counter('received_bytes_total', "Bytes received on calls' streams", (s) => s.bytes.received);
  histogram('call_duration_seconds', 'Call latency', (s) => s.latency);
  histogram('rtt_seconds', 'Round-trip time of pings', (s) => s.rtt);
}

// ── the app ──────────────────────────────────────────────────────────────────────────────────────────────────

let eventsSeen = 0;
/** When each `never` handler started (performance.now(), the server's clock: same process). */
const neverStarted: number[] = [];

@Controller()
class MetricsController {
  @MessagePattern('echo')
  echo(data: string): string {
    return data;
  }

  @MessagePattern('throws')
  throws(): never {
    throw new RpcException({ status: 'error', message: 'no' });
  }

  @MessagePattern('never')
  never(): typeof NEVER {
    neverStarted.push(performance.now());
    return NEVER;
  }

  @MessagePattern('bytes')
  bytes(@Ctx() ctx: SmuxContext): void {
    const duplex = ctx.getDuplex();
    duplex.on('data', (chunk: Buffer) => duplex.write(chunk));
    duplex.on('end', () => duplex.end());
  }

  @EventPattern<string>('note')
  note(): void {
    eventsSeen++;
  }
}

let app: AppHandle;
let client: ClientSmux;

beforeAll(async () => {
  app = await startApp({ controllers: [MetricsController] });
  client = app.client();
  await client.connect();
});
afterAll(() => closeAll());

describe('metrics end to end', () => {
  let clientSide: SmuxMetricsSnapshot;
  let serverSide: SmuxMetricsSnapshot;
  /** The least the server can have counted for the deadline call (see the latency test). */
  let serverDeadlineCallAtLeast = 0;

  beforeAll(async () => {
    // One echo and one event carry large ASCII text: the codec hands it to the channel as the string, and the bytes
    // counted for it must still be its bytes on the wire (the test below compares both sides' counts).
    for (let i = 0; i < 10; i++) {
      const text = 'x'.repeat(i === 0 ? 20_000 : 100);
      expect(await within(firstValueFrom(client.send('echo', text)), 'echo')).toBe(text);
    }
    await rejection(firstValueFrom(client.send('throws', 1)));
    const sentAt = performance.now();
    await rejection(firstValueFrom(client.send('never', new SmuxRecordBuilder(1).setTimeout(50).build())), 'the deadline');
    // On the server the call ends by its own deadline (50 ms after it opened) or by the caller's FIN (its timer fires
    // 50 ms after sentAt, the earlier of the two): at least sentAt + 50 either way, and it opened before its handler
    // started. Under load the request reaches the server late, so its share of the 50 ms is smaller.
    serverDeadlineCallAtLeast = sentAt + 50 - neverStarted[0];
    const cancelled = client.send('never', 1).subscribe();
    await until(() => app.server.metrics.snapshot().calls.started === 13, 5_000, 'the call to reach the server');
    cancelled.unsubscribe();
    for (let i = 0; i < 3; i++)
      await within(lastValueFrom(client.emit('note', i === 0 ? 'n'.repeat(20_000) : i), { defaultValue: undefined }), 'emit');
    const duplex = client.openDuplex('bytes');
    duplex.end(Buffer.alloc(50_000));
    let echoed = 0;
    for await (const chunk of duplex) echoed += (chunk as Buffer).length;
    expect(echoed).toBe(50_000);
    await until(() => eventsSeen === 3 && app.server.metrics.snapshot().calls.inFlight === 0, 5_000, 'the server to be done');
    clientSide = client.metrics.snapshot();
    serverSide = app.server.metrics.snapshot();
  });

  test('the metrics objects and the status constants are frozen: one reader cannot change what the next one sees', () => {
    for (const metrics of [client.metrics, app.server.metrics]) {
      expect(Object.isFrozen(metrics)).toBe(true);
      expect(() => void ((metrics as { snapshot: unknown }).snapshot = () => ({}))).toThrow(TypeError);
    }
    expect(Object.isFrozen(SmuxStatus)).toBe(true);
  });

  test('each side counts its calls: completed, failed by code or as the handler’s error, none left in flight', () => {
    expect(clientSide.side).toBe('client');
    expect(serverSide.side).toBe('server');
    // 10 echoes + the byte stream complete; the handler's error; the deadline; the cancel.
    expect(clientSide.calls).toEqual({
      started: 14,
      completed: 11,
      failed: { handler: 1, ERR_SMUX_TIMEOUT: 1, ERR_SMUX_CANCELLED: 1 },
      inFlight: 0,
    });
    const { started, completed, failed, inFlight } = serverSide.calls;
    expect([started, completed, failed.handler, inFlight]).toEqual([14, 11, 1, 0]);
    // The call whose deadline passed ends on the server by its own deadline (ERR_SMUX_TIMEOUT) or, when the
    // caller's timer (started earlier) fired first, by the caller's FIN (ERR_SMUX_CANCELLED), as the cancel does.
    expect((failed.ERR_SMUX_TIMEOUT ?? 0) + (failed.ERR_SMUX_CANCELLED ?? 0)).toBe(2);
    expect(failed.ERR_SMUX_CANCELLED).toBeGreaterThanOrEqual(1);
    expect(clientSide.events).toEqual({ sent: 3, received: 0 });
    expect(serverSide.events).toEqual({ sent: 0, received: 3 });
  });

  test('latency: one observation per call that is over, cumulative buckets ending at the count', () => {
    for (const { latency, calls } of [clientSide, serverSide]) {
      expect(latency.count).toBe(calls.started - calls.inFlight);
      expect(latency.counts.at(-1)).toBeLessThanOrEqual(latency.count);
      expect(latency.counts).toEqual([...latency.counts].sort((a, b) => a - b));
    }
    // The call with a 50 ms deadline: the caller counts all of it; the server counts from the request's arrival.
    expect(clientSide.latency.sum).toBeGreaterThanOrEqual(50);
    expect(serverSide.latency.sum).toBeGreaterThanOrEqual(Math.max(0, serverDeadlineCallAtLeast - 0.01));
  });

  test('bytes: what the client sent the server received (plus the hello on its control stream), and back', () => {
    expect(clientSide.bytes.sent).toBeGreaterThan(10 * 100 + 50_000);
    expect(clientSide.bytes.received).toBeGreaterThan(10 * 100 + 50_000);
    expect(serverSide.bytes.received - clientSide.bytes.sent).toBeGreaterThanOrEqual(0);
    expect(serverSide.bytes.received - clientSide.bytes.sent).toBeLessThan(1024);
    expect(serverSide.bytes.sent - clientSide.bytes.received).toBeGreaterThanOrEqual(0);
    expect(serverSide.bytes.sent - clientSide.bytes.received).toBeLessThan(1024);
  });

  test('through prom-client as the README exports them: counters, a gauge, and the histogram as its series in seconds', async () => {
    const registry = new Registry();
    registerSmuxMetrics(registry, 'nestjs_smux_client', client.metrics);
    const text = await registry.metrics();
    const { latency } = client.metrics.snapshot();
    const name = 'nestjs_smux_client';
    expect(text).toContain(`${name}_calls_started_total 14`);
    expect(text).toContain(`${name}_calls_completed_total 11`);
    expect(text).toContain(`${name}_calls_failed_total{code="handler"} 1`);
    expect(text).toContain(`${name}_calls_failed_total{code="ERR_SMUX_TIMEOUT"} 1`);
    expect(text).toContain(`${name}_calls_in_flight 0`);
    expect(text).toContain(`${name}_events_sent_total 3`);
    expect(text).toContain(`${name}_call_duration_seconds_bucket{le="0.00005"} ${latency.counts[0]}`);
    expect(text).toContain(`${name}_call_duration_seconds_bucket{le="30"} ${latency.counts.at(-1)}`);
    expect(text).toContain(`${name}_call_duration_seconds_bucket{le="+Inf"} ${latency.count}`);
    expect(text).toContain(`${name}_call_duration_seconds_sum ${latency.sum / 1000}`);
    expect(text).toContain(`${name}_call_duration_seconds_count ${latency.count}`);
    expect(text).toContain(`${name}_rtt_seconds_count 0`);
  });
});

describe('calls refused before they were sent', () => {
  test('count as started and failed by their code (too large, unencodable); a bad argument counts nowhere', async () => {
    const small = await startApp({ controllers: [MetricsController], server: { maxMessageBytes: 1024 } });
    const refusing = small.client();
    await refusing.connect(); // the hello tells the client the server's maxMessageBytes
    const tooLarge = await rejection(firstValueFrom(refusing.send('echo', 'x'.repeat(2048))));
    expect((tooLarge as { code?: string }).code).toBe('ERR_SMUX_LIMIT');
    const unencodable = await rejection(firstValueFrom(refusing.send('echo', { n: 1n })));
    expect((unencodable as { code?: string }).code).toBe('ERR_SMUX_ENCODING');
    const duplex = refusing.openDuplex('bytes', { n: 1n });
    const duplexError = await new Promise((resolve) => duplex.on('error', resolve));
    expect((duplexError as { code?: string }).code).toBe('ERR_SMUX_ENCODING');
    await rejection(firstValueFrom(refusing.send('echo', null))); // the calling code's mistake
    const { calls } = refusing.metrics.snapshot();
    expect(calls.started).toBe(3);
    expect(calls.failed).toEqual({ ERR_SMUX_LIMIT: 1, ERR_SMUX_ENCODING: 2 });
    expect(calls.inFlight).toBe(0);
    expect(small.server.metrics.snapshot().calls.started).toBe(0); // none of them reached the server
  });
});
