/**
 * IdTable: the session's streams by id. A model-based property test against `Map`, and the reason it exists —
 * after a burst, entries it no longer holds must not outlive a scavenge (a `Map` keeps them: see id-table.ts).
 * `--expose-gc` is turned on at run time (v8 flags) so that Jest needs no option.
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { IdTable } from '../../lib/util/id-table.js';
import { type Churned, oldSpaceGrowthDuringChurn } from '../helpers/churn.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as (options?: { type: 'minor' | 'major' }) => void;

type Op = { op: 'set'; id: number } | { op: 'delete'; id: number } | { op: 'clear' };

describe('IdTable', () => {
  test('stores, finds, replaces and removes values by id', () => {
    const table = new IdTable<string>();
    table.set(1, 'a');
    table.set(3, 'b');
    table.set(0, 'zero'); // every uint32 is an id, 0 and 2^32 − 1 included
    table.set(0xffffffff, 'max');
    table.set(3, 'B');
    expect([table.size, table.get(1), table.get(3), table.get(0), table.get(0xffffffff), table.get(5)]).toEqual([
      4,
      'a',
      'B',
      'zero',
      'max',
      undefined,
    ]);
    expect([table.has(3), table.has(5)]).toEqual([true, false]);
    expect([table.delete(3), table.delete(3), table.size, table.get(3)]).toEqual([true, false, 3, undefined]);
    expect(table.values().sort()).toEqual(['a', 'max', 'zero']);
    expect([table.some((v) => v === 'a'), table.some((v) => v === 'B')]).toEqual([true, false]);
    table.clear();
    expect([table.size, table.get(1), table.values()]).toEqual([0, undefined, []]);
    table.set(7, 'again');
    expect(table.get(7)).toBe('again');
  });

  test('grows past its first slots and shrinks back, keeping every value', () => {
    const table = new IdTable<number>();
    for (let id = 1; id < 20_000; id += 2) table.set(id, id);
    expect(table.size).toBe(10_000);
    for (let id = 1; id < 20_000; id += 2) expect(table.get(id)).toBe(id);
    for (let id = 1; id < 19_990; id += 2) table.delete(id);
    expect(table.values().sort((a, b) => a - b)).toEqual([19_991, 19_993, 19_995, 19_997, 19_999]);
  });

  test('walking values() while removing them sees each value once', () => {
    const table = new IdTable<number>();
    for (let id = 0; id < 100; id++) table.set(id * 7919, id);
    const seen: number[] = [];
    for (const value of table.values()) {
      seen.push(value);
      table.delete(value * 7919);
    }
    expect([seen.length, new Set(seen).size, table.size]).toEqual([100, 100, 0]);
  });

  test('behaves as a Map under any sequence of sets, deletes and clears (clustered and spread ids)', () => {
    const id = fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 0xffffffff }));
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 6, arbitrary: id.map((i) => ({ op: 'set' as const, id: i })) },
      { weight: 5, arbitrary: id.map((i) => ({ op: 'delete' as const, id: i })) },
      { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), fc.array(id, { maxLength: 40 }), (ops, probes) => {
        const table = new IdTable<number>();
        const model = new Map<number, number>();
        ops.forEach((o, n) => {
          if (o.op === 'set') {
            table.set(o.id, n);
            model.set(o.id, n);
          } else if (o.op === 'delete') {
            expect(table.delete(o.id)).toBe(model.delete(o.id));
          } else {
            table.clear();
            model.clear();
          }
          expect(table.size).toBe(model.size);
        });
        for (const [key, value] of model) expect(table.get(key)).toBe(value);
        for (const key of probes) expect(table.get(key)).toBe(model.get(key));
        expect(table.values().sort((a, b) => a - b)).toEqual([...model.values()].sort((a, b) => a - b));
      }),
      { numRuns: 300 },
    );
  });

  test('clusters that wrap around the end of the table: long churn against a Map, every live id found', () => {
    // Multiplier 1: an id's top bits are its slot, so ids near 2^32 all start in the last slot and their run
    // wraps to the first, where small ids start too — the backward shift's wrap-around case on every delete.
    const table = new IdTable<number>(16, 0, 1);
    const model = new Map<number, number>();
    const ids = [...Array.from({ length: 12 }, (_, i) => 0xfffffff0 + i), ...Array.from({ length: 12 }, (_, i) => i)];
    const random = fc.sample(fc.tuple(fc.integer({ min: 0, max: ids.length - 1 }), fc.boolean()), { numRuns: 100_000, seed: 11 });
    random.forEach(([k, add], n) => {
      const id = ids[k];
      if (add) {
        table.set(id, n);
        model.set(id, n);
      } else expect(table.delete(id)).toBe(model.delete(id));
      if (n % 1_000 === 0) for (const probe of ids) expect(table.get(probe)).toBe(model.get(probe));
    });
    for (const probe of ids) expect(table.get(probe)).toBe(model.get(probe));
    expect(table.size).toBe(model.size);
  });

  test("a session's ids (every other id, in order) stay spread out whatever the table's random seed", () => {
    // A session opens streams 1, 3, 5, … (or 2, 4, …) and closes them in about that order: the live ids are a
    // sliding window of an arithmetic progression. With a random multiplier alone, 1 table in 100 put such a
    // window into one run of occupied slots (every lookup and delete walking all of it); XORing a random seed
    // into the golden-ratio hash keeps the longest run at ≤ 8 slots (64 or 512 live ids, any seed).
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 0x7fffffff }),
        fc.constantFrom(64, 512),
        (seed, first, live) => {
          const table = new IdTable<number>(undefined, seed);
          let newest = first * 2 + 1;
          let oldest = newest;
          for (let i = 0; i < live; i++, newest += 2) table.set(newest >>> 0, i);
          let longest = table.longestRun();
          for (let i = 0; i < live; i++, newest += 2, oldest += 2) {
            table.delete(oldest >>> 0);
            table.set(newest >>> 0, i);
            longest = Math.max(longest, table.longestRun());
          }
          expect(table.size).toBe(live);
          expect(longest).toBeLessThanOrEqual(12);
        },
      ),
      { numRuns: 200, seed: 7 },
    );
  });

  test('longestRun counts a run that wraps from the last slot to the first whole', () => {
    const table = new IdTable<number>(16, 0, 1); // multiplier 1: an id's top 4 bits are its slot
    for (const id of [0xf0000000, 0xf0000001, 0xf0000002, 0x00000000, 0x10000000]) table.set(id, 1);
    expect(table.longestRun()).toBe(5); // slots 15, 0, 1, 2, 3 (the last three probed on from slots 15, 0, 1)
  });

  test('after a burst, values it no longer holds do not survive scavenges (a Map keeps them to the next full GC)', () => {
    const growth = (table: { set(id: number, v: Churned): void; delete(id: number): unknown }): number =>
      oldSpaceGrowthDuringChurn(
        gc,
        (id, value) => table.set(id, value),
        (id) => table.delete(id),
      );
    const idTable = growth(new IdTable<Churned>()); // first: the control's promotions would count in its figure
    const map = growth(new Map<number, Churned>());
    // The control shows the test can fail: the Map's chain of outgrown tables promotes ≈ every value it held
    // (≈ 50 MB of ≈ 1 KiB values; measured 15–50 MiB).
    expect(idTable).toBeLessThan(2 * 1024 * 1024);
    expect(map).toBeGreaterThan(8 * 1024 * 1024);
  });
});
