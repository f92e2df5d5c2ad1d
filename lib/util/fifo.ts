/**
 * An array-backed first-in-first-out queue with O(1) `shift`: the head index moves and the array is
 * compacted only when the dead prefix is large (Array#shift is O(n) on long queues).
 */
export class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  /** Items in the queue. */
  get length(): number {
    return this.#items.length - this.#head;
  }

  /** Appends an item. */
  push(item: T): void {
    this.#items.push(item);
  }

  /** The oldest item, left in the queue, or `undefined` when empty. */
  peek(): T | undefined {
    return this.#items[this.#head];
  }

  /** Removes and returns the oldest item, or `undefined` when empty. */
  shift(): T | undefined {
    const items = this.#items;
    if (this.#head >= items.length) return undefined;
    const item = items[this.#head];
    items[this.#head++] = undefined;
    if (this.#head === items.length) {
      items.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= items.length) {
      items.splice(0, this.#head);
      this.#head = 0;
    }
    return item;
  }

  /** Removes every item and returns them, oldest first. */
  drain(): T[] {
    const rest = this.#items.slice(this.#head) as T[];
    this.#items = [];
    this.#head = 0;
    return rest;
  }
}
