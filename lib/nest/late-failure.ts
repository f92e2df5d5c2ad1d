import type { Unsubscribable } from 'rxjs';
import type { PendingCall } from './client-call.js';
import { failDuplex, type SmuxDuplex } from './raw-duplex.js';

/*
 * A call or event that fails before any I/O — no connection (fail fast), no room in the queue, a stream that
 * cannot open, a request that cannot be encoded — is decided inside the caller's `subscribe()` / `emit()` /
 * `openDuplex()`. Its failure reaches the caller on a later turn of the event loop (an immediate, after the poll
 * phase), as a connection attempt's would. Delivered at once, a loop that retries it never lets I/O and timers run
 * — background reconnection included, so it may never succeed — and rxjs `retry` resubscribes from inside the
 * error until the stack overflows (Nest's TCP client reports such failures from its socket, later).
 *
 * The immediates are ref'd: the failure is what the caller waits for, and with nothing else alive (no socket during
 * a backoff, our timers unref'd) an unref'd one would never run — a script awaiting the call would exit with it
 * unsettled. Each lives one turn, and an unsubscribe (a destroy, for a byte stream) clears it. A call that gets
 * under way costs none of this: no immediate, no closure, no object.
 */

let starting: PendingCall | null = null; // the call being handed to the transport (startCall)

/**
 * Hands a new call to `target` from inside the caller's `subscribe()` (or `openDuplex()`): a failure decided
 * meanwhile reaches the caller on a later turn ({@link isStarting}); later failures are delivered as they happen.
 */
export function startCall(call: PendingCall, target: { schedule(call: PendingCall): void }): void {
  const outer = starting; // a streamed request's source, subscribed meanwhile, may start calls of its own
  starting = call;
  try {
    target.schedule(call);
  } finally {
    starting = outer;
  }
}

/** True while `call` is being started ({@link startCall}): its failure is then delivered later. */
export function isStarting(call: PendingCall): boolean {
  return starting === call;
}

/** Calls `deliver(value)` on a later turn; unsubscribing first cancels it. */
export function deliverLater<A>(deliver: (value: A) => void, value: A): Unsubscribable {
  const late = setImmediate(deliver, value);
  return { unsubscribe: () => clearImmediate(late) };
}

/** A promise that rejects with `error` on a later turn (passed as a rejection handler, it defers the rejection). */
export function rejectLater<T>(error: unknown): Promise<T> {
  return new Promise<T>((_resolve, reject) => void setImmediate(reject, error));
}

/** Fails `duplex` with `error` on a later turn, unless it is destroyed (closed) first. */
export function failDuplexLater(duplex: SmuxDuplex, error: unknown): void {
  const late = setImmediate(failDuplex, duplex, error);
  duplex.once('close', () => clearImmediate(late));
}
