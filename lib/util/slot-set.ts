/**
 * A set of objects kept in one array, each object holding its own index in a field the set is given (initially
 * -1): O(1) add, delete and has, no hashing, no order. An object is in at most one set per field.
 *
 * Why not a `Set`: a `Set` with calls coming and going is V8's `OrderedHashTable`, which links each outgrown
 * table to its successor; after one burst that chain keeps every later call alive across scavenges (see
 * id-table.ts). An array grown or trimmed here points to nothing newer.
 */
export class SlotSet<K extends string, T extends Record<K, number>> {
  readonly #items: T[] = [];
  readonly #slot: K;

  /** @param slot - the field of each object that holds its index here (-1 when not in the set) */
  constructor(slot: K) {
    this.#slot = slot;
  }

  /** Objects in the set. */
  get size(): number {
    return this.#items.length;
  }

  /** True when `item` is in this set. */
  has(item: T): boolean {
    const slot = item[this.#slot];
    return slot >= 0 && this.#items[slot] === item;
  }

  /** Adds `item` (nothing when it is in already). */
  add(item: T): void {
    if (this.has(item)) return;
    (item as Record<K, number>)[this.#slot] = this.#items.length;
    this.#items.push(item);
  }

  /** Removes `item`; false when it was not in the set. The last object takes its place. */
  delete(item: T): boolean {
    if (!this.has(item)) return false;
    const items = this.#items;
    const slot = item[this.#slot];
    const last = items.pop()!;
    if (last !== item) {
      items[slot] = last;
      (last as Record<K, number>)[this.#slot] = slot;
    }
    (item as Record<K, number>)[this.#slot] = -1;
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
    for (const item of this.#items) (item as Record<K, number>)[this.#slot] = -1;
    this.#items.length = 0;
  }
}
