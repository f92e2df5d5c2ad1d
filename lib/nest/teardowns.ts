import type { TeardownLogic } from 'rxjs';

/** A finalizer of a subscription: a function, or a subscription to end. */
export type Teardown = Exclude<TeardownLogic, void>;

/**
 * Runs finalizers as rxjs does: every one, even when one throws; then the error (several: an AggregateError). For an
 * object that is its own subscriber (the server's reply), which rxjs subscribes without a Subscription of its own.
 */
export function runTeardowns(teardowns: Teardown | Teardown[]): void {
  if (!Array.isArray(teardowns)) return runTeardown(teardowns);
  const errors: unknown[] = [];
  for (const teardown of teardowns) {
    try {
      runTeardown(teardown);
    } catch (error) {
      errors.push(error);
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, 'finalizers of a reply subscription failed');
}

function runTeardown(teardown: Teardown): void {
  if (typeof teardown === 'function') teardown();
  else teardown.unsubscribe();
}
