/**
 * EventGate (maxEventsPerConnection) and how CallDispatcher accounts for each event at it: one place from the moment
 * an event is taken until its handlers settle, on every path — resolved, rejected, thrown, no handler, a failed
 * deserializer, an app's start hook. The end-to-end behaviour (a connection not read past the limit) is in
 * events.spec.ts and attacks/event-flood.spec.ts.
 */
import { describe, expect, test } from '@jest/globals';
import type { MessageHandler } from '@nestjs/microservices';
import { propagation } from '@opentelemetry/api';
import { of, Subject, tap, throwError } from 'rxjs';
import { tracingReady } from '../../lib/nest/tracing.js';
import { installOtel } from '../helpers/otel.js';
import type { CallMessage } from '../../lib/nest/call-codec.js';
import { EventGate } from '../../lib/nest/event-gate.js';
import type { DecodedRequest, PacketCodec } from '../../lib/nest/packet-codec.js';
import { CallDispatcher, type NestServerFace } from '../../lib/nest/server-dispatch.js';
import type { ServerCall } from '../../lib/nest/server-call.js';

function recordingGate(limit: number, maxBytes = 1 << 30): { gate: EventGate; holds: boolean[] } {
  const holds: boolean[] = [];
  return { gate: new EventGate(limit, maxBytes, (hold) => holds.push(hold)), holds };
}

describe('EventGate', () => {
  test('holds reading as the limit is reached, and resumes once a quarter of the places are free', () => {
    const { gate, holds } = recordingGate(8);
    for (let i = 0; i < 7; i++) gate.enter(1);
    expect(holds).toEqual([]);
    gate.enter(1);
    expect(holds).toEqual([true]);
    gate.enter(1); // one that was decoded as reading stopped: counted, no second hold
    expect(gate.running).toBe(9);
    expect(holds).toEqual([true]);
    for (let i = 0; i < 2; i++) gate.leave(1); // 7, then 6 of 8: not yet
    expect(holds).toEqual([true]);
    gate.leave(1); // 6 → a quarter free
    expect(holds).toEqual([true, false]);
    gate.leave(1);
    gate.enter(1);
    gate.enter(1);
    expect(holds).toEqual([true, false]); // 7 again: below the limit
    gate.enter(1);
    expect(holds).toEqual([true, false, true]);
  });

  test('bytes: held past maxBytes (one event may pass it), resumed once they are down to three quarters', () => {
    const { gate, holds } = recordingGate(1000, 1000);
    gate.enter(600);
    gate.enter(300);
    expect(holds).toEqual([]);
    gate.enter(500); // 1 400: this one passes, reading stops before another
    expect(holds).toEqual([true]);
    gate.leave(300); // 1 100
    expect(holds).toEqual([true]);
    gate.leave(600); // 500 ≤ 750
    expect(holds).toEqual([true, false]);
    expect(gate.bytes).toBe(500);
  });

  test('a limit of 1: one handler at a time', () => {
    const { gate, holds } = recordingGate(1);
    gate.enter(1);
    gate.leave(1);
    gate.enter(1);
    expect(holds).toEqual([true, false, true]);
    gate.leave(1);
    expect(holds).toEqual([true, false, true, false]);
    expect(gate.running).toBe(0);
  });
});

const CALL = { channel: {} } as unknown as ServerCall; // createSmuxContext only keeps it
const MESSAGE = {} as CallMessage;

function dispatcher(options: {
  handler?: MessageHandler | null;
  lookupThrows?: boolean;
  decoded?: DecodedRequest | Promise<DecodedRequest> | (() => never);
  startHook?: NestServerFace['startHook'];
}): { dispatcher: CallDispatcher; logged: unknown[] } {
  const logged: unknown[] = [];
  const decoded = options.decoded ?? { pattern: 'evt', data: 1, id: undefined, headers: undefined };
  const codec = {
    decodeCall: () => (typeof decoded === 'function' ? decoded() : decoded),
  } as unknown as PacketCodec;
  const face: NestServerFace = {
    transportId: Symbol('test'),
    logger: { log: () => undefined, error: (e: unknown) => void logged.push(e), warn: () => undefined },
    rateLimited: { error: (_kind: string, message: string) => void logged.push(message) } as unknown as NestServerFace['rateLimited'],
    codec,
    closing: () => false,
    handlerFor: () => {
      if (options.lookupThrows === true) throw new Error('route lookup failed, on purpose');
      return options.handler ?? null;
    },
    routeOf: (pattern) => pattern,
    startHook: options.startHook ?? (() => null),
    endHook: () => undefined,
  };
  return { dispatcher: new CallDispatcher(face), logged };
}

const handlerOf = (fn: (data: unknown) => unknown): MessageHandler =>
  Object.assign(fn, { isEventHandler: true }) as unknown as MessageHandler;
const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
};

