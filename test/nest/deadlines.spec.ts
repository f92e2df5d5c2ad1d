import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern } from '@nestjs/microservices';
import { firstValueFrom, Observable } from 'rxjs';
import { type Clock, SmuxContext, SmuxError, SmuxRecordBuilder } from '../../lib/index.js';
import { encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { type AppHandle, closeAll, deferred, rawCall, rawSession, rejection, startApp, within, smuxError } from './helpers.js';

let probe: ReturnType<typeof newProbe>;

function newProbe() {
  return {
    ctx: deferred<SmuxContext>(),
    remaining: [] as Array<number | undefined>,
    teardown: deferred(),
    aborted: deferred<unknown>(),
  };
}

@Controller()
class DeadlineController {
  @MessagePattern('hang')
  hang(@Ctx() ctx: SmuxContext) {
    probe.remaining.push(ctx.getRemainingTime());
    ctx.signal.addEventListener('abort', () => probe.aborted.resolve(ctx.signal.reason));
    probe.ctx.resolve(ctx);
    return new Observable<never>(() => () => probe.teardown.resolve());
  }

  @MessagePattern('remaining')
  remaining(@Ctx() ctx: SmuxContext) {
    return { remaining: ctx.getRemainingTime() ?? 'none', aborted: ctx.signal.aborted };
  }
}

/** A clock whose timers never fire: a client on it has no local deadline, only the server's. */
const frozenTimers: Clock = {
  now: () => Date.now(),
  setTimeout: () => ({}),
  clearTimeout: () => undefined,
};

function codeOf(error: unknown): unknown {
  return (error as { code?: unknown } | null)?.code;
}

describe('deadlines', () => {
  let handle: AppHandle;

  beforeAll(async () => {
    handle = await startApp({ controllers: [DeadlineController] });
  });
  beforeEach(() => {
    probe = newProbe();
  });
  afterAll(closeAll);

  test("the client's default timeout fails the call with ERR_SMUX_TIMEOUT and the server cancels the handler", async () => {
    const client = handle.client({ timeout: 100 });
    const error = await rejection(firstValueFrom(client.send('hang', {})));
    expect(codeOf(error)).toBe('ERR_SMUX_TIMEOUT');
    await within(probe.teardown.promise, "the handler's teardown");
    await within(probe.aborted.promise, 'ctx.signal to abort');
    const [remaining] = probe.remaining;
    expect(typeof remaining).toBe('number');
    expect(remaining).toBeLessThanOrEqual(100);
  });

  test('a per-call timeout (SmuxRecordBuilder.setTimeout) fails the call with ERR_SMUX_TIMEOUT and cancels the handler', async () => {
    const client = handle.client();
    const error = await rejection(firstValueFrom(client.send('hang', new SmuxRecordBuilder({}).setTimeout(80).build())));
    expect(codeOf(error)).toBe('ERR_SMUX_TIMEOUT');
    await within(probe.teardown.promise, "the handler's teardown");
    await within(probe.aborted.promise, 'ctx.signal to abort');
    expect(probe.remaining[0]).toBeLessThanOrEqual(80);
  });

  test('the budget travels with the call: ctx.getRemainingTime() is bounded by it; none without one', async () => {
    const withDefault = handle.client({ timeout: 5_000 });
    const a = await firstValueFrom(withDefault.send<{ remaining: number | string }>('remaining', {}));
    expect(typeof a.remaining).toBe('number');
    expect(a.remaining).toBeGreaterThan(0);
    expect(a.remaining).toBeLessThanOrEqual(5_000);

    const b = await firstValueFrom(
      withDefault.send<{ remaining: number | string }>('remaining', new SmuxRecordBuilder({}).setTimeout(1_000).build()),
    );
    expect(typeof b.remaining).toBe('number');
    expect(b.remaining).toBeLessThanOrEqual(1_000);

    // 0 on the call overrides the client's default: no deadline at all.
    expect(await firstValueFrom(withDefault.send('remaining', new SmuxRecordBuilder({}).setTimeout(0).build()))).toEqual({
      remaining: 'none',
      aborted: false,
    });
    expect(await firstValueFrom(handle.client().send('remaining', {}))).toEqual({ remaining: 'none', aborted: false });
  });

  test('a call that answers within its deadline succeeds and is not aborted', async () => {
    const client = handle.client({ timeout: 10_000 });
    const results = await Promise.all(Array.from({ length: 50 }, () => firstValueFrom(client.send<{ aborted: boolean }>('remaining', {}))));
    expect(results.every((r) => r.aborted === false)).toBe(true);
  });

  test("the server enforces the budget itself: a caller without a local timer gets the server's ERR_SMUX_TIMEOUT", async () => {
    const client = handle.client({ timeout: 100, smux: { clock: frozenTimers, keepAliveDisabled: true } });
    const error = await rejection(firstValueFrom(client.send('hang', {})));
    expect(error).toEqual(smuxError('ERR_SMUX_TIMEOUT'));
    const reason = await within(probe.aborted.promise, 'ctx.signal to abort');
    expect(reason).toBeInstanceOf(SmuxError);
    expect((reason as SmuxError).code).toBe('ERR_SMUX_TIMEOUT');
    await within(probe.teardown.promise, "the handler's teardown");
    expect(probe.remaining[0]).toBeLessThanOrEqual(100);
  });

  test('the server enforces the budget for a raw smux caller too, then ends the stream', async () => {
    const session = await rawSession(handle.port);
    const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, {}, { id: 'r1', pattern: 'hang', timeout: 120 }));
    const last = await within(call.last, "the server's answer");
    expect(last.kind).toBe(Kind.RESPONSE);
    expect(last.flags & (Flag.LAST | Flag.ERROR)).toBe(Flag.LAST | Flag.ERROR);
    expect(last.body).toEqual({ code: 'ERR_SMUX_TIMEOUT', message: expect.any(String) });
    expect(call.messages).toHaveLength(1);
    await within(call.ended, "the server's FIN");
    const ctx = await probe.ctx.promise;
    expect(ctx.signal.aborted).toBe(true);
    expect(ctx.getRemainingTime()).toBe(0);
    expect(probe.remaining[0]).toBeLessThanOrEqual(120);
    await within(probe.teardown.promise, "the handler's teardown");
    call.channel.end();
    await within(call.closed, 'the stream to close');
  });
});
