import { type Clock, SmuxError, type TimerHandle } from '../smux/index.js';
import { closeWithin } from './dial.js';
import { HELLO_TIMEOUT } from './hello.js';
import type { ServerConnection } from './server-connection.js';
import { callsInFlight, eventsInFlight, failCallsInFlight, failEventsInFlight } from './smux-connection.js';

/** What a drain did: the connections it closed and the calls it had to end. */
export interface DrainSummary {
  readonly connections: number;
  /** Calls still running at `closeTimeout`, ended with ERR_SMUX_SHUTTING_DOWN. */
  readonly ended: number;
  /** The server's own calls (`connection.send()`, `server.client`) in flight at `closeTimeout`, failed with ERR_SMUX_SHUTTING_DOWN. */
  readonly cancelled: number;
  /** The server's own events (`connection.emit()`) not sent yet at `closeTimeout`, failed with ERR_SMUX_SHUTTING_DOWN. */
  readonly unsent: number;
  /**
   * Connections closed while not read, their event handlers at `maxEventsPerConnection` or `maxPendingRequestBytes`:
   * whatever their clients sent since stayed in the socket, and the events among it were dropped. How many is unknown:
   * those bytes were never read (the close reads on only to refuse what comes, until the socket is destroyed).
   */
  readonly unread: number;
}

/** How often connections are checked (requests arriving too slowly, callers that stopped reading). */
const SWEEP_INTERVAL = 1_000;

/** How often a close looks again at calls that tell it nothing when they end (a dialling server's `server.client`). */
const OWN_CALLS_CHECK_MS = 100;

/**
 * Calls a server makes that no connection counts: a dialling server's own (`server.client`). Its close waits for them
 * within `closeTimeout` like for the others, then fails them.
 */
export interface OwnCalls {
  callsInFlight(): number;
  /** @returns how many were in flight */
  failCalls(error: SmuxError): number;
}

/**
 * The open connections of a {@link ServerSmux}: the slots policy (at most `maxConnections`, and
 * `maxConnectionsPerAddress` from one address; when full, the connection idle longest makes room), the periodic
 * sweep of each connection's budgets and deadlines, and the graceful drain that ends them all.
 */
export class ServerConnections {
  readonly #clock: Clock;
  readonly #open = new Set<ServerConnection>();
  readonly #perAddress = new Map<string, number>(); // admitted connections by address
  #admitted = 0;
  #refused = 0; // open, refused at accept: they only wait to tell their client, then hang up
  #settledWaiter: (() => void) | null = null;
  #sweep: TimerHandle | null = null;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Connections admitted and open (one refused, waiting to hang up, takes no slot). */
  get size(): number {
    return this.#admitted;
  }

  /** Connections refused at accept still open (to answer their first stream with the refusal). */
  get refusedOpen(): number {
    return this.#refused;
  }

  /** Connections admitted and open from `address`. */
  from(address: string): number {
    return this.#perAddress.get(address) ?? 0;
  }

  /**
   * Makes room for a new connection, among those from `address` when given: the connection silent longest — it opened
   * no stream (no hello, no call) for {@link HELLO_TIMEOUT}, or `idleMs` when less — else the connection idle longest
   * (no call for `idleMs`) is evicted. A silent one goes first: no ClientSmux still waits on it, and otherwise a peer
   * that opens sockets and says nothing held every slot for `idleMs`. @returns false when none qualifies (the new
   * connection is then refused); `idleMs` 0: never.
   */
  evictIdle(idleMs: number, address?: string): boolean {
    if (idleMs === 0) return false;
    const now = this.#clock.now();
    const silentMs = Math.min(idleMs, HELLO_TIMEOUT);
    let silentest: ServerConnection | null = null;
    let idlest: ServerConnection | null = null;
    for (const connection of this.#open) {
      if ((address !== undefined && connection.address !== address) || !admitted(connection)) continue;
      if (connection.silentFor(silentMs, now)) {
        if (silentest === null || connection.lastCallAt < silentest.lastCallAt) silentest = connection;
      } else if (connection.idleFor(idleMs, now) && (idlest === null || connection.lastCallAt < idlest.lastCallAt)) {
        idlest = connection;
      }
    }
    const evicted = silentest ?? idlest;
    if (evicted === null) return false;
    this.delete(evicted); // its slot is free now; it closes in the background
    evicted.evict();
    return true;
  }

  add(connection: ServerConnection): void {
    this.#open.add(connection);
    this.#sweep ??= this.#clock.setTimeout(() => this.#sweepAll(), SWEEP_INTERVAL);
    if (!admitted(connection)) return void this.#refused++;
    this.#admitted++;
    this.#perAddress.set(connection.address, this.from(connection.address) + 1);
  }

