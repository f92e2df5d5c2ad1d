/** runTeardowns: a subscription's finalizers, run as rxjs runs them. */
import { describe, expect, test } from '@jest/globals';
import { Subscription } from 'rxjs';
import { runTeardowns } from '../../lib/nest/teardowns.js';

describe('runTeardowns', () => {
  test('runs a function, or ends a subscription', () => {
    const ran: string[] = [];
    runTeardowns(() => ran.push('fn'));
    const subscription = new Subscription(() => ran.push('subscription'));
    runTeardowns(subscription);
    expect(ran).toEqual(['fn', 'subscription']);
    expect(subscription.closed).toBe(true);
  });

  test('runs every finalizer even when some throw, then throws the one error, or an AggregateError of several', () => {
    const ran: number[] = [];
    const one = new Error('one');
    expect(() =>
      runTeardowns([
        () => ran.push(1),
        () => {
          throw one;
        },
        () => ran.push(3),
      ]),
    ).toThrow(one);
    expect(ran).toEqual([1, 3]);
    const two = new Error('two');
    let thrown: unknown;
    try {
      runTeardowns([
        () => {
          throw one;
        },
        new Subscription(() => ran.push(4)),
        () => {
          throw two;
        },
      ]);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(AggregateError);
    expect((thrown as AggregateError).errors).toEqual([one, two]);
    expect(ran).toEqual([1, 3, 4]);
  });
});
