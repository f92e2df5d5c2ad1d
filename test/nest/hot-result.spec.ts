import { describe, expect, test } from '@jest/globals';
import { connectable, defer, type Observable, Subject } from 'rxjs';
import { HotResult } from '../../lib/nest/hot-result.js';

/**
 * `emit()`'s result (lib/nest/hot-result.ts) must behave as Nest's own `connectable(defer(dispatch), Subject)`:
 * each scenario runs against both and compares what every subscriber saw.
 */
type Outcome = { kind: 'resolve'; value: unknown } | { kind: 'reject'; error: unknown } | { kind: 'throw'; error: unknown };

function nestEmit<T>(dispatch: () => Promise<T>): Observable<T> {
  const source = connectable(defer(dispatch), { connector: () => new Subject<T>(), resetOnDisconnect: false });
  source.connect();
  return source;
}

/** A dispatch settled by the test: `settle()` applies the outcome. */
function controlled(outcome: Outcome): { dispatch: () => Promise<unknown>; started: () => number; settle: () => void } {
  let starts = 0;
  let resolve: (v: unknown) => void = () => undefined;
  let reject: (e: unknown) => void = () => undefined;
  return {
    dispatch: () => {
      starts++;
      if (outcome.kind === 'throw') throw outcome.error;
      return new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
    },
    started: () => starts,
    settle: () => (outcome.kind === 'resolve' ? resolve(outcome.value) : outcome.kind === 'reject' ? reject(outcome.error) : undefined),
  };
}

/** Subscribes `early` subscribers before the outcome, `late` after it; one early one unsubscribes first. */
async function run(make: (d: () => Promise<unknown>) => Observable<unknown>, outcome: Outcome): Promise<unknown> {
  const d = controlled(outcome);
  const seen: string[][] = [];
  const observe = (source: Observable<unknown>): { unsubscribe(): void } => {
    const log: string[] = [];
    seen.push(log);
    return source.subscribe({
      next: (v) => log.push(`next ${String(v)}`),
      error: (e) => log.push(`error ${String(e)}`),
      complete: () => log.push('complete'),
    });
  };
  const source = make(d.dispatch);
  const startedAtOnce = d.started();
  observe(source);
  observe(source);
  observe(source).unsubscribe();
  d.settle();
  await new Promise((r) => setImmediate(r));
  observe(source);
  return { startedAtOnce, seen };
}

describe('HotResult, as Nest’s emit() result', () => {
  const outcomes: Array<[string, Outcome]> = [
    ['a dispatch that resolves', { kind: 'resolve', value: 'v' }],
    ['a dispatch that resolves with undefined', { kind: 'resolve', value: undefined }],
    ['a dispatch that rejects', { kind: 'reject', error: 'no connection' }],
    ['a dispatch that throws at once', { kind: 'throw', error: 'bad packet' }],
  ];
  test.each(outcomes)('%s: subscribers early, unsubscribed and late see what Nest’s would', async (_name, outcome) => {
    const ours = await run((d) => new HotResult(d), outcome);
    const nests = await run(nestEmit, outcome);
    expect(ours).toEqual(nests);
    expect((ours as { startedAtOnce: number }).startedAtOnce).toBe(1); // hot: dispatched without a subscriber
  });

  test('a rejected dispatch nobody subscribed to is no unhandled rejection', async () => {
    const unhandled: unknown[] = [];
    const listener = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', listener);
    try {
      new HotResult(() => Promise.reject(new Error('nobody listens')));
      await new Promise((r) => setTimeout(r, 10));
    } finally {
      process.off('unhandledRejection', listener);
    }
    expect(unhandled).toEqual([]);
  });
});
