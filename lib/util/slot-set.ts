/**
 * Reads and writes the field of an object that holds its index in one {@link SlotSet} (-1 when not in it).
 * Each set gets accessors of its own, written out at the set's creation (`{ get: (c) => c.finSlot, set: (c, s) =>
 * { c.finSlot = s; } }`): a set reading `item[name]` by a field name it was given made that load megamorphic
 * across the sets, ≈ 20 ns per add + has + delete more (docs/NOTES.md).
 */
export interface SlotField<T> {
  get(item: T): number;
  set(item: T, slot: number): void;
}

/**
 * A set of objects kept in one array, each object holding its own index in a field the set is given (initially
 * -1): O(1) add, delete and has, no hashing, no order. An object is in at most one set per field.
 *
 * Why not a `Set`: a `Set` with calls coming and going is V8's `OrderedHashTable`, which links each outgrown
 * table to its successor; after one burst that chain keeps every later call alive across scavenges (see
 * id-table.ts). An array grown or trimmed here points to nothing newer.
 */
export class SlotSet<T> {
  readonly #items: T[] = [];
  readonly #slot: SlotField<T>;

  /** @param slot - the field of each object that holds its index here (-1 when not in the set) */
  constructor(slot: SlotField<T>) {
    this.#slot = slot;
  }

  /** Objects in the set. */
  get size(): number {
    return this.#items.length;
  }

  /** True when `item` is in this set. */
  has(item: T): boolean {
    const slot = this.#slot.get(item);
    return slot >= 0 && this.#items[slot] === item;
  }

  /** Adds `item` (nothing when it is in already). */
  add(item: T): void {
    if (this.has(item)) return;
    this.#slot.set(item, this.#items.length);
    this.#items.push(item);
  }

  /** Removes `item`; false when it was not in the set. The last object takes its place. */
  delete(item: T): boolean {
    if (!this.has(item)) return false;
    const items = this.#items;
    const field = this.#slot;
    const slot = field.get(item);
    const last = items.pop()!;
    if (last !== item) {
      items[slot] = last;
      field.set(last, slot);
    }
    field.set(item, -1);
    return true;
  }

  /** The objects, as a new array (safe to change the set while walking it). */
  toArray(): T[] {
    return this.#items.slice();
  }

  /** Walks the objects without copying them; `visit` must not add or remove any. */
  forEach(visit: (item: T) => void): void {
    for (const item of this.#items) visit(item);
  }

  /** Removes every object. */
  clear(): void {
    for (const item of this.#items) this.#slot.set(item, -1);
    this.#items.length = 0;
  }
}
