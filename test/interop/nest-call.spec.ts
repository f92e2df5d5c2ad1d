/**
 * A Go caller (the peer's `nestcall` sub-command: xtaci/smux 1.5.16 as the client, the call protocol of
 * docs/PROTOCOL.md written by hand in Go) against a real Nest microservice running ServerSmux.
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import type { INestMicroservice, LoggerService } from '@nestjs/common';
import { Controller, Module } from '@nestjs/common';
import { Ctx, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import net, { type AddressInfo, type Server as NetServer } from 'node:net';
import { interval, map, type Observable, take } from 'rxjs';
import { encodeMessage, Kind } from '../../lib/nest/call-codec.js';
import { ServerSmux, type ServerSmuxOptions, SmuxContext } from '../../lib/index.js';
import { describeWithGo } from './describe-with-go.js';
import { type GoRun, runGo } from './go-peer.js';

const NO_HANDLER = 'There is no matching message handler defined in the remote service.';

interface SlowCall {
  remaining: number | undefined;
  aborted: boolean;
  reason: unknown;
}

const events: unknown[] = [];
const slowCalls: SlowCall[] = [];

@Controller()
class CallController {
  @MessagePattern('sum')
  sum(@Payload() data: number[]): number {
    return data.reduce((a, b) => a + b, 0);
  }

  @MessagePattern({ cmd: 'ticks' })
  ticks(@Payload() base: number): Observable<number> {
    return interval(5).pipe(
      take(3),
      map((i) => base + i),
    );
  }

  /** Never answers: resolves only once its signal aborts (then too late for anyone to hear). */
  @MessagePattern('slow')
  slow(@Ctx() ctx: SmuxContext): Promise<string> {
    const call: SlowCall = { remaining: ctx.getRemainingTime(), aborted: false, reason: undefined };
    slowCalls.push(call);
    return new Promise((resolve) => {
      ctx.signal.addEventListener(
        'abort',
        () => {
          call.aborted = true;
          call.reason = ctx.signal.reason;
          resolve('too late');
        },
        { once: true },
      );
    });
  }

  @MessagePattern('repeat')
  repeat(@Payload() n: number): string {
    return 'x'.repeat(n);
  }

  /** A value JSON cannot encode (a database driver's BIGINT column, say). */
  @MessagePattern('bigint')
  bigint(): { id: bigint } {
    return { id: 1n };
  }

  @MessagePattern('headers')
  headers(@Ctx() ctx: SmuxContext): Readonly<Record<string, string>> {
    return ctx.getHeaders();
  }

  @EventPattern('evt')
  onEvent(@Payload() data: unknown): void {
    events.push(data);
  }
}

@Module({ controllers: [CallController] })
class CallModule {}

interface App {
  app: INestMicroservice;
  addr: string;
}

/** What the apps logged, by level (they log through this, not the console: the suite provokes errors on purpose). */
const logged: Array<{ level: string; message: string }> = [];
const logger: LoggerService = Object.fromEntries(
  ['log', 'error', 'warn', 'debug', 'verbose', 'fatal'].map((level) => [
    level,
    (message: unknown) => void logged.push({ level, message: message instanceof Error ? message.message : String(message) }),
  ]),
) as unknown as LoggerService;

async function startApp(options: ServerSmuxOptions = {}): Promise<App> {
  const moduleRef = await Test.createTestingModule({ imports: [CallModule] }).compile();
  const server = new ServerSmux({ host: '127.0.0.1', port: 0, ...options });
  const app = moduleRef.createNestMicroservice({ strategy: server, logger });
  await app.listen();
  const { port } = server.unwrap<NetServer>().address() as AddressInfo;
  return { app, addr: `127.0.0.1:${port}` };
}

/** Runs `peer nestcall -addr addr ...args` and returns its one RESULT (with the exit code and stderr). */
async function nestcall(addr: string, args: string[]): Promise<{ code: number | null; result: Record<string, unknown>; run: GoRun }> {
  const run = await runGo(['nestcall', '-addr', addr, ...args], 30_000);
  if (run.results.length !== 1)
    throw new Error(`nestcall printed ${run.results.length} RESULT lines (exit ${run.code})\n${run.stdout}\n${run.stderr}`);
  return { code: run.code, result: run.results[0], run };
}

