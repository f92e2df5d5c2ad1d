/**
 * A Go caller (the peer's `neststream` sub-command: xtaci/smux 1.5.16 as the client, the streaming calls of
 * docs/PROTOCOL.md written by hand in Go) streaming to a real Nest microservice running ServerSmux over TCP:
 * client streams (§5: REQUEST + STREAM, DATA …, END), bidirectional streams (replies flowing while the caller
 * still sends), and byte streams (§6: REQUEST + RAW, RAW … both ways, END) of 64 MiB checked by SHA-256.
 */
import { afterAll, beforeAll, beforeEach, expect, test } from '@jest/globals';
import type { INestMicroservice, LoggerService } from '@nestjs/common';
import { Controller, Module } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { map, type Observable, toArray } from 'rxjs';
import { encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { ServerSmux, type SmuxContext, type SmuxStreamedPayload } from '../../lib/index.js';
import { describeWithGo } from './describe-with-go.js';
import { runGo } from './go-peer.js';

const MiB = 1024 * 1024;
const NO_HANDLER = 'There is no matching message handler defined in the remote service.';

/** What the handlers saw, for the tests to compare with what Go reports. */
const probe = {
  echo: null as { bytes: number; sha256: string } | null,
  inputError: undefined as unknown,
  rawError: undefined as unknown,
};

/** One item of a client stream as the handler got it: which JavaScript value its body became. */
function describeItem(item: unknown): unknown {
  if (Buffer.isBuffer(item)) return { bytes: item.toString('hex') };
  if (item === undefined) return { none: true };
  if (typeof item === 'string') return { string: item };
  return { json: item };
}

/** A sink that hashes what it is given. */
function hashingSink(): { sink: Writable; report: () => { bytes: number; sha256: string } } {
  const hash = createHash('sha256');
  let bytes = 0;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      bytes += chunk.length;
      callback();
    },
  });
  return { sink, report: () => ({ bytes, sha256: hash.digest('hex') }) };
}

@Controller()
class StreamsController {
  /** A client stream, one reply: how many items and their sum (taken one at a time with for await). */
  @MessagePattern('sum')
  async sum(@Payload() items: SmuxStreamedPayload<number>): Promise<{ count: number; sum: number }> {
    let count = 0;
    let sum = 0;
    try {
      for await (const n of items) {
        count++;
        sum += n;
      }
    } catch (error) {
      probe.inputError = error;
      throw error;
    }
    return { count, sum };
  }

  @MessagePattern('describe')
  describe(@Payload() items: SmuxStreamedPayload<unknown>): Observable<unknown[]> {
    return items.pipe(map(describeItem), toArray());
  }

  /** Done after the first item: its LAST goes out while the caller is still sending. */
  @MessagePattern('first-only')
  async firstOnly(@Payload() items: SmuxStreamedPayload<number>): Promise<number> {
    for await (const n of items) return n;
    return -1;
  }

  /** Bidirectional: each item doubled, as it arrives (an Observable reply). */
  @MessagePattern('double-observable')
  doubleObservable(@Payload() items: SmuxStreamedPayload<number>): Observable<number> {
    return items.pipe(map((n) => n * 2));
  }

  /** Bidirectional: each item doubled, pulled one at a time (an AsyncIterable reply). */
  @MessagePattern('double-generator')
  async *doubleGenerator(@Payload() items: SmuxStreamedPayload<number>): AsyncGenerator<number> {
    for await (const n of items) yield n * 2;
  }

