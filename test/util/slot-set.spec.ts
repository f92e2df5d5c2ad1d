/**
 * SlotSet: the server's sets of calls. A model-based property test against `Set`, and the reason it exists —
 * after a burst, objects it no longer holds must not outlive a scavenge (a `Set` keeps them: see id-table.ts).
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type SlotField, SlotSet } from '../../lib/util/slot-set.js';
import { type Churned, oldSpaceGrowthDuringChurn } from '../helpers/churn.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as (options?: { type: 'minor' | 'major' }) => void;

interface Item {
  name: number;
  slot: number;
  other: number;
}
const item = (name: number): Item => ({ name, slot: -1, other: -1 });
const slotField: SlotField<Item> = { get: (x) => x.slot, set: (x, s) => (x.slot = s) };
const otherField: SlotField<Item> = { get: (x) => x.other, set: (x, s) => (x.other = s) };

describe('SlotSet', () => {
  test('adds once, finds, removes (the last object takes the slot) and clears', () => {
    const set = new SlotSet<Item>(slotField);
    const [a, b, c] = [item(1), item(2), item(3)];
    set.add(a);
    set.add(b);
    set.add(c);
    set.add(a); // already in
    expect([set.size, set.has(a), a.slot, b.slot, c.slot]).toEqual([3, true, 0, 1, 2]);
    expect([set.delete(a), set.delete(a), set.size, set.has(a), a.slot, c.slot]).toEqual([true, false, 2, false, -1, 0]);
    expect(set.toArray()).toEqual([c, b]);
    set.clear();
    expect([set.size, set.has(b), b.slot, c.slot]).toEqual([0, false, -1, -1]);
  });

  test('an object can be in two sets that use different fields; a set never mistakes another one’s index', () => {
    const first = new SlotSet<Item>(slotField);
    const second = new SlotSet<Item>(otherField);
    const other = new SlotSet<Item>(slotField);
    const [a, b] = [item(1), item(2)];
    first.add(a);
    second.add(a);
    other.add(b); // b.slot 0, as a's slot in `first`
    expect([first.has(a), second.has(a), first.has(b), second.delete(b), first.size, second.size]).toEqual([
      true,
      true,
      false,
      false,
      1,
      1,
    ]);
  });

  test('toArray() is a copy: removing while walking it sees each object once', () => {
    const set = new SlotSet<Item>(slotField);
    for (let n = 0; n < 50; n++) set.add(item(n));
    const seen: number[] = [];
    for (const x of set.toArray()) {
      seen.push(x.name);
      set.delete(x);
    }
    expect([seen.length, new Set(seen).size, set.size]).toEqual([50, 50, 0]);
  });

  test('behaves as a Set under any sequence of adds, deletes and clears', () => {
    type Op = { op: 'add' | 'delete'; n: number } | { op: 'clear' };
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: 30 }).map((n) => ({ op: 'add' as const, n })) },
      { weight: 5, arbitrary: fc.integer({ min: 0, max: 30 }).map((n) => ({ op: 'delete' as const, n })) },
      { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const items = Array.from({ length: 31 }, (_, n) => item(n));
        const set = new SlotSet<Item>(slotField);
        const model = new Set<Item>();
        for (const o of ops) {
          if (o.op === 'add') {
            set.add(items[o.n]);
            model.add(items[o.n]);
          } else if (o.op === 'delete') {
            expect(set.delete(items[o.n])).toBe(model.delete(items[o.n]));
          } else {
            set.clear();
            model.clear();
          }
          expect(set.size).toBe(model.size);
        }
        for (const x of items) expect(set.has(x)).toBe(model.has(x));
        const walked: Item[] = [];
        set.forEach((x) => walked.push(x));
        expect(new Set(walked)).toEqual(model);
        expect(new Set(set.toArray())).toEqual(model);
      }),
      { numRuns: 300 },
    );
  });

  test('after a burst, objects it no longer holds do not survive scavenges (a Set keeps them to the next full GC)', () => {
    const slotSet = new SlotSet<Churned>({ get: (c) => c.slot, set: (c, s) => (c.slot = s) }); // first: the control's promotions would count in its figure
    const slotted = oldSpaceGrowthDuringChurn(
      gc,
      (_, v) => slotSet.add(v),
      (_, v) => slotSet.delete(v),
    );
    const nativeSet = new Set<Churned>();
    const native = oldSpaceGrowthDuringChurn(
      gc,
      (_, v) => nativeSet.add(v),
      (_, v) => nativeSet.delete(v),
    );
    expect(slotted).toBeLessThan(2 * 1024 * 1024);
    expect(native).toBeGreaterThan(8 * 1024 * 1024); // the control: the test can fail
  });
});
