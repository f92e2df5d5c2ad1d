import { isIP } from 'node:net';
import { type Session, SmuxError } from '../smux/index.js';
import { AddressResolver, type ResolvedAddress } from './address-resolver.js';
import { Lane, roomiest, type SmuxConnectionInfo, twoChoices } from './client-lane.js';
import { Connector } from './connector.js';
import { formatAddress, type ResolvedClientOptions } from './options.js';
import type { SmuxStatus } from './smux.events.js';

/** What the client hears from its pool. `where` names the connection's address. */
export interface PoolListener {
  /** A connection is ready for calls. */
  ready(session: Session, where: string): void;
  /**
   * An attempt failed (or, with `dns`, a resolution found no address at all: `where` names the names); `retrying`:
   * it is retried in the background (false: the next call dials; connector.ts says when).
   */
  failed(error: Error, where: string, retrying: boolean): void;
  /** A session ended (the ready one, or one drained after a rotation); the calls on it fail through their own streams. */
  lost(session: Session, error: SmuxError | undefined, where: string): void;
  /** The client's status changed: connected while at least one connection is ready. */
  status(status: SmuxStatus): void;
  /** A resolution of `names` failed (for some of them), and the pool keeps the `kept` addresses it had. */
  resolveFailed(error: Error, names: string, kept: number): void;
  /** A resolution changed the addresses. */
  changed(added: string[], removed: string[]): void;
  /** A ping on a connection came back after `ms` (RTT metrics). */
  rtt(ms: number): void;
}

/**
 * The client's connections: one {@link Lane} per address (given, or resolved by DNS) and connection index.
 *
 * Each call goes to the ready lane with fewer calls in flight of two picked at random ("the power of two choices":
 * near the least-loaded lane's balance without a scan, and without the herd that always-the-least-loaded sends to
 * one fresh connection), among lanes with room under their server's `maxCallsPerConnection`. A lane whose
 * connection is lost leaves the ready list; with several lanes it is redialled after `reconnect.initialDelay` and
 * then backs off as a single connection does, while the others take the calls. A single lane behaves exactly as
 * the one connector did before pools: lazy redial, the same status stream, the same errors.
 */
export class ConnectorPool {
  readonly #options: ResolvedClientOptions;
  readonly #listener: PoolListener;
  readonly #resolver: AddressResolver | null;
  readonly #ready: Lane[] = []; // lanes taking calls
  #lanes: Lane[] = [];
  readonly #retiring = new Set<Lane>(); // lanes whose address is gone, finishing their calls
  #started = false; // connect() was called and close() was not since
  #lastFailure: Error | null = null;
  #resolveError: Error | null = null; // with dns, while no name resolved to anything
  #maxMessageBytes: number | undefined;