  /** A byte stream: every byte straight back through ctx.getDuplex(), hashed on the way. */
  @MessagePattern('echo-hash')
  async echoHash(@Ctx() ctx: SmuxContext): Promise<void> {
    const duplex = ctx.getDuplex();
    const hash = createHash('sha256');
    let bytes = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        bytes += chunk.length;
        callback(null, chunk);
      },
    });
    try {
      await pipeline(duplex, tap, duplex);
    } catch (error) {
      probe.rawError = error;
      throw error;
    }
    probe.echo = { bytes, sha256: hash.digest('hex') };
  }

  /** A byte stream whose server direction ends first: 'ready' and END + LAST at once, then the upload is hashed. */
  @MessagePattern('answer-first')
  async answerFirst(@Ctx() ctx: SmuxContext): Promise<void> {
    const duplex = ctx.getDuplex();
    duplex.end('ready');
    const received = hashingSink();
    await pipeline(duplex, received.sink);
    probe.echo = received.report();
  }

  /**
   * A byte stream both ways with different data: uploads are hashed while `bytes` random bytes go down; then a
   * JSON trailer reports both digests in-band.
   */
  @MessagePattern('exchange')
  async exchange(@Payload() request: { bytes: number }, @Ctx() ctx: SmuxContext): Promise<void> {
    const duplex = ctx.getDuplex();
    const received = hashingSink();
    const sent = createHash('sha256');
    let sentBytes = 0;
    const writing = (async () => {
      while (sentBytes < request.bytes) {
        const chunk = randomBytes(Math.min(64 * 1024, request.bytes - sentBytes));
        sent.update(chunk);
        sentBytes += chunk.length;
        if (!duplex.write(chunk)) await once(duplex, 'drain');
      }
    })();
    await Promise.all([pipeline(duplex, received.sink), writing]);
    duplex.end(JSON.stringify({ received: received.report(), sent: { bytes: sentBytes, sha256: sent.digest('hex') } }));
  }
}

@Module({ controllers: [StreamsController] })
class StreamsModule {}

/** What the apps logged (they log through this, not the console: some tests provoke errors on purpose). */
const logged: Array<{ level: string; message: string }> = [];
const logger: LoggerService = Object.fromEntries(
  ['log', 'error', 'warn', 'debug', 'verbose', 'fatal'].map((level) => [
    level,
    (message: unknown) => void logged.push({ level, message: message instanceof Error ? message.message : String(message) }),
  ]),
) as unknown as LoggerService;

async function startApp(): Promise<{ app: INestMicroservice; addr: string }> {
  const moduleRef = await Test.createTestingModule({ imports: [StreamsModule] }).compile();
  const server = new ServerSmux({ host: '127.0.0.1', port: 0 });
  const app = moduleRef.createNestMicroservice({ strategy: server, logger });
  await app.listen();
  const { port } = server.unwrap<NetServer>().address() as AddressInfo;
  return { app, addr: `127.0.0.1:${port}` };
}

