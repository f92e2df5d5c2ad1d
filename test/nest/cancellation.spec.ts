import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { type CanActivate, Controller, type ExecutionContext, Injectable, UseGuards } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { finalize, firstValueFrom, lastValueFrom, Observable, type Subscription, timeout, TimeoutError, toArray } from 'rxjs';
import { type ClientSmux, type Session, SmuxContext, SmuxRecordBuilder } from '../../lib/index.js';
import { type AppHandle, closeAll, deferred, rejection, startApp, until, within, smuxError } from './helpers.js';

/** What the handlers report to the test. Reset before each test. */
let probe: ReturnType<typeof newProbe>;

function newProbe() {
  return {
    subscribed: 0,
    teardowns: 0,
    aborts: 0,
    handlerRan: false,
    entered: deferred<SmuxContext>(),
    guardEntered: deferred<SmuxContext>(),
    teardown: deferred(),
    aborted: deferred<unknown>(),
    gate: deferred(),
  };
}

/** Counts the abort of the call's signal. */
function watch(ctx: SmuxContext): void {
  ctx.signal.addEventListener('abort', () => {
    probe.aborts++;
    probe.aborted.resolve(ctx.signal.reason);
  });
}

/** Never completes; counts subscriptions and teardowns. */
function hanging(ctx: SmuxContext): Observable<unknown> {
  return new Observable<unknown>((subscriber) => {
    probe.subscribed++;
    probe.entered.resolve(ctx);
    subscriber.next('too late'); // emitted on subscribe: must not be written after a cancel
    return () => {
      probe.teardowns++;
      probe.teardown.resolve();
    };
  });
}

@Injectable()
class GateGuard implements CanActivate {
  async canActivate(context: ExecutionContext): Promise<boolean> {
    const ctx = context.switchToRpc().getContext<SmuxContext>();
    watch(ctx);
    probe.guardEntered.resolve(ctx);
    await probe.gate.promise;
    return true;
  }
}

@Controller()
class CancelController {
  @MessagePattern('reject-on-abort') // the natural pattern: reject with the signal's reason
  rejectOnAbort(@Ctx() ctx: SmuxContext): Promise<never> {
    probe.entered.resolve(ctx);
    return new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)));
  }

  @MessagePattern('throw-late') // fails a while after its caller gave up
  async throwLate(@Ctx() ctx: SmuxContext): Promise<never> {
    probe.entered.resolve(ctx);
    await probe.gate.promise;
    throw new Error('late failure');
  }

  @MessagePattern('hang')
  hang(@Ctx() ctx: SmuxContext) {
    watch(ctx);
    return hanging(ctx);
  }

  @MessagePattern('hang-quiet')
  hangQuiet(@Ctx() ctx: SmuxContext) {
    watch(ctx);
    return new Observable<unknown>(() => {
      probe.subscribed++;
      return () => void probe.teardowns++;
    });
  }

  @MessagePattern('guarded')
  @UseGuards(GateGuard)
  guarded(@Ctx() ctx: SmuxContext) {
    probe.handlerRan = true;
    return hanging(ctx);
  }

  @MessagePattern('async-pending')
  async asyncPending(@Ctx() ctx: SmuxContext) {
    watch(ctx);
    probe.entered.resolve(ctx);
    await probe.gate.promise;
    probe.handlerRan = true;
    return new Observable<unknown>((subscriber) => {
      probe.subscribed++;
      subscriber.next('too late');
    }).pipe(finalize(() => void probe.teardown.resolve()));
  }

  @MessagePattern('generator')
  async *generator(@Ctx() ctx: SmuxContext) {
    watch(ctx);
    try {
      for (let i = 0; ; i++) {
        yield i;
        if (i === 2) {
          probe.entered.resolve(ctx);
          await probe.gate.promise;
        }
      }
    } finally {
      probe.teardown.resolve();
    }
  }

  @MessagePattern('quick')
  quick(@Ctx() ctx: SmuxContext) {
    watch(ctx);
    probe.entered.resolve(ctx);
    return 'done';
  }

  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
  }
}