async function until(what: string, condition: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function hexOf(buffers: Buffer[]): string {
  return Buffer.concat(buffers).toString('hex');
}

describeWithGo('Go caller (xtaci/smux + the call protocol) → Nest ServerSmux, protocol v2', () => {
  let main: App;

  beforeAll(async () => {
    main = await startApp(); // smux version 2: the transport's default
  });
  afterAll(async () => {
    await main?.app.close();
  });

  test.each(['1', '2'])("a Go v%s caller that says HELLO first (as ClientSmux does) gets the server's HELLO, then calls", async (v) => {
    const { code, result } = await nestcall(main.addr, ['-v', v, '-hello', '-pattern', 'sum', '-data', '[1,2,3]']);
    expect(result).toMatchObject({
      ok: true,
      values: [6],
      version: Number(v),
      hello: { protocol: 1, maxMessageBytes: 8 * 1024 * 1024, maxCallsPerConnection: 1_000 },
    });
    expect(code).toBe(0);
  });

  test("(a) 'sum' with [1,2,3] returns 6 with LAST; the Go bytes are exactly the TS codec's", async () => {
    const { code, result } = await nestcall(main.addr, ['-v', '2', '-pattern', 'sum', '-data', '[1,2,3]', '-timeout', '1000']);
    expect(result).toMatchObject({
      scenario: 'nestcall',
      ok: true,
      error: '',
      values: [6],
      last: true,
      messages: 1,
      status: '',
      version: 2,
    });
    // §4: LAST, then the server's FIN and nothing else
    expect(result).toMatchObject({ serverFin: true, bytesAfterLast: 0 });
    expect(code).toBe(0);
    // Go encodes by hand from docs/PROTOCOL.md; the TS codec's bytes are pinned from the same document.
    expect(result.sent).toBe(hexOf(encodeMessage(Kind.REQUEST, 0, [1, 2, 3], { id: '1', pattern: 'sum', timeout: 1000 })));
    expect(result.sent).toBe('01015800120000000131030073756de80300005b312c322c335d');
  });

  test("(b) {cmd:'ticks'} (PATTERN_JSON) returns its Observable's 3 values in order, the last with LAST", async () => {
    const { code, result } = await nestcall(main.addr, ['-v', '2', '-pattern', '{"cmd":"ticks"}', '-data', '10']);
    expect(result).toMatchObject({ ok: true, error: '', values: [10, 11, 12], messages: 3, last: true });
    expect(code).toBe(0);
    expect(result.sent).toBe(hexOf(encodeMessage(Kind.REQUEST, 0, 10, { id: '1', pattern: '{"cmd":"ticks"}', patternIsJson: true })));
  });

  test('a request and a reply larger than a frame and than the v2 stream window are reassembled from the prefix', async () => {
    const ones = `[${Array.from({ length: 40_000 }, () => '1').join(',')}]`; // 80 KB of request body
    const sum = await nestcall(main.addr, ['-v', '2', '-pattern', 'sum', '-data', ones]);
    expect(sum.result).toMatchObject({ ok: true, values: [40_000] });
    const big = await nestcall(main.addr, ['-v', '2', '-pattern', 'repeat', '-data', '300000']);
    expect(big.result).toMatchObject({ ok: true, messages: 1, last: true, serverFin: true });
    expect(big.result.values).toEqual(['x'.repeat(300_000)]); // a UTF-8 string body (encoding 3)
  });

  test('a request with an unknown flag bit is refused as malformed: ERR_SMUX_PROTOCOL, ERROR + LAST', async () => {
    const { code, result } = await nestcall(main.addr, [
      '-v',
      '2',
      '-pattern',
      'sum',
      '-data',
      '[1]',
      '-extra-flags',
      '8192',
      '-expect-error',
    ]);
    expect(result).toMatchObject({ ok: true, last: true, transport: true, error: { code: 'ERR_SMUX_PROTOCOL' } });
    expect(code).toBe(0);
  });

  test('headers (Nest metadata) arrive in the handler context', async () => {
    const { code, result } = await nestcall(main.addr, [
      '-v',
      '2',
      '-pattern',
      'headers',
      '-data',
      '{}',
      '-headers',
      '{"a":"1","trace":"x-9"}',
    ]);
    expect(result).toMatchObject({ ok: true, values: [{ a: '1', trace: 'x-9' }] });
    expect(code).toBe(0);
    expect(result.sent).toBe(hexOf(encodeMessage(Kind.REQUEST, 0, {}, { id: '1', pattern: 'headers', headers: { a: '1', trace: 'x-9' } })));
  });

  test('(c) an EVENT (then FIN) reaches the @EventPattern handler', async () => {
    events.length = 0;
    const { code, result } = await nestcall(main.addr, ['-v', '2', '-event', '-pattern', 'evt', '-data', '{"x":1,"s":"é"}']);
    expect(result).toMatchObject({ ok: true, error: '' });
    expect(code).toBe(0);
    expect(result.sent).toBe(hexOf(encodeMessage(Kind.EVENT, 0, { x: 1, s: 'é' }, { pattern: 'evt' })));
    await until('the event handler', () => events.length > 0);
    expect(events).toEqual([{ x: 1, s: 'é' }]);
  });

  test('(d) an unknown pattern gets Nest\'s no-handler error (STATUS "error", ERROR + LAST) at once', async () => {
    const started = Date.now();
    const { code, result } = await nestcall(main.addr, ['-v', '2', '-pattern', 'no.such.pattern', '-data', '1', '-expect-error']);
    expect(result).toMatchObject({ ok: true, status: 'error', error: NO_HANDLER, values: [], last: true });
    expect(code).toBe(0);
    expect(Date.now() - started).toBeLessThan(5_000);

    // Without -expect-error the same call is a failure: ok false, exit 1, the error body reported.
    const plain = await nestcall(main.addr, ['-v', '2', '-pattern', 'no.such.pattern', '-data', '1']);
    expect(plain.result).toMatchObject({ ok: false, status: 'error', error: NO_HANDLER });
    expect(plain.code).toBe(1);
  });

  test("(e) 'slow' with the TIMEOUT field 300 ms: ERR_SMUX_TIMEOUT from the server, and the handler's signal aborts", async () => {
    slowCalls.length = 0;
    const { code, result } = await nestcall(main.addr, [
      '-v',
      '2',
      '-pattern',
      'slow',
      '-data',
      'null',
      '-timeout',
      '300',
      '-expect-error',
    ]);
    expect(result).toMatchObject({ ok: true, last: true, values: [], error: { code: 'ERR_SMUX_TIMEOUT' } });
    expect(code).toBe(0);
    expect(result.ms as number).toBeGreaterThanOrEqual(250);
    expect(result.ms as number).toBeLessThan(5_000);
    await until('the slow handler to be aborted', () => slowCalls[0]?.aborted === true);
    expect(slowCalls).toHaveLength(1);
    expect(slowCalls[0].remaining).toBeLessThanOrEqual(300);
    expect(slowCalls[0].remaining).toBeGreaterThan(0);
    expect(slowCalls[0].reason).toMatchObject({ code: 'ERR_SMUX_TIMEOUT' });
  });

  test('a server that never answers: the Go caller gives up at -wait with a clear error (exit 1), and its hang-up cancels the handler', async () => {
    slowCalls.length = 0;
    const { code, result } = await nestcall(main.addr, ['-v', '2', '-pattern', 'slow', '-data', 'null', '-wait', '500']);
    expect(result.ok).toBe(false);
    expect(String(result.error)).toMatch(/no answer before the deadline/);
    expect(code).toBe(1);
    expect(result.ms as number).toBeLessThan(5_000);
    await until('the slow handler to be aborted by the hang-up', () => slowCalls[0]?.aborted === true);
    expect(slowCalls[0].remaining).toBeUndefined(); // no TIMEOUT field was sent
  });

  test('a closed port: ok false and exit 1 at once, not a hang', async () => {
    const probe = await startApp();
    const addr = probe.addr;
    await probe.app.close();
    const { code, result } = await nestcall(addr, ['-v', '2', '-pattern', 'sum', '-data', '[1]', '-wait', '2000']);
    expect(result.ok).toBe(false);
    expect(String(result.error)).toMatch(/dial/);
    expect(code).toBe(1);
  });
});

describeWithGo('Go caller → ServerSmux that refuses calls', () => {
  test('(f) maxConnections: a connection over the limit gets ERR_SMUX_LIMIT on its call (or its hello), not a hang', async () => {
    const full = await startApp({ maxConnections: 1 });
    const holder = net.connect(Number(full.addr.split(':')[1]), '127.0.0.1'); // takes the one slot
    await new Promise((resolve) => holder.once('connect', resolve));
    try {
      const { code, result } = await nestcall(full.addr, ['-v', '2', '-pattern', 'sum', '-data', '[1,2,3]', '-expect-error']);
      expect(result).toMatchObject({ ok: true, last: true, values: [], transport: true, error: { code: 'ERR_SMUX_LIMIT' } });
      expect(code).toBe(0);
      const hello = await nestcall(full.addr, ['-v', '2', '-hello', '-pattern', 'sum', '-data', '[1]']);
      expect(hello.result).toMatchObject({ ok: false, transport: true, error: { code: 'ERR_SMUX_LIMIT' } });
      expect(hello.code).toBe(1);
    } finally {
      holder.destroy();
      await full.app.close();
    }
  });

  test('a request over maxMessageBytes gets ERR_SMUX_LIMIT', async () => {
    const small = await startApp({ maxMessageBytes: 64 });
    try {
      const ok = await nestcall(small.addr, ['-v', '2', '-pattern', 'sum', '-data', '[1,2]']);
      expect(ok.result).toMatchObject({ ok: true, values: [3] });
      const data = `[${Array.from({ length: 40 }, () => '1').join(',')}]`;
      const { result } = await nestcall(small.addr, ['-v', '2', '-pattern', 'sum', '-data', data, '-expect-error']);
      expect(result).toMatchObject({ ok: true, last: true, transport: true, error: { code: 'ERR_SMUX_LIMIT' } });
    } finally {
      await small.app.close();
    }
  });

  test('a server closing while the call runs ends it with ERR_SMUX_SHUTTING_DOWN (retryable), and aborts the handler', async () => {
    slowCalls.length = 0;
    const closing = await startApp({ closeTimeout: 200 });
    const call = nestcall(closing.addr, ['-v', '2', '-pattern', 'slow', '-data', 'null', '-wait', '10000', '-expect-error']);
    await until('the slow handler to start', () => slowCalls.length === 1, 10_000);
    const closed = closing.app.close();
    const { code, result } = await call;
    await closed;
    expect(result).toMatchObject({ ok: true, last: true, transport: true, error: { code: 'ERR_SMUX_SHUTTING_DOWN' } });
    expect(code).toBe(0);
    expect(slowCalls[0]).toMatchObject({ aborted: true, reason: { code: 'ERR_SMUX_SHUTTING_DOWN' } });
  });
});

describeWithGo('Go caller → Nest ServerSmux, protocol v1', () => {
  let v1: App;

  beforeAll(async () => {
    v1 = await startApp({ smux: { version: 1 } });
  });
  afterAll(async () => {
    await v1?.app.close();
  });

  test("(g) 'sum', {cmd:'ticks'} and an event over smux protocol version 1", async () => {
    const sum = await nestcall(v1.addr, ['-v', '1', '-pattern', 'sum', '-data', '[1,2,3]']);
    expect(sum.result).toMatchObject({ ok: true, values: [6], last: true, version: 1 });
    expect(sum.code).toBe(0);

    const ticks = await nestcall(v1.addr, ['-v', '1', '-pattern', '{"cmd":"ticks"}', '-data', '0']);
    expect(ticks.result).toMatchObject({ ok: true, values: [0, 1, 2] });

    events.length = 0;
    const event = await nestcall(v1.addr, ['-v', '1', '-event', '-pattern', 'evt', '-data', '"v1"']);
    expect(event.result).toMatchObject({ ok: true });
    await until('the event handler', () => events.length > 0);
    expect(events).toEqual(['v1']);
  });

  test('a v2 caller against a server pinned to v1 is answered, in v2, with "protocol version mismatch" — not a hang', async () => {
    const { code, result } = await nestcall(v1.addr, ['-v', '2', '-pattern', 'sum', '-data', '[1]', '-wait', '10000']);
    expect(result).toMatchObject({ ok: false, transport: true, error: { code: 'ERR_SMUX_PROTOCOL' } });
    expect((result.error as { message: string }).message).toMatch(/protocol version mismatch: this server speaks version 1/);
    expect(result.ms as number).toBeLessThan(5_000);
    expect(code).toBe(1);
    expect(logged).toContainEqual({
      level: 'warn',
      message: expect.stringMatching(/^Refused the connection from 127\.0\.0\.1:\d+: smux protocol version mismatch/),
    });
  });

  test('with the hello first, a v2 caller against the v1 server learns the same at the hello', async () => {
    const { result } = await nestcall(v1.addr, ['-v', '2', '-hello', '-pattern', 'sum', '-data', '[1]', '-expect-error']);
    expect(result).toMatchObject({ ok: true, transport: true, error: { code: 'ERR_SMUX_PROTOCOL' } });
    expect((result.error as { message: string }).message).toMatch(/protocol version mismatch/);
  });
});

describeWithGo('Go caller → ServerSmux: a reply the server cannot encode', () => {
  let app: App;

  beforeAll(async () => {
    app = await startApp();
  });
  afterAll(async () => {
    await app?.app.close();
  });

  // A reply JSON cannot carry (a BigInt, a cycle) once escaped as an unhandled rejection and left the caller
  // waiting. Per docs/PROTOCOL.md §4 ("never an empty success") the call ends with a transport error,
  // ERR_SMUX_ENCODING, and the server logs why (with the caller's address and the cause's stack).
  test('a handler returning a BigInt gets the transport error ERR_SMUX_ENCODING, not silence; the server logs the cause', async () => {
    logged.length = 0;
    const { result } = await nestcall(app.addr, ['-v', '2', '-pattern', 'bigint', '-data', 'null', '-wait', '3000', '-expect-error']);
    expect(result).toMatchObject({ ok: true, last: true, transport: true, error: { code: 'ERR_SMUX_ENCODING' } });
    expect(logged).toContainEqual({ level: 'error', message: expect.stringContaining('could not be encoded') });
  });
});