  delete(connection: ServerConnection): void {
    if (!this.#open.delete(connection)) return;
    this.#settledWaiter?.(); // a drain waiting for clients to leave looks again
    if (!admitted(connection)) return void this.#refused--;
    this.#admitted--;
    const left = this.from(connection.address) - 1;
    if (left > 0) this.#perAddress.set(connection.address, left);
    else this.#perAddress.delete(connection.address);
  }

  /** Stops the sweep (the server is closed). */
  stop(): void {
    if (this.#sweep !== null) this.#clock.clearTimeout(this.#sweep);
    this.#sweep = null;
  }

  #sweepAll(): void {
    this.#sweep = null;
    const now = this.#clock.now();
    for (const connection of this.#open) connection.sweep(now);
    if (this.#open.size > 0) this.#sweep = this.#clock.setTimeout(() => this.#sweepAll(), SWEEP_INTERVAL);
  }

  /** Tells every client that reads DRAIN to move its new calls to a fresh connection (the server is closing). */
  announceDrain(reason: string): void {
    for (const connection of this.#open) connection.announceDrain(reason);
  }

  /** A call stopped running: a drain waiting for the running calls looks again. */
  callSettled(): void {
    this.#settledWaiter?.();
  }

  /** Connections whose clients were told to leave (DRAIN) and have not closed yet. */
  #leaving(): number {
    let leaving = 0;
    for (const connection of this.#open) if (connection.leavesByItself) leaving++;
    return leaving;
  }

  /**
   * Calls running on every connection (answered calls waiting for the caller's FIN are not counted), and the calls and
   * events the server itself made to its peers over them: work in progress too, which a handler still running may be
   * waiting on.
   */
  get runningCalls(): number {
    let running = 0;
    for (const connection of this.#open) running += connection.runningCalls + ownCallsOn(connection);
    return running;
  }

  /**
   * Lets running calls — and the server's own calls and events to its peers — finish within `closeTimeout` ms, ends the
   * rest (and requests still arriving) with the retryable ERR_SMUX_SHUTTING_DOWN, then closes every connection (each
   * within 2 s).
   */
  async drain(closeTimeout: number, own: OwnCalls | null = null): Promise<DrainSummary> {
    const clock = this.#clock;
    const deadline = clock.now() + closeTimeout;
    const connections = this.#open.size; // those open when the close began (drained clients may leave by themselves)
    // Clients that read DRAIN close their connections themselves once their calls are done: waiting for that (within
    // the same bound) means a call they opened before DRAIN reached them is answered (ERR_SMUX_SHUTTING_DOWN,
    // retryable), never cut off by our close as if it had been in flight.
    while (clock.now() < deadline) {
      const ownRunning = (own?.callsInFlight() ?? 0) > 0; // they tell no one when they end: looked at again shortly
      if (!ownRunning && this.runningCalls === 0 && this.#leaving() === 0) break;
      await this.#settledOr(Math.min(deadline, ownRunning ? clock.now() + OWN_CALLS_CHECK_MS : deadline));
    }
    let ended = 0;
    let unread = 0;
    const shuttingDown = new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'the server is shutting down');
    let cancelled = own?.failCalls(shuttingDown) ?? 0;
    let unsent = 0;
    for (const connection of this.#open) {
      if (connection.events.held) unread++;
      // Ours fail with our reason, not with the connection's close (ERR_SMUX_SESSION_CLOSED, as if the peer had died).
      if (connection.face !== null) {
        cancelled += failCallsInFlight(connection.face, shuttingDown);
        unsent += failEventsInFlight(connection.face, shuttingDown);
      }
      for (const call of connection.calls.toArray()) {
        if (call.running) ended++;
        call.shutdown();
      }
    }
    await Promise.all([...this.#open].map((c) => closeWithin(c.session, clock, 2_000)));
    return { connections, ended, cancelled, unsent, unread };
  }

  /** Resolves when a call settles or a connection goes ({@link callSettled}), or at `until` on the clock. */
  #settledOr(until: number): Promise<void> {
    const clock = this.#clock;
    return new Promise<void>((resolve) => {
      const timer = clock.setTimeout(
        () => {
          this.#settledWaiter = null;
          resolve();
        },
        Math.max(0, until - clock.now()),
      );
      this.#settledWaiter = () => {
        this.#settledWaiter = null;
        clock.clearTimeout(timer);
        resolve();
      };
    });
  }
}

/**
 * The server's close line: the connections closed, the calls that had to be ended, and — when some connection was
 * not being read (events are at most once: backpressure keeps them waiting in the socket, a close drops them) — that
 * the events still unread in its socket were dropped, with no count: we never read them.
 */
export function closeLine({ connections, ended, cancelled, unsent, unread }: DrainSummary): string {
  const cut: string[] = [];
  if (ended > 0) cut.push(`${calls(ended)} still running ${ended === 1 ? 'was' : 'were'} ended with ERR_SMUX_SHUTTING_DOWN`);
  if (cancelled > 0) {
    cut.push(
      `${calls(cancelled)} this server made itself (connection.send(), server.client) ${cancelled === 1 ? 'was' : 'were'} still ` +
        'running and failed with ERR_SMUX_SHUTTING_DOWN',
    );
  }
  if (unsent > 0) {
    cut.push(
      `${unsent} event${unsent === 1 ? '' : 's'} this server emitted itself (connection.emit()) ${unsent === 1 ? 'was' : 'were'} ` +
        'not sent yet and failed with ERR_SMUX_SHUTTING_DOWN',
    );
  }
  const how = cut.length === 0 ? 'every call finished' : cut.join('; ');
  let line = `Closed ${connections} connection${connections === 1 ? '' : 's'}: ${how}`;
  if (unread > 0) {
    const which = connections === 1 ? 'it was' : unread === 1 ? '1 of them was' : `${unread} of them were`;
    line +=
      `; ${which} not being read (event handlers at maxEventsPerConnection or maxPendingRequestBytes): events still ` +
      `unread in ${unread === 1 ? 'its socket' : 'their sockets'} were dropped (how many is unknown: they were never read)`;
  }
  return line;
}

/** Calls the server made to the peer of `connection` (`connection.send()` …) whose stream is open, and its events not settled. */
function ownCallsOn(connection: ServerConnection): number {
  return connection.face === null ? 0 : callsInFlight(connection.face) + eventsInFlight(connection.face);
}

const calls = (n: number): string => `${n} call${n === 1 ? '' : 's'}`;

/** Whether a connection holds a slot: one refused at accept (over a limit) is open only to say so, then hangs up. */
function admitted(connection: ServerConnection): boolean {
  return connection.face !== null;
}