/** Frames the server end of `session` has written so far (a response would add some). */
function framesOut(session: Session): number {
  return session.stats.framesOut;
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('cancellation', () => {
  let handle: AppHandle;
  let client: ClientSmux;

  beforeAll(async () => {
    handle = await startApp({ controllers: [CancelController], providers: [GateGuard], server: { smux: { keepAliveDisabled: true } } });
    client = handle.client();
  });
  beforeEach(() => {
    probe = newProbe();
  });
  afterAll(closeAll);

  test("unsubscribing tears the handler's Observable down and aborts ctx.signal", async () => {
    const values: unknown[] = [];
    const subscription = client.send('hang', {}).subscribe((v) => values.push(v));
    await within(probe.entered.promise, 'the handler to be subscribed');
    await until(() => values.length === 1, 5_000, 'the first value');
    subscription.unsubscribe();
    await within(probe.teardown.promise, 'the teardown');
    const reason = await within(probe.aborted.promise, 'ctx.signal to abort');
    expect(reason).toEqual(smuxError('ERR_SMUX_CANCELLED', 'the caller cancelled the call'));
    expect(probe.teardowns).toBe(1);
    expect(probe.aborts).toBe(1);
    // The connection carries on.
    expect(await firstValueFrom(client.send('echo', 'ok'))).toBe('ok');
  });

  test('an rxjs timeout() on the caller cancels the call on the server', async () => {
    await expect(firstValueFrom(client.send('hang-quiet', {}).pipe(timeout(50)))).rejects.toBeInstanceOf(TimeoutError);
    await within(probe.aborted.promise, 'ctx.signal to abort');
    await until(() => probe.teardowns === 1, 5_000, 'the teardown');
    expect(probe.subscribed).toBe(1);
  });

  test("a cancel while a guard is pending: the handler's Observable is torn down, nothing is written", async () => {
    const subscription = client.send('guarded', {}).subscribe({ error: () => undefined });
    const ctx = await within(probe.guardEntered.promise, 'the guard');
    subscription.unsubscribe();
    await within(probe.aborted.promise, 'ctx.signal to abort');
    await turn(); // the server's FIN for the cancelled stream leaves
    const session = ctx.getSession();
    const before = framesOut(session);
    probe.gate.resolve();
    await within(probe.teardown.promise, 'the teardown after the guard let go');
    await turn();
    await turn();
    expect(probe.handlerRan).toBe(true);
    expect(probe.teardowns).toBe(1);
    expect(ctx.signal.aborted).toBe(true);
    expect(framesOut(session)).toBe(before);
    expect(session.numStreams).toBe(1); // the connection's control stream
  });

  test('a cancel while an async handler is pending: its Observable is torn down, nothing is written', async () => {
    const subscription = client.send('async-pending', {}).subscribe({ error: () => undefined });
    const ctx = await within(probe.entered.promise, 'the handler');
    subscription.unsubscribe();
    await within(probe.aborted.promise, 'ctx.signal to abort');
    await turn();
    const session = ctx.getSession();
    const before = framesOut(session);
    probe.gate.resolve();
    await within(probe.teardown.promise, 'the finalize of the late Observable');
    await turn();
    await turn();
    expect(probe.handlerRan).toBe(true);
    expect(ctx.signal.aborted).toBe(true);
    expect(framesOut(session)).toBe(before);
    expect(session.numStreams).toBe(1); // the connection's control stream
  });

  test('a cancel stops an async generator: its finally runs, no more values are pulled', async () => {
    const values: unknown[] = [];
    const subscription = client.send('generator', {}).subscribe({ next: (v) => void values.push(v), error: () => undefined });
    const ctx = await within(probe.entered.promise, 'the generator to pause');
    await until(() => values.length === 3, 5_000, 'three values');
    subscription.unsubscribe();
    await within(probe.aborted.promise, 'ctx.signal to abort');
    probe.gate.resolve();
    await within(probe.teardown.promise, "the generator's finally");
    expect(values).toEqual([0, 1, 2]);
    expect(ctx.signal.aborted).toBe(true);
  });

  test('handlers that never complete leave no streams once their callers unsubscribe', async () => {
    const subscriptions: Subscription[] = [];
    for (let i = 0; i < 50; i++) subscriptions.push(client.send('hang', {}).subscribe({ error: () => undefined }));
    await until(() => probe.subscribed === 50, 5_000, '50 handlers subscribed');
    const serverSession = (await probe.entered.promise).getSession();
    const clientSession = client.unwrap<Session>();
    expect(serverSession.numStreams).toBe(51); // 50 calls and the connection's control stream
    expect(clientSession.numStreams).toBe(51);
    for (const s of subscriptions) s.unsubscribe();
    await until(() => probe.teardowns === 50 && probe.aborts === 50, 5_000, '50 teardowns and aborts');
    await until(() => serverSession.numStreams === 1, 5_000, 'server streams to be released (but the control stream)');
    await until(() => clientSession.numStreams === 1, 5_000, 'client streams to be released (but the control stream)');
    expect(await lastValueFrom(client.send('echo', [1]).pipe(toArray()))).toEqual([[1]]);
  });

  test('a handler that rejects after its call was cancelled or timed out does not crash the server', async () => {
    // Before the fix Nest's error Observable for the late failure was subscribed without an error callback:
    // rxjs rethrew it asynchronously and the process died. Jest reports such an error as a failure of this test.
    const cancelled = client.send('reject-on-abort', {}).subscribe({ error: () => undefined });
    await within(probe.entered.promise, 'the handler');
    cancelled.unsubscribe();
    probe = newProbe();
    const timedOut = rejection(firstValueFrom(client.send('throw-late', new SmuxRecordBuilder({}).setTimeout(50).build())));
    await within(probe.entered.promise, 'the handler');
    expect(await timedOut).toEqual(smuxError('ERR_SMUX_TIMEOUT'));
    probe.gate.resolve();
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(await firstValueFrom(client.send('echo', 'alive'))).toBe('alive');
  });

  test('a call that completes normally does not abort its signal', async () => {
    expect(await firstValueFrom(client.send('quick', {}))).toBe('done');
    const ctx = await within(probe.entered.promise, 'the handler');
    await turn();
    await turn();
    expect(ctx.signal.aborted).toBe(false);
    expect(probe.aborts).toBe(0);
  });
});

describe('cancellation and processing hooks', () => {
  afterAll(closeAll);

  test('the processing end hook runs exactly once for a cancelled call and for a completed one', async () => {
    probe = newProbe();
    const handle = await startApp({ controllers: [CancelController], providers: [GateGuard] });
    const ends: string[] = [];
    handle.server.setOnProcessingStartHook((_t, _ctx, done) => void done());
    handle.server.setOnProcessingEndHook((_t, ctx) => void ends.push((ctx as SmuxContext).getPattern()));
    const client = handle.client();
    const subscription = client.send('hang', {}).subscribe({ error: () => undefined });
    await within(probe.entered.promise, 'the handler');
    subscription.unsubscribe();
    await within(probe.teardown.promise, 'the teardown');
    await until(() => ends.length === 1, 5_000, 'the end hook');
    expect(await firstValueFrom(client.send('echo', 2))).toBe(2);
    await until(() => ends.length === 2, 5_000, 'the end hook of the completed call');
    await turn();
    expect(ends).toEqual(['hang', 'echo']);
  });
  test('a start hook that calls done() twice runs the handler once: the second call is a no-op', async () => {
    probe = newProbe();
    const handle = await startApp({ controllers: [CancelController], providers: [GateGuard] });
    const ends: string[] = [];
    const seconds: Array<Promise<unknown>> = [];
    handle.server.setOnProcessingStartHook((_t, _ctx, done) => {
      void done();
      seconds.push(done());
    });
    handle.server.setOnProcessingEndHook((_t, ctx) => void ends.push((ctx as SmuxContext).getPattern()));
    const client = handle.client();
    expect(await firstValueFrom(client.send('echo', 3))).toBe(3);
    const subscription = client.send('hang', {}).subscribe({ error: () => undefined });
    await within(probe.entered.promise, 'the handler');
    await turn();
    expect(probe.subscribed).toBe(1); // the handler ran once, its Observable was subscribed once
    subscription.unsubscribe();
    await within(probe.teardown.promise, 'the teardown');
    await until(() => ends.length === 2, 5_000, 'the end hooks');
    await expect(Promise.all(seconds)).resolves.toEqual([undefined, undefined]);
    await turn();
    expect(probe.teardowns).toBe(1);
    expect(ends).toEqual(['echo', 'hang']);
  });
});
