/**
 * A caller's `END` + `ERROR` (its source failed; PROTOCOL.md §5, §6), which ClientSmux never sends but a Go caller
 * may — found by a hostile-peer trial:
 * - the handler's input failed with the caller's raw body, which a rethrowing handler handed to Nest's exception
 *   filter, which logged it verbatim (ANSI escapes, forged `[Nest]` lines, 1 MB bodies): it now fails with a
 *   handler-facing SmuxError of ours (not logged), the body only as its `cause`;
 * - a byte stream whose handler caught that error never settled (no answer, no FIN, `ctx.signal` never aborted,
 *   in flight until the connection closed): it now fails at once with a transport error + LAST, then FIN.
 */
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import type { SmuxContext, SmuxStreamedPayload } from '../../lib/index.js';
import { type CallMessage, encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import type { Session } from '../../lib/smux/index.js';
import {
  type AppHandle,
  closeAll,
  type Deferred,
  deferred,
  logLines,
  rawCall,
  rawSession,
  smuxError,
  startApp,
  until,
  within,
} from './helpers.js';

/** What each handler's input failed with, and its ctx.signal's abort reason (undefined while not aborted). */
let seen: unknown[];
let signals: AbortSignal[];
/** Lets the handler that keeps running return. */
let letGo: Deferred<void>;

const FORGED = '\x1b[2J\x1b[31mFAKE LOG LINE\n[Nest] 1 - LOG [ServerSmux] everything fine';

@Controller()
class SourceFailedController {
  /** The README's pattern: a `for await` over the items, whose error propagates. */
  @MessagePattern('cs.sum')
  async sum(@Payload() items: SmuxStreamedPayload<number>): Promise<number> {
    let total = 0;
    try {
      for await (const item of items) total += item;
    } catch (error) {
      seen.push(error);
      throw error;
    }
    return total;
  }

  @MessagePattern('bytes.catch')
  async bytesCatch(@Ctx() ctx: SmuxContext): Promise<void> {
    await readAll(ctx);
  }

  @MessagePattern('bytes.rethrow')
  async bytesRethrow(@Ctx() ctx: SmuxContext): Promise<void> {
    const error = await readAll(ctx);
    throw error;
  }

  @MessagePattern('bytes.running')
  async bytesRunning(@Ctx() ctx: SmuxContext): Promise<void> {
    await readAll(ctx);
    await letGo.promise; // still running when the call must have settled
  }

  /** Our END + LAST goes out first; the caller's direction fails after it. */
  @MessagePattern('bytes.ended-first')
  async bytesEndedFirst(@Ctx() ctx: SmuxContext): Promise<void> {
    ctx.getDuplex().end('done');
    await readAll(ctx);
  }
}

/** Reads the handler's Duplex to its end; returns (and records) the error it fails with. */
async function readAll(ctx: SmuxContext): Promise<unknown> {
  signals.push(ctx.signal);
  try {
    for await (const _chunk of ctx.getDuplex());
    seen.push('ended without an error');
    return undefined;
  } catch (error) {
    seen.push(error);
    return error;
  }
}

const sourceFailed = smuxError('ERR_SMUX_CANCELLED', "the caller's source failed");

describe("a caller's END + ERROR", () => {
  let handle: AppHandle;
  let session: Session;

  beforeAll(async () => {
    handle = await startApp({ controllers: [SourceFailedController], server: { finTimeout: 60_000 } });
  });
  beforeEach(async () => {
    seen = [];
    signals = [];
    letGo = deferred();
    logLines.length = 0;
    session = await rawSession(handle.port);
  });
  afterAll(closeAll);

  const inFlight = (): number => handle.server.metrics.snapshot().calls.inFlight;

  test('a client stream: the handler sees a SmuxError of ours, the body as its cause, and nothing of the body is logged', async () => {
    const bodies: (string | undefined)[] = [...Array.from({ length: 49 }, (_, i) => `${FORGED} ${i}`), undefined];
    const calls = bodies.map((body, i) =>
      rawCall(session, [
        ...encodeMessage(Kind.REQUEST, Flag.STREAM, undefined, { pattern: 'cs.sum', id: `s${i}` }),
        ...encodeMessage(Kind.DATA, 0, 1),
        ...encodeMessage(Kind.END, Flag.ERROR, body),
      ]),
    );
    const answers = await within(Promise.all(calls.map((call) => call.last)), 'the answers');
    for (const answer of answers) {
      expect(answer.flags & Flag.ERROR).toBe(Flag.ERROR);
      expect(JSON.stringify(answer.body)).not.toContain('FAKE LOG LINE');
    }
    await until(() => inFlight() === 0, 5_000, 'the calls to end');
    // Not one line for the 50 calls: no ERROR with the body, no `undefined` for the body-less one.
    expect(logLines.filter((line) => line.level === 'error' || line.level === 'fatal')).toEqual([]);
    expect(logLines.filter((line) => line.message.includes('FAKE LOG LINE'))).toEqual([]);
    expect(seen).toHaveLength(50);
    seen.forEach((error, i) => {
      expect(error).toEqual(sourceFailed);
      expect((error as Error).cause).toBe(bodies[i]); // decoded as sent; none for a body-less END + ERROR
    });
  });

  /** A byte stream: REQUEST + RAW, RAW "abc", END + ERROR, and no FIN from the caller. */
  async function failedUpload(pattern: string, body: string | undefined): Promise<{ answer: CallMessage; messages: CallMessage[] }> {
    const call = rawCall(session, [
      ...encodeMessage(Kind.REQUEST, Flag.RAW, undefined, { pattern, id: 'b' }),
      ...encodeMessage(Kind.RAW, 0, Buffer.from('abc')),
      ...encodeMessage(Kind.END, Flag.ERROR, body),
    ]);
    const answer = await within(call.last, 'the answer');
    await within(call.ended, "the server's FIN");
    return { answer, messages: call.messages };
  }

  for (const [pattern, does, body] of [
    ['bytes.catch', 'catches and returns', 'source failed'],
    ['bytes.catch', 'catches and returns', undefined],
    ['bytes.rethrow', 'rethrows', 'source failed'],
    ['bytes.running', 'keeps running', 'source failed'],
    ['bytes.running', 'keeps running', undefined],
  ] as const) {
    test(`a byte stream whose handler ${does} (body: ${body ?? 'none'}) settles: a transport error + LAST, FIN, ctx.signal aborts`, async () => {
      const { answer, messages } = await failedUpload(pattern, body);
      expect(answer.kind).toBe(Kind.RESPONSE);
      expect(answer.flags & (Flag.ERROR | Flag.TRANSPORT | Flag.LAST)).toBe(Flag.ERROR | Flag.TRANSPORT | Flag.LAST);
      expect(answer.body).toEqual({ code: 'ERR_SMUX_CANCELLED', message: "the caller's source failed" });
      expect(messages).toEqual([answer]); // nothing else was written (no RAW, no END)
      await until(() => inFlight() === 0, 5_000, 'the call to end on the server');
      expect(seen).toEqual([sourceFailed]);
      expect((seen[0] as Error).cause).toBe(body);
      expect(signals[0].aborted).toBe(true);
      expect(signals[0].reason).toBe(seen[0]); // the same error as the Duplex's
      letGo.resolve();
      expect(logLines.filter((line) => line.level === 'error' || line.level === 'fatal')).toEqual([]);
    });
  }

  test("after the server's END + LAST, the caller's END + ERROR cancels the call (no second LAST)", async () => {
    const call = rawCall(session, encodeMessage(Kind.REQUEST, Flag.RAW, undefined, { pattern: 'bytes.ended-first', id: 'e' }));
    const last = await within(call.last, "the server's END + LAST");
    expect(last.kind).toBe(Kind.END);
    for (const buffer of encodeMessage(Kind.END, Flag.ERROR, 'source failed')) call.channel.write(buffer);
    await until(() => inFlight() === 0, 5_000, 'the call to end on the server');
    expect(seen).toEqual([sourceFailed]);
    expect(signals[0].aborted).toBe(true);
    await within(call.ended, "the server's FIN");
    expect(call.messages.filter((message) => (message.flags & Flag.LAST) !== 0)).toHaveLength(1);
  });

  afterEach(async () => {
    session.destroy();
    await once(session, 'close');
  });
});