describe('CallDispatcher and the gate: one place per event, given back on every path', () => {
  test.each([
    ['a handler that resolves', 1, handlerOf(() => Promise.resolve())],
    ['a handler that rejects', 1, handlerOf(() => Promise.reject(new Error('rejected on purpose')))],
    [
      'a handler that throws',
      0, // at once
      handlerOf(() => {
        throw new Error('thrown on purpose');
      }),
    ],
    [
      'a handler that returns something Observable-like (not an rxjs Observable)',
      1,
      handlerOf(() => Promise.resolve({ subscribe: () => ({ unsubscribe: () => undefined }) })),
    ],
    ['a handler that returns an Observable that completes at once', 1, handlerOf(() => Promise.resolve(of(1, 2)))],
    ['a handler that returns an Observable that fails at once', 1, handlerOf(() => throwError(() => new Error('failed on purpose')))],
  ])('%s', async (_name, runningAtFirst, handler) => {
    const { gate } = recordingGate(10);
    const { dispatcher: d } = dispatcher({ handler });
    d.dispatchEvent(CALL, MESSAGE, 10, gate);
    expect(gate.running).toBe(runningAtFirst); // held while the handler's promise is pending
    await settle();
    expect(gate.running).toBe(0);
    expect(gate.bytes).toBe(0);
  });

  test('a pending handler keeps its place until it settles', async () => {
    let finish: () => void = () => undefined;
    const { gate } = recordingGate(10);
    const { dispatcher: d } = dispatcher({ handler: handlerOf(() => new Promise<void>((resolve) => (finish = resolve))) });
    d.dispatchEvent(CALL, MESSAGE, 10, gate);
    await settle();
    expect(gate.running).toBe(1);
    finish();
    await settle();
    expect(gate.running).toBe(0);
    expect(gate.bytes).toBe(0);
  });

  test.each([
    ['completes', (subject: Subject<number>) => subject.complete()],
    ['fails', (subject: Subject<number>) => subject.error(new Error('failed on purpose'))],
  ])('an Observable the handler returns keeps the place until it %s', async (_name, finish) => {
    const subject = new Subject<number>();
    const values: number[] = [];
    const { gate } = recordingGate(10);
    const { dispatcher: d } = dispatcher({ handler: handlerOf(() => Promise.resolve(subject.pipe(tap((v) => values.push(v))))) });
    d.dispatchEvent(CALL, MESSAGE, 10, gate);
    await settle();
    subject.next(7); // it runs hot: subscribed without anyone asking
    expect([gate.running, gate.bytes, values]).toEqual([1, 10, [7]]);
    finish(subject);
    expect([gate.running, gate.bytes]).toEqual([0, 0]);
  });

  test.each([false, true])(
    'a span that fails to start (a propagator that throws) gives the place back; the error is logged (start hook: %s)',
    async (withStartHook) => {
      expect(await tracingReady()).toBe(true);
      const sdk = installOtel();
      propagation.disable(); // the API keeps the first propagator registered: replace installOtel's
      propagation.setGlobalPropagator({
        inject: () => undefined,
        extract: () => {
          throw new Error('a propagator failed on purpose');
        },
        fields: () => [],
      });
      try {
        const { gate } = recordingGate(10);
        const { dispatcher: d, logged } = dispatcher({
          handler: handlerOf(() => Promise.resolve()),
          decoded: { pattern: 'evt', data: 1, id: undefined, headers: { traceparent: 'x' } },
          startHook: () => (withStartHook ? (_id, _ctx, done) => void done().catch(() => undefined) : null),
        });
        d.dispatchEvent(CALL, MESSAGE, 10, gate);
        await settle();
        expect([gate.running, gate.bytes]).toEqual([0, 0]);
        if (!withStartHook) expect(logged).toEqual([new Error('a propagator failed on purpose')]);
      } finally {
        sdk.uninstall();
      }
    },
  );

  test('no handler, a deserializer that throws or rejects: the place is given back at once', async () => {
    const { gate } = recordingGate(10);
    dispatcher({ handler: null }).dispatcher.dispatchEvent(CALL, MESSAGE, 10, gate);
    expect(gate.running).toBe(0);
    expect(gate.bytes).toBe(0);
    const thrown = () => {
      throw new Error('cannot decode, on purpose');
    };
    dispatcher({ handler: handlerOf(() => undefined), decoded: thrown }).dispatcher.dispatchEvent(CALL, MESSAGE, 10, gate);
    expect(gate.running).toBe(0);
    expect(gate.bytes).toBe(0);
    const rejected = Promise.reject(new Error('cannot decode later, on purpose'));
    dispatcher({ handler: handlerOf(() => undefined), decoded: rejected }).dispatcher.dispatchEvent(CALL, MESSAGE, 10, gate);
    expect(gate.running).toBe(1); // a custom deserializer's promise: counted while it decodes
    await settle();
    expect(gate.running).toBe(0);
    expect(gate.bytes).toBe(0);
  });

  test('a failure before the handler runs (the route lookup throws): the place is given back, the error logged', () => {
    const { gate } = recordingGate(10);
    const { dispatcher: d, logged } = dispatcher({ lookupThrows: true });
    d.dispatchEvent(CALL, MESSAGE, 10, gate);
    expect(gate.running).toBe(0);
    expect(gate.bytes).toBe(0);
    expect(logged).toHaveLength(1);
  });

  test('an app start hook: no place while the event waits in it, one from its done() until the handler settles', async () => {
    const waiting: Array<() => Promise<unknown>> = [];
    let finish: () => void = () => undefined;
    const { gate } = recordingGate(10);
    const { dispatcher: d } = dispatcher({
      handler: handlerOf(() => new Promise<void>((resolve) => (finish = resolve))),
      startHook: () => (_id, _ctx, done) => void waiting.push(done),
    });
    d.dispatchEvent(CALL, MESSAGE, 10, gate);
    expect(waiting).toHaveLength(1);
    expect(gate.running).toBe(0);
    expect(gate.bytes).toBe(0);
    void waiting[0]();
    void waiting[0](); // a second done() runs nothing and takes no place
    expect(gate.running).toBe(1);
    finish();
    await settle();
    expect(gate.running).toBe(0);
    expect(gate.bytes).toBe(0);
  });
});