  /**
   * @param options - the client's resolved options
   * @param listener - told about connections, failures and the status
   */
  constructor(options: ResolvedClientOptions, listener: PoolListener) {
    this.#options = options;
    this.#listener = listener;
    const { dns, addresses, clock } = options;
    if (dns === null) {
      this.#resolver = null;
      this.#setAddresses(addresses.map((address) => ({ address, name: null })));
    } else {
      this.#resolver = new AddressResolver(addresses, dns, clock, (failures) => this.#backoff(failures), {
        resolved: (found, error) => this.#resolved(found, error),
      });
    }
  }

  /** True while at least one connection takes calls. */
  get hasReady(): boolean {
    return this.#ready.length > 0;
  }

  /** The smallest `maxMessageBytes` the servers said in their hellos, once one did. */
  get maxMessageBytes(): number | undefined {
    return this.#maxMessageBytes;
  }

  /** Calls the ready connections' servers allow at once, in all (Infinity when one of them did not say). */
  get capacity(): number {
    let sum = 0;
    for (const lane of this.#ready) sum += lane.maxCalls;
    return sum;
  }

  /**
   * Why there is no connection, if calls should fail fast: null while one is ready or an attempt that was not
   * preceded by a failure runs (the first one, the one after a loss) — those are waited for.
   */
  get lastError(): Error | null {
    if (this.#lanes.length === 0) return this.#resolveError;
    for (const lane of this.#lanes) if (lane.connector.lastError === null) return null;
    return this.#lastFailure;
  }

  /** The server(s), as messages show them. */
  get where(): string {
    if (this.#resolver !== null && this.#lanes.length === 0) return `${this.#resolver.where} (no address resolved yet)`;
    if (this.#lanes.length === 1) return this.#lanes[0].where;
    return `any of ${[...new Set(this.#lanes.map((lane) => lane.where))].join(', ')}`;
  }

  /** A session that takes calls, without choosing (for `unwrap()`), or null. */
  get anySession(): Session | null {
    return this.pick(false)?.session ?? null; // a ready lane may have rotated away from its session meanwhile
  }

  /** Pings a ready connection. */
  ping(timeoutMs: number): Promise<number> {
    const lane = this.pick(false);
    if (lane === null) return Promise.reject(new SmuxError('ERR_SMUX_UNAVAILABLE', `not connected to ${this.where}`, { retryable: true }));
    return lane.connector.ping(timeoutMs);
  }

  /** Calls are failing fast: every connection backing off tries again within a second of its last failure. */
  hurry(): void {
    for (const lane of this.#lanes) lane.connector.hurry();
  }

  /** Every connection, as plain snapshots. */
  get connections(): SmuxConnectionInfo[] {
    return this.#lanes.map((lane) => lane.info());
  }

  /**
   * The lane for a new call (or event: `forCall` false, no room needed), or null when none is ready. A lane
   * whose session ran out of stream ids rotates to a fresh one and leaves the choice until it is ready again.
   */
  pick(forCall: boolean): Lane | null {
    const ready = this.#ready;
    for (let tries = ready.length; tries > 0 && ready.length > 0; tries--) {
      const lane = ready.length === 1 ? ready[0] : twoChoices(ready);
      if (forCall && lane.callsInFlight >= lane.maxCalls) return roomiest(ready);
      const session = lane.session;
      if (session !== null && session.streamIdsLeft > 0) return lane;
      if (session !== null) lane.connector.rotate(); // the session goes on with its calls; new ones get a fresh one
      this.#unready(lane);
    }
    return null;
  }

  /** Dials every connection that is not up (a backoff wait is cut short); with `dns`, starts resolving. */
  connect(): void {
    this.#started = true;
    this.#resolver?.start();
    for (const lane of this.#lanes) this.#dial(lane);
  }

  /** A call on `lane` settled: a spent session it finished may close, and so may a retired lane. */
  settled(lane: Lane): void {
    lane.connector.retireIdle();
    if (lane.retired && lane.callsInFlight === 0) this.#closeRetired(lane);
  }

  /** Stops redialling and resolving and closes every connection gracefully (bounded). {@link connect} starts over. */
  async close(): Promise<void> {
    this.#started = false;
    this.#resolver?.stop();
    const lanes = [...this.#lanes, ...this.#retiring];
    this.#retiring.clear();
    for (const lane of lanes) this.#stopRedial(lane);
    await Promise.all(lanes.map((lane) => lane.connector.close()));
    if (lanes.length === 0) this.#listener.status('disconnected');
  }

  // ── lanes ──────────────────────────────────────────────────────────────────────────────────────────────

  #setAddresses(found: readonly ResolvedAddress[]): void {
    const wanted = new Map(found.map((entry) => [formatAddress(entry.address), entry]));
    const kept: Lane[] = [];
    const removed: string[] = [];
    for (const lane of this.#lanes) {
      if (wanted.has(lane.where)) kept.push(lane);
      else {
        if (lane.index === 0) removed.push(lane.where);
        this.#retire(lane);
      }
    }
    const have = new Set(kept.map((lane) => lane.where));
    const added: string[] = [];
    for (const [where, entry] of wanted) {
      if (have.has(where)) continue;
      added.push(where);
      for (let index = 0; index < this.#options.connectionsPerAddress; index++) {
        const lane = this.#lane(entry, where, index);
        kept.push(lane);
        if (this.#started) lane.connector.connect();
      }
    }
    this.#lanes = kept;
    if (added.length + removed.length > 0 && this.#resolver !== null) this.#listener.changed(added, removed);
    if (removed.length > 0) this.#publish();
  }

  #lane(entry: ResolvedAddress, where: string, index: number): Lane {
    const { tls } = this.#options;
    // A single address keeps the client's own options object; others get theirs. Connecting to an IP found for
    // a name, TLS must still check the certificate against the name (SNI too).
    const name = entry.name;
    const servername = tls !== undefined && tls.servername === undefined && name !== null && isIP(name) === 0 ? name : undefined;
    const options =
      entry.address === this.#options.address && servername === undefined
        ? this.#options
        : { ...this.#options, address: entry.address, tls: servername === undefined ? tls : { ...tls, servername } };
    return new Lane(where, index, (listener) => new Connector(options, listener), {
      ready: (lane, session) => this.#laneReady(lane, session),
      failed: (lane, error, retrying) => {
        if (lane.retired) return;
        this.#lastFailure = error;
        // With other connections a lost one is redialled in the background all the same (#laneLost): a host that
        // drained us to restart rejoins.
        this.#listener.failed(error, lane.where, retrying || this.#lanes.length >= 2);
      },
      lost: (lane, session, error) => this.#laneLost(lane, session, error),
      // Readiness follows the sessions (ready, lost, rotated), not the status: a rotating connector stays
      // `connected` while its old session serves its calls.
      status: (lane, status) => {
        if (lane.retired) return;
        lane.status = status;
        this.#publish();
      },
      rtt: (_lane, ms) => this.#listener.rtt(ms),
    });
  }

  #laneReady(lane: Lane, session: Session): void {
    if (lane.retired) return;
    const hello = lane.connector.hello;
    lane.maxCalls = hello?.maxCallsPerConnection ?? Infinity;
    let smallest: number | undefined;
    for (const other of this.#lanes) {
      const bytes = other.connector.hello?.maxMessageBytes;
      if (bytes !== undefined) smallest = Math.min(bytes, smallest ?? bytes);
    }
    this.#maxMessageBytes = smallest;
    this.#markReady(lane);
    this.#listener.ready(session, lane.where);
  }

  #laneLost(lane: Lane, session: Session, error: SmuxError | undefined): void {
    if (lane.retired) return;
    this.#listener.lost(session, error, lane.where);
    if (lane.session !== null) return; // a drained session of a lane that went on with a fresh one
    this.#unready(lane);
    this.#resolver?.refresh();
    // With others to carry the calls nothing would "need" this one again: redial it in the background (the
    // connector backs off from there). A single connection waits for the next call, as before pools.
    if (!this.#started || this.#lanes.length < 2 || lane.redial !== null) return;
    const { initialDelay, jitter } = this.#options.reconnect;
    const delay = Math.round(initialDelay * (1 + jitter * (2 * Math.random() - 1)));
    lane.redial = this.#options.clock.setTimeout(() => {
      lane.redial = null;
      if (this.#started && !lane.retired) lane.connector.connect();
    }, delay);
  }

  #dial(lane: Lane): void {
    this.#stopRedial(lane);
    lane.connector.connect();
  }

  #markReady(lane: Lane): void {
    if (lane.ready || lane.retired) return;
    lane.ready = true;
    this.#ready.push(lane);
  }

  #unready(lane: Lane): void {
    if (!lane.ready) return;
    lane.ready = false;
    const at = this.#ready.indexOf(lane);
    if (at >= 0) this.#ready.splice(at, 1);
  }

  #retire(lane: Lane): void {
    this.#unready(lane);
    this.#stopRedial(lane);
    lane.retired = true;
    if (lane.callsInFlight === 0) void lane.connector.close();
    else this.#retiring.add(lane);
  }

  #closeRetired(lane: Lane): void {
    this.#retiring.delete(lane);
    void lane.connector.close();
  }

  #stopRedial(lane: Lane): void {
    if (lane.redial !== null) this.#options.clock.clearTimeout(lane.redial);
    lane.redial = null;
  }

  /** The client's status: connected while one lane is; reconnecting while one tries again; else disconnected. */
  #publish(): void {
    let status: SmuxStatus = 'disconnected';
    for (const lane of this.#lanes) {
      if (lane.status === 'connected') return this.#listener.status('connected');
      if (lane.status === 'reconnecting') status = 'reconnecting';
    }
    this.#listener.status(status);
  }

  // ── dns ────────────────────────────────────────────────────────────────────────────────────────────────

  #resolved(found: ResolvedAddress[], error: Error | null): void {
    if (found.length > 0) {
      this.#resolveError = null;
      this.#setAddresses(found);
      if (error !== null) this.#listener.resolveFailed(error, this.#resolver!.where, found.length);
      return;
    }
    // Nothing resolved, now or before: like a failed attempt (calls fail fast with it as the cause).
    this.#resolveError = error;
    if (error !== null && this.#lanes.length === 0) {
      this.#listener.status('disconnected');
      this.#listener.failed(error, this.where, true);
    }
  }

  /** The reconnect backoff's delay after `failures` failures in a row (as each connector computes its own). */
  #backoff(failures: number): number {
    const { initialDelay, maxDelay, factor, jitter } = this.#options.reconnect;
    const base = Math.min(maxDelay, initialDelay * factor ** (failures - 1));
    return Math.max(0, Math.round(base * (1 + jitter * (2 * Math.random() - 1))));
  }
}
