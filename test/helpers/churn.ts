import { getHeapSpaceStatistics } from 'node:v8';

/** An entry of the churn: its id, and a slot field for a SlotSet. */
export interface Churned {
  id: number;
  slot: number;
}

type Gc = (options?: { type: 'minor' | 'major' }) => void;

const oldSpaceUsed = (): number => getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')?.space_used_size ?? 0;

/**
 * The pattern that made a server slower for life (docs/NOTES.md): a burst of 20 000 entries kept across full GCs
 * (so the collection's storage is in the old generation), all removed, then 50 000 adds and removes with 64 live
 * entries of ≈ 1 KiB and a scavenge every 1 000. Returns how much the old generation grew meanwhile: ≈ 0 when what
 * was removed dies young, ≈ everything added when the collection's old storage keeps it alive.
 */
export function oldSpaceGrowthDuringChurn(
  gc: Gc,
  add: (id: number, value: Churned) => void,
  remove: (id: number, value: Churned) => void,
): number {
  const held: Churned[] = [];
  for (let id = 1; id <= 20_000; id++) {
    const value = { id, slot: -1 };
    held.push(value);
    add(id, value);
  }
  gc();
  gc();
  held.forEach((value, i) => remove(i + 1, value));
  held.length = 0;
  gc();
  const before = oldSpaceUsed();
  const live: Churned[] = [];
  for (let n = 0, id = 100_000; n < 50_000; n++, id += 2) {
    const value = { id, slot: -1, payload: new Array<number>(128).fill(id) };
    add(id, value);
    live.push(value);
    if (live.length > 64) remove(id - 128, live.shift()!);
    if (n % 1_000 === 999) gc({ type: 'minor' });
  }
  return oldSpaceUsed() - before;
}
