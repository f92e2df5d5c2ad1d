import { IdTable } from '../util/id-table.js';
import type { SmuxError } from './errors.js';
import { windowOverrunError } from './flow-control.js';
import type { StreamCore } from './stream-core.js';
import type { StreamRefusals } from './stream-refusals.js';
import type { WindowBudget } from './window-tuner.js';

/**
 * A session's registered streams by id — those this side opened and those the peer opened, each until both of its
 * ends are done — and the peer's frames routed to them. A frame for an id not registered goes to the refusals: its
 * data is dropped without returning tokens, as Go does, and a refused stream's FIN may have been waiting for it.
 */
export class SessionStreams {
  readonly #table = new IdTable<StreamCore>(); // not a Map: see id-table.ts
  readonly #refusals: StreamRefusals;
  readonly #windowBudget: WindowBudget | null;
  #peer = 0;
  #opened = 0;
  #accepted = 0;

  /**
   * @param refusals - where frames for unknown ids go
   * @param windowBudget - counts the data frames a v2 receiver's window tuning samples (null: no tuning)
   */
  constructor(refusals: StreamRefusals, windowBudget: WindowBudget | null) {
    this.#refusals = refusals;
    this.#windowBudget = windowBudget;
  }

  /** Registered streams. */
  get size(): number {
    return this.#table.size;
  }
  /** Of {@link size}, those the peer opened: what `maxStreams` bounds when the peer opens another. */
  get peer(): number {
    return this.#peer;
  }
  /** Of {@link size}, those this side opened: what `maxStreams` bounds when this side opens another. */
  get own(): number {
    return this.#table.size - this.#peer;
  }
  /** Streams this side has opened so far. */
  get opened(): number {
    return this.#opened;
  }
  /** Streams of the peer's accepted so far. */
  get accepted(): number {
    return this.#accepted;
  }

  has(id: number): boolean {
    return this.#table.has(id);
  }

  /** Registers a stream this side opened (before its SYN is queued: nothing the peer sends can find it missing). */
  addOwn(core: StreamCore): void {
    this.#table.set(core.id, core);
    this.#opened++;
  }

  /** Registers a stream the peer opened and this side accepted. */
  addPeer(core: StreamCore): void {
    this.#table.set(core.id, core);
    this.#peer++;
    this.#accepted++;
  }

  /** Unregisters `core` if it is the stream registered under its id (not one that reused it); true if it was. */
  remove(core: StreamCore): boolean {
    if (this.#table.get(core.id) !== core) return false;
    this.#table.delete(core.id);
    if (core.openedByPeer) this.#peer--;
    return true;
  }

  /** True if `test` holds for a registered stream. */
  some(test: (core: StreamCore) => boolean): boolean {
    return this.#table.some(test);
  }

  /** The registered streams (a copy: acting on one may unregister it). */
  values(): StreamCore[] {
    return this.#table.values();
  }

  /** Unregisters every stream (the session is destroyed) and returns them. */
  clear(): StreamCore[] {
    const all = this.#table.values();
    this.#table.clear();
    this.#peer = 0;
    return all;
  }

  /** The stream holding the most received data the application has not read, or null when none holds any. */
  mostUnread(): StreamCore | null {
    let most: StreamCore | null = null;
    for (const core of this.#table.values()) if (core.readableLength > (most?.readableLength ?? 0)) most = core;
    return most;
  }

  /**
   * v2, the receive budget (`budget` bytes) spent: the error that ends the session, or null to pause reading as for
   * any spent budget. A peer within its windows cannot spend it — the bucket charges a stream only for bytes beyond
   * its allowance, which covers every window we granted (flow-control.ts). Pausing would wedge the connection with
   * the budget pinned until that stream is read, and nothing would say why: the session ends instead, naming the
   * stream that went furthest past its grant. Not at the first byte past a grant: Go's own sender passes it when
   * goroutines write one stream at once (each reads the window before the others' frames count: up to one write per
   * extra goroutine, measured against Go 1.5.16, docs/NOTES.md). The budget absorbs that; only a peer whose excess
   * spends all of it is cut off, where it would otherwise have wedged the session — and only when one stream holds at
   * least half the budget past its grant: one hostile stream always does (growth reserves at most the other half),
   * while Go's concurrent writers overshoot by a few writes per stream (32 writers of 1 MiB reached 4 MiB once, so
   * not always), and a session whose excess is spread over streams pauses as before.
   */
  windowOverrun(budget: number): SmuxError | null {
    let worst: StreamCore | null = null;
    for (const core of this.#table.values()) if (core.overrun > (worst?.overrun ?? 0)) worst = core;
    return worst === null || worst.overrun < budget / 2 ? null : windowOverrunError(worst.id, worst.received, worst.granted, budget);
  }

  // ── the peer's frames for a stream ─────────────────────────────────────────────────────────────────────

  fin(id: number): void {
    const core = this.#table.get(id);
    if (core === undefined) return this.#refusals.unknownStream(id);
    core.releaseHold();
    core.handleFin();
  }

  data(id: number, data: Buffer): void {
    const core = this.#table.get(id);
    if (core === undefined) return this.#refusals.unknownStream(id); // dropped without tokens, as Go does
    if (this.#windowBudget !== null) this.#windowBudget.dataFrames++;
    core.releaseHold();
    core.handleData(data);
  }

  windowUpdate(id: number, consumed: number, window: number): void {
    const core = this.#table.get(id);
    if (core === undefined) return this.#refusals.unknownStream(id);
    core.releaseHold();
    core.handleWindowUpdate(consumed, window);
  }
}
