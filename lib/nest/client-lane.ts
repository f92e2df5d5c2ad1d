import type { Session, TimerHandle } from '../smux/index.js';
import type { CallLane } from './admission.js';
import type { Connector, ConnectorListener } from './connector.js';
import type { SmuxStatus } from './smux.events.js';

/** A connection's state in {@link SmuxConnectionInfo} (the connector's; see the README's "Many hosts"). */
export type SmuxConnectionState = 'idle' | 'connecting' | 'ready' | 'backoff';

/** One connection of a {@link ClientSmux}, as `client.connections` shows it: a plain snapshot. */
export interface SmuxConnectionInfo {
  /** The server's address: `host:port` (with `dns`, a resolved IP address), or the unix socket path. */
  readonly address: string;
  /** Which of the address's `connectionsPerAddress` connections this is, from 0. */
  readonly index: number;
  /**
   * `ready`: takes calls; `connecting`: dialling or saying hello; `backoff`: the last attempt failed, the next one
   * follows after a delay; `idle`: not dialled yet, or lost and not redialled yet.
   */
  readonly state: SmuxConnectionState;
  /** Calls whose stream is open on this connection. */
  readonly callsInFlight: number;
  /**
   * Why the last attempt failed, until one succeeds; null otherwise — also after a drained connection's successor
   * failed before any call asked for it (the connection is then idle, and the next call dials). A `SmuxError`, or
   * Node's own error (`ECONNREFUSED`, `ETIMEDOUT`, a TLS error such as `ERR_TLS_CERT_ALTNAME_INVALID`): its `code`
   * is a string — absent only from an error that has none.
   */
  readonly lastError: (Error & { readonly code?: string }) | null;
  /** The last round-trip time measured on it (`client.ping()`, `pingInterval`), in ms; null before one. */
  readonly rtt: number | null;
}

/**
 * One connection of the client's pool — an address and a connection index — with its {@link Connector} (which
 * dials, says hello, backs off, rotates sessions) and the calls it carries ({@link CallLane}: admission counts
 * them in place, so a call costs the lane two integer updates and nothing else).
 */
export class Lane implements CallLane {
  /** Calls whose stream is open on this lane (counted by admission). */
  callsInFlight = 0;
  /** The server's `maxCallsPerConnection`, from the last hello (Infinity until one says). */
  maxCalls = Infinity;
  /** In the pool's ready list (its connector has a session that takes calls). */
  ready = false;
  /** The last status its connector published. */
  status: SmuxStatus = 'disconnected';
  /** Its address is gone from the resolver's answer: no new calls; it closes once its calls are done. */
  retired = false;
  /** The redial after a loss (pools of several connections only). */
  redial: TimerHandle | null = null;
  /** `host:port` or the path: the lane's identity in the pool, and how messages name it. */
  readonly where: string;
  /** Which of the address's connections this is, from 0. */
  readonly index: number;
  readonly connector: Connector;

  /**
   * @param where - the address as messages show it
   * @param index - the connection index
   * @param connect - makes the lane's connector, given the listener that reports to the lane's pool
   * @param listener - the pool's handlers, told which lane spoke
   */
  constructor(
    where: string,
    index: number,
    connect: (listener: ConnectorListener) => Connector,
    listener: { [K in keyof ConnectorListener]-?: (lane: Lane, ...args: Parameters<NonNullable<ConnectorListener[K]>>) => void },
  ) {
    this.where = where;
    this.index = index;
    this.connector = connect({
      ready: (session) => listener.ready(this, session),
      failed: (error, retrying) => listener.failed(this, error, retrying),
      lost: (session, error) => listener.lost(this, session, error),
      status: (status) => listener.status(this, status),
      rtt: (ms) => listener.rtt(this, ms),
    });
  }

  /** The session that takes its calls, or null. */
  get session(): Session | null {
    return this.connector.session;
  }

  /** A plain snapshot for `client.connections`. */
  info(): SmuxConnectionInfo {
    const { state, lastError, rtt } = this.connector;
    return { address: this.where, index: this.index, state, callsInFlight: this.callsInFlight, lastError, rtt };
  }
}

/** Of two distinct lanes picked at random, the one with fewer calls in flight. */
export function twoChoices(ready: readonly Lane[]): Lane {
  const n = ready.length;
  const i = Math.floor(Math.random() * n);
  let j = Math.floor(Math.random() * (n - 1));
  if (j >= i) j++;
  const a = ready[i];
  const b = ready[j];
  return b.callsInFlight < a.callsInFlight ? b : a;
}

/** Both choices are full: the least loaded lane that has room (a scan, on this rare path only), or null. */
export function roomiest(ready: readonly Lane[]): Lane | null {
  let best: Lane | null = null;
  for (const lane of ready) {
    const session = lane.session;
    if (lane.callsInFlight >= lane.maxCalls || session === null || session.streamIdsLeft === 0) continue;
    if (best === null || lane.callsInFlight < best.callsInFlight) best = lane;
  }
  return best;
}
