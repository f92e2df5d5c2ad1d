import { isObservable, type Observable } from 'rxjs';
import type { CallEndpoint } from './call-endpoint.js';
import { pullTurns } from './pull-turns.js';

/*
 * Sources of a call's items, the same on both sides: a handler's streamed reply on the server, a streamed
 * request on the client. An AsyncIterable (an async generator, a Readable) is pulled only as the stream's window
 * allows; an Observable cannot be paused, so what it emits faster than the peer reads is queued up to a bound.
 */

/** What a call can stream: values pulled from an AsyncIterable or a Readable, or emitted by an Observable. */
export type SmuxSource<T = unknown> = Observable<T> | AsyncIterable<T>;

/** True for an AsyncIterable (async generators, Readables). */
export function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return (
    typeof value === 'object' && value !== null && typeof (value as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] === 'function'
  );
}

/** True for a value a call streams item by item rather than sending whole. */
export function isSource(value: unknown): value is SmuxSource {
  return isObservable(value) || isAsyncIterable(value);
}

/**
 * Frees a source nobody wants any more: `destroy()` a stream (a file, a socket), else `return()` the iterator.
 * (An iterator's `return()` waits behind a pending `next()`: a Readable idle in `next()` needs `destroy()`.)
 */
export function releaseSource(source: AsyncIterable<unknown>, iterator?: AsyncIterator<unknown>): void {
  const destroyable = source as Partial<{ destroy(): void }>;
  if (typeof destroyable.destroy === 'function') destroyable.destroy();
  else void Promise.resolve((iterator ?? source[Symbol.asyncIterator]()).return?.()).catch(() => undefined);
}

/**
 * Releases a handler's result nobody will read (the call was cancelled while the handler ran): an Observable is
 * subscribed and unsubscribed at once, so the teardown of work the handler started runs; an iterator is returned.
 */
export function releaseResult(result: unknown): void {
  if (isObservable(result)) result.subscribe({ error: () => undefined }).unsubscribe();
  else if (isAsyncIterable(result)) releaseSource(result);
}

/** How a pull ended. */
export type PullOutcome = { done: true } | { done: false; error: unknown } | { done: false; error?: undefined; stopped: true };

/**
 * Pulls `source` into `endpoint`, one item at a time: `write(value)` encodes and queues it — or returns a promise
 * while it waits to (the server's connection reply budget is full) — and the next item is taken only once the
 * stream's queue is below its high-water mark (the peer's window and the socket drain it). `live()` false stops the
 * pull (cancelled, or the other side ended the call) and releases the source.
 */
export async function pullSource(
  endpoint: CallEndpoint,
  source: AsyncIterable<unknown>,
  write: (value: unknown) => unknown,
  live: () => boolean,
  onRelease: (release: (() => void) | null) => void,
): Promise<PullOutcome> {
  const iterator = source[Symbol.asyncIterator]();
  // On cancel the source is released at once, even while a next() is pending.
  onRelease(() => releaseSource(source, iterator));
  // The event loop's share of items is fair between connections (pull-turns.ts): this pull's is its session.
  const owner = endpoint.channel.session;
  try {
    for (;;) {
      const turn = pullTurns.admit(owner, live);
      if (turn !== null) {
        await turn;
        if (!live()) return { done: false, stopped: true };
      }
      const step = await iterator.next();
      if (!live()) return { done: false, stopped: true };
      if (step.done === true) return { done: true };
      const writing = write(step.value);
      if (writing instanceof Promise) await writing;
      if (!endpoint.writable) await endpoint.drained();
      if (!live()) return { done: false, stopped: true }; // whoever ended the call released the source
    }
  } catch (error) {
    return { done: false, error };
  } finally {
    onRelease(null);
  }
}
