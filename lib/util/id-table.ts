/**
 * Values by uint32 id (a session's streams), in an open-addressing table of plain arrays: linear probing,
 * backward-shift deletion (no tombstones), grown at half full and shrunk below an eighth.
 *
 * Why not a `Map`: V8 links a `Map`'s outgrown or cleared hash table to its successor, and the old table keeps
 * its entries. Once one such table is in the old generation (a burst of streams kept it alive across two
 * scavenges), every later table, and every stream it holds, survives scavenges until a full GC — and the full
 * GCs that follow keep the chain going. Measured (docs/NOTES.md, "The Map that slowed a server for life"): a
 * server's CPU per 64 B call rose 4.3 → 6.9 µs after one burst of events and stayed there; a plain `Map` with
 * the same churn after a burst 1.5 × slower with 23 % of each scavenge surviving, for good. Replaced arrays here
 * are dropped whole and point to nothing newer, so nothing outlives its own table.
 */
export class IdTable<V> {
  #ids: Uint32Array;
  #values: Array<V | undefined>;
  #mask: number;
  #shift: number; // 32 − log2(capacity): the hash's top bits pick the slot
  #size = 0;
  // Random per table and XORed into each id before hashing: ids a peer chooses cannot be made to land in one
  // cluster on purpose, while the ids of one session (an arithmetic progression) keep the golden ratio's even
  // spread. A random multiplier alone (what this table used before) spreads them unevenly for some multipliers:
  // 1 table in 10 probed ≈ 3 × longer, 1 in 100 ≈ 11 × (docs/NOTES.md, "A stream table's hash").
  readonly #seed: number;
  readonly #multiplier: number;

  /**
   * @param capacity - initial slots, a power of two ≥ 8
   * @param seed - XORed into each id before it is hashed; random unless a test needs ids to collide
   * @param multiplier - the hash multiplier (odd); a test sets 1 so that an id's top bits are its slot
   */
  constructor(capacity = MIN_CAPACITY, seed = (Math.random() * 0x1_0000_0000) >>> 0, multiplier = GOLDEN_RATIO) {
    this.#seed = seed | 0;
    this.#multiplier = multiplier | 0;
    this.#ids = new Uint32Array(capacity);
    this.#values = new Array<V | undefined>(capacity).fill(undefined);
    this.#mask = capacity - 1;
    this.#shift = 32 - Math.log2(capacity);
  }

  /** Entries in the table. */
  get size(): number {
    return this.#size;
  }

  /** The value stored under `id`, or `undefined`. */
  get(id: number): V | undefined {
    const ids = this.#ids;
    const values = this.#values;
    for (let i = this.#home(id); ; i = (i + 1) & this.#mask) {
      const value = values[i];
      if (value === undefined || ids[i] === id) return value;
    }
  }

  /** True when `id` has a value. */
  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  /** Stores `value` (never `undefined`) under `id`, replacing any value there. */
  set(id: number, value: V): void {
    const ids = this.#ids;
    const values = this.#values;
    let i = this.#home(id);
    while (values[i] !== undefined && ids[i] !== id) i = (i + 1) & this.#mask;
    if (values[i] === undefined) this.#size++;
    ids[i] = id;
    values[i] = value;
    if (this.#size * 2 > values.length) this.#resize(values.length * 2);
  }

  /** Removes `id`'s value; false when there was none. */
  delete(id: number): boolean {
    const ids = this.#ids;
    const values = this.#values;
    const mask = this.#mask;
    let hole = this.#home(id);
    for (; ; hole = (hole + 1) & mask) {
      if (values[hole] === undefined) return false;
      if (ids[hole] === id) break;
    }
    values[hole] = undefined;
    this.#size--;
    // Backward shift: an entry after the hole moves into it unless its home lies cyclically in (hole, j].
    for (let j = (hole + 1) & mask; values[j] !== undefined; j = (j + 1) & mask) {
      const home = this.#home(ids[j]);
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      ids[hole] = ids[j]!;
      values[hole] = values[j];
      values[j] = undefined;
      hole = j;
    }
    if (values.length > MIN_CAPACITY && this.#size * 8 < values.length) this.#resize(values.length / 2);
    return true;
  }

  /** The values, as a new array in no particular order (safe to change the table while walking it). */
  values(): V[] {
    const out: V[] = [];
    for (const value of this.#values) if (value !== undefined) out.push(value);
    return out;
  }

  /** True when `test` holds for some value (no array is made). */
  some(test: (value: V) => boolean): boolean {
    for (const value of this.#values) if (value !== undefined && test(value)) return true;
    return false;
  }

  /** The longest run of occupied slots (what a lookup may have to walk); for tests of the hash's spread. */
  longestRun(): number {
    const values = this.#values;
    let longest = 0;
    let run = 0;
    // Twice around, so that a run wrapping from the last slot to the first is counted whole.
    for (let i = 0; i < 2 * values.length && run < values.length; i++) {
      run = values[i & this.#mask] === undefined ? 0 : run + 1;
      if (run > longest) longest = run;
    }
    return longest;
  }

  /** Removes every entry (back to the smallest table). */
  clear(): void {
    this.#values.fill(undefined); // the old arrays may sit in the old generation: they must not hold values
    this.#ids = new Uint32Array(MIN_CAPACITY);
    this.#values = new Array<V | undefined>(MIN_CAPACITY).fill(undefined);
    this.#mask = MIN_CAPACITY - 1;
    this.#shift = 32 - Math.log2(MIN_CAPACITY);
    this.#size = 0;
  }

  #home(id: number): number {
    return Math.imul(id ^ this.#seed, this.#multiplier) >>> this.#shift;
  }

  #resize(capacity: number): void {
    const ids = this.#ids;
    const values = this.#values;
    this.#ids = new Uint32Array(capacity);
    this.#values = new Array<V | undefined>(capacity).fill(undefined);
    this.#mask = capacity - 1;
    this.#shift = 32 - Math.log2(capacity);
    this.#size = 0;
    for (let i = 0; i < values.length; i++) {
      const value = values[i];
      if (value !== undefined) this.set(ids[i], value);
    }
    values.fill(undefined); // as in clear(): a dropped array in the old generation would pin what it held
  }
}

const MIN_CAPACITY = 16;
/** 2^32 ÷ φ, odd: consecutive keys land as far apart as they can (Knuth's multiplicative hashing). */
const GOLDEN_RATIO = 0x9e3779b1;