/** Runs `peer neststream -addr addr -wait 20000 ...args` and returns its one RESULT and exit code. */
async function neststream(addr: string, args: string[]): Promise<{ code: number | null; result: Record<string, unknown> }> {
  // -wait bounds every wait of the Go caller well inside Jest's timeout, so a stall fails with Go's own report.
  const run = await runGo(['neststream', '-addr', addr, '-wait', '20000', ...args], 60_000);
  if (run.results.length !== 1)
    throw new Error(`neststream printed ${run.results.length} RESULT lines (exit ${run.code})\n${run.stdout}\n${run.stderr}`);
  return { code: run.code, result: run.results[0] };
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

describeWithGo('Go caller streams to Nest ServerSmux (§5 client streams, §6 byte streams)', () => {
  let main: { app: INestMicroservice; addr: string };

  beforeAll(async () => {
    main = await startApp(); // detects the caller's smux version
  });
  afterAll(async () => {
    await main?.app.close();
  });
  beforeEach(() => {
    probe.echo = null;
    probe.inputError = undefined;
    probe.rawError = undefined;
  });

  test.each(['1', '2'])(
    'v%s: a client stream of 10 000 DATA items, cut across frames at random, then END: one reply {count, sum}, LAST, FIN',
    async (v) => {
      const { code, result } = await neststream(main.addr, [
        '-v',
        v,
        '-mode',
        'stream',
        '-pattern',
        'sum',
        '-count',
        '10000',
        '-split',
        '300',
      ]);
      expect(result).toMatchObject({
        ok: true,
        error: '',
        version: Number(v),
        values: [{ count: 10_000, sum: 50_005_000 }],
        replies: 1,
        messages: 1,
        lastValue: true,
        itemsSent: 10_000,
        endSent: true,
        writerStopped: false,
        serverFin: true,
        bytesAfterLast: 0,
      });
      expect(code).toBe(0);
      // Go encodes the REQUEST by hand from docs/PROTOCOL.md: STREAM set, no body (encoding none).
      expect(result.request).toBe(hexOf(encodeMessage(Kind.REQUEST, Flag.STREAM, undefined, { id: '1', pattern: 'sum' })));
      expect(result.request).toBe('01001804070000000131030073756d');
    },
  );

  test('an empty client stream (END right after the REQUEST) is an empty input', async () => {
    const { code, result } = await neststream(main.addr, ['-v', '2', '-mode', 'stream', '-pattern', 'sum', '-count', '0']);
    expect(result).toMatchObject({ ok: true, values: [{ count: 0, sum: 0 }], itemsSent: 0, endSent: true });
    expect(code).toBe(0);
  });

  test('DATA items of every body encoding reach the handler as the values they encode, in order', async () => {
    const items = [1, 'two', { $text: 'thrée' }, { $bytes: '00ff10' }, { $none: true }, null, { k: [1, 2] }];
    const { code, result } = await neststream(main.addr, [
      '-v',
      '2',
      '-mode',
      'stream',
      '-pattern',
      'describe',
      '-items',
      JSON.stringify(items),
    ]);
    expect(result).toMatchObject({ ok: true, replies: 1, itemsSent: 7 });
    expect(result.values).toEqual([
      [{ json: 1 }, { string: 'two' }, { string: 'thrée' }, { bytes: '00ff10' }, { none: true }, { json: null }, { json: { k: [1, 2] } }],
    ]);
    expect(code).toBe(0);
  });

  test("END + ERROR: the handler's input fails with ERR_SMUX_CANCELLED (the caller's error body as cause), and the call ends with ERROR + LAST", async () => {
    const { code, result } = await neststream(main.addr, [
      '-v',
      '2',
      '-mode',
      'stream',
      '-pattern',
      'sum',
      '-count',
      '5',
      '-end-error',
      '{"code":"E_SOURCE"}',
      '-expect-error',
    ]);
    expect(result).toMatchObject({ ok: true, last: true, transport: false, itemsSent: 5, endSent: true, serverFin: true });
    expect(result.error).toEqual({ status: 'error', message: 'Internal server error' });
    expect(code).toBe(0);
    // A SmuxError of ours, not the peer's body, which Nest would log as it is (caller-source-failed.spec).
    expect(probe.inputError).toMatchObject({ code: 'ERR_SMUX_CANCELLED', message: "the caller's source failed" });
    expect((probe.inputError as Error).cause).toEqual({ code: 'E_SOURCE' });
  });

  test("the handler's LAST before the caller's END: Go stops sending and FINs, the server drops the rest", async () => {
    const { code, result } = await neststream(main.addr, ['-v', '2', '-mode', 'stream', '-pattern', 'first-only', '-count', '200000']);
    expect(result).toMatchObject({ ok: true, error: '', values: [1], replies: 1, last: true, serverFin: true, bytesAfterLast: 0 });
    // Go noticed the LAST while still writing (or had just finished): either way the call completed cleanly.
    expect(result.writerStopped === true || result.endSent === true).toBe(true);
    expect(code).toBe(0);
  });

  test.each([
    ['1', 'double-observable'],
    ['2', 'double-observable'],
    ['1', 'double-generator'],
    ['2', 'double-generator'],
  ])(
    'v%s bidirectional, %s: Go streams 5 000 numbers while every doubled reply streams back, checked in order by Go',
    async (v, pattern) => {
      // The first 20 items go in lockstep — each waits for its reply — so a server that answered only after END
      // would fail here; the rest flow at full speed in both directions at once.
      const { code, result } = await neststream(main.addr, [
        '-v',
        v,
        '-mode',
        'stream',
        '-pattern',
        pattern,
        '-count',
        '5000',
        '-lockstep',
        '20',
        '-mul',
        '2',
        '-split',
        '1000',
      ]);
      expect(result).toMatchObject({ ok: true, error: '', replies: 5000, itemsSent: 5000, endSent: true, last: true, serverFin: true });
      expect(result.repliesBeforeEnd as number).toBeGreaterThanOrEqual(20);
      // LAST either carries the last value or follows it, alone (encoding none).
      expect(result.messages).toBe(result.lastValue === true ? 5000 : 5001);
      // Go shows the first 1 000 replies: checked here too, independently of its own check.
      expect(result).toMatchObject({ valuesTruncated: true });
      expect(result.values).toEqual(Array.from({ length: 1000 }, (_, i) => 2 * (i + 1)));
      expect(code).toBe(0);
    },
  );

  test('a byte stream: Go uploads 64 MiB while the handler echoes it through ctx.getDuplex(), SHA-256 checked on both sides', async () => {
    const size = 64 * MiB;
    const { code, result } = await neststream(main.addr, [
      '-v',
      '2',
      '-mode',
      'raw',
      '-pattern',
      'echo-hash',
      '-data',
      '{"name":"go.bin"}',
      '-bytes',
      String(size),
    ]);
    expect(result).toMatchObject({ ok: true, error: '', sent: size, received: size, endSent: true, last: true, serverFin: true });
    expect(result.receivedSha256).toBe(result.sentSha256);
    // §6: the server's direction ends with END + LAST, then its FIN and nothing else.
    expect(result).toMatchObject({ endFlags: Flag.LAST, bytesAfterLast: 0 });
    // Both ways at once: 64 MiB is far more than every window and buffer on the way, so most of the echo must
    // have arrived before Go finished sending.
    expect(result.receivedBeforeEnd as number).toBeGreaterThan(size / 2);
    expect(result.request).toBe(hexOf(encodeMessage(Kind.REQUEST, Flag.RAW, { name: 'go.bin' }, { id: '1', pattern: 'echo-hash' })));
    expect(code).toBe(0);
    await until('the handler to finish', () => probe.echo !== null);
    expect(probe.echo).toEqual({ bytes: size, sha256: result.sentSha256 });
  }, 60_000);

  test('a byte stream both ways with different data: 64 MiB up and 64 MiB down at once, the handler’s digests sent in-band', async () => {
    const size = 64 * MiB;
    const { code, result } = await neststream(main.addr, [
      '-v',
      '2',
      '-mode',
      'raw',
      '-pattern',
      'exchange',
      '-data',
      JSON.stringify({ bytes: size }),
      '-bytes',
      String(size),
      '-download',
      String(size),
    ]);
    expect(result).toMatchObject({ ok: true, error: '', sent: size, received: size, endSent: true, last: true, serverFin: true });
    const trailer = JSON.parse(result.trailer as string) as { received: unknown; sent: unknown };
    expect(trailer.received).toEqual({ bytes: size, sha256: result.sentSha256 }); // what Go sent, as the handler hashed it
    expect(trailer.sent).toEqual({ bytes: size, sha256: result.receivedSha256 }); // what the handler sent, as Go hashed it
    expect(result.receivedSha256).not.toBe(result.sentSha256);
    // Both ways at once: the two directions are independent (the upload may well finish first, its window being
    // as large as the download's), but a good part of the download arrived before the upload ended. Directions
    // taking turns would deliver at most a window (≤ 1 MiB) first; a loaded machine measured 7.5 MiB (11 %) of
    // 64 MiB once in the full suite, so the bound is 1/16.
    expect(result.receivedBeforeEnd as number).toBeGreaterThan(size / 16);
    expect(code).toBe(0);
  }, 60_000);

  test('v1: a 64 MiB echo over smux protocol version 1 (no stream windows: the session buffers pace it, bounded)', async () => {
    const size = 64 * MiB;
    const { code, result } = await neststream(main.addr, ['-v', '1', '-mode', 'raw', '-pattern', 'echo-hash', '-bytes', String(size)]);
    expect(result).toMatchObject({ ok: true, sent: size, received: size, version: 1, endFlags: Flag.LAST, serverFin: true });
    expect(result.receivedSha256).toBe(result.sentSha256);
    // v1's only limit is each session's 4 MiB receive buffer (plus the sockets'): the echo keeps pace with the upload.
    expect(result.receivedBeforeEnd as number).toBeGreaterThan(size / 4);
    expect(code).toBe(0);
    await until('the handler to finish', () => probe.echo !== null);
    expect(probe.echo).toEqual({ bytes: size, sha256: result.sentSha256 });
  }, 60_000);

  test("the server's direction ends first (END + LAST at once): Go's upload goes on to its END, then both FIN", async () => {
    const size = 8 * MiB;
    const { code, result } = await neststream(main.addr, [
      '-v',
      '2',
      '-mode',
      'raw',
      '-pattern',
      'answer-first',
      '-bytes',
      String(size),
      '-download',
      '0',
    ]);
    expect(result).toMatchObject({
      ok: true,
      trailer: 'ready',
      received: 0,
      sent: size,
      endSent: true,
      endFlags: Flag.LAST,
      serverFin: true,
    });
    expect(code).toBe(0);
    await until('the handler to finish', () => probe.echo !== null);
    expect(probe.echo).toEqual({ bytes: size, sha256: result.sentSha256 });
  });

  test("a byte upload that ends with END + ERROR fails the handler's Duplex, and the call, with ERR_SMUX_CANCELLED (the caller's error body as cause)", async () => {
    const { code, result } = await neststream(main.addr, [
      '-v',
      '2',
      '-mode',
      'raw',
      '-pattern',
      'echo-hash',
      '-bytes',
      String(MiB),
      '-end-error',
      '{"code":"E_UPLOAD"}',
      '-expect-error',
    ]);
    // §6: the caller's direction failed, so the server's cannot end normally — the call fails at once with a
    // transport error (RESPONSE + ERROR + TRANSPORT + LAST; never END + ERROR from the server), whatever the handler does.
    expect(result).toMatchObject({ ok: true, last: true, endSent: true, sent: MiB, transport: true });
    expect(result).toMatchObject({ errorKind: Kind.RESPONSE, endFlags: Flag.LAST | Flag.ERROR | Flag.TRANSPORT });
    expect(result.error).toEqual({ code: 'ERR_SMUX_CANCELLED', message: "the caller's source failed" });
    expect(code).toBe(0);
    await until('the handler to fail', () => probe.rawError !== undefined);
    expect(probe.rawError).toMatchObject({ code: 'ERR_SMUX_CANCELLED', message: "the caller's source failed" });
    expect((probe.rawError as Error).cause).toEqual({ code: 'E_UPLOAD' });
  });

  test('a byte stream to a pattern without a handler: RESPONSE + ERROR + LAST before any byte comes back', async () => {
    const { code, result } = await neststream(main.addr, [
      '-v',
      '2',
      '-mode',
      'raw',
      '-pattern',
      'no.such',
      '-bytes',
      String(MiB),
      '-expect-error',
    ]);
    expect(result).toMatchObject({ ok: true, last: true, status: 'error', error: NO_HANDLER, received: 0, errorKind: Kind.RESPONSE });
    expect(result.endFlags).toBe(Flag.LAST | Flag.ERROR | Flag.STATUS);
    expect(code).toBe(0);
  });
});
