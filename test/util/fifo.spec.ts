import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { Fifo } from '../../lib/util/fifo.js';

describe('Fifo', () => {
  test('shifts items in the order they were pushed', () => {
    const fifo = new Fifo<string>();
    fifo.push('a');
    fifo.push('b');
    fifo.push('c');
    expect(fifo.length).toBe(3);
    expect([fifo.shift(), fifo.shift()]).toEqual(['a', 'b']);
    expect(fifo.length).toBe(1);
    fifo.push('d');
    expect([fifo.shift(), fifo.shift()]).toEqual(['c', 'd']);
  });

  test('shift() on an empty queue gives undefined and leaves it usable', () => {
    const fifo = new Fifo<number>();
    expect(fifo.shift()).toBeUndefined();
    expect(fifo.length).toBe(0);
    fifo.push(0); // a falsy item is an item
    expect([fifo.length, fifo.shift(), fifo.length]).toEqual([1, 0, 0]);
  });

  test('drain() returns the remaining items oldest first and empties the queue', () => {
    const fifo = new Fifo<number>();
    for (let i = 1; i <= 5; i++) fifo.push(i);
    fifo.shift();
    expect(fifo.drain()).toEqual([2, 3, 4, 5]);
    expect([fifo.length, fifo.shift()]).toEqual([0, undefined]);
    expect(fifo.drain()).toEqual([]);
    fifo.push(6);
    expect(fifo.drain()).toEqual([6]);
  });

  // The head index moves and the array is compacted only past 1024 dead slots: order must survive that.
  test('keeps order on a long queue that is shifted and refilled across compactions', () => {
    const fifo = new Fifo<number>();
    const out: number[] = [];
    let next = 0;
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 3000; i++) fifo.push(next++);
      for (let i = 0; i < 2500; i++) out.push(fifo.shift()!);
    }
    out.push(...fifo.drain());
    expect(out).toEqual(Array.from({ length: next }, (_, i) => i));
  });

  test('behaves as an array used as a queue, for any sequence of operations (property)', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('push' as const), n: fc.nat(3000) }),
      fc.record({ kind: fc.constant('shift' as const), n: fc.nat(3000) }),
      fc.constant({ kind: 'drain' as const, n: 0 }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        const fifo = new Fifo<number>();
        const model: number[] = [];
        const got: unknown[] = []; // what the Fifo returned, and its length after each operation
        const want: unknown[] = []; // the same from the array model
        let value = 0;
        for (const { kind, n } of ops) {
          if (kind === 'push') {
            for (let i = 0; i < n; i++) {
              fifo.push(value);
              model.push(value++);
            }
          } else if (kind === 'shift') {
            for (let i = 0; i < n; i++) {
              got.push(fifo.shift());
              want.push(model.shift());
            }
          } else {
            got.push(fifo.drain());
            want.push(model.splice(0));
          }
          got.push(`length ${fifo.length}, head ${fifo.peek()}`);
          want.push(`length ${model.length}, head ${model[0]}`);
        }
        // Compared as JSON first: toEqual on ~10^5 items is slow; it still gives the diff on failure.
        if (JSON.stringify(got) !== JSON.stringify(want)) expect(got).toEqual(want);
      }),
      { numRuns: 100 },
    );
  });
});
