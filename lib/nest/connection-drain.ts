import type { Session, TimerHandle } from '../smux/index.js';
import type { ControlLink } from './control-link.js';
import { closeWithin } from './dial.js';
import { HELLO_TIMEOUT } from './hello.js';
import type { ConnectionHost } from './server-connection-host.js';

/** What a {@link ConnectionDrain} needs of its connection. */
export interface DrainedConnection {
  /** `address:port` of the client, for the log lines. */
  readonly remote: string;
  /** The connection's smux session (closed once it is idle, or its grace is over). */
  readonly session: Session;
  /** Calls counted on the connection (answered ones waiting for their FIN, and handlers still running, included). */
  readonly callCount: number;
  /** Ends the calls still running with ERR_SMUX_SHUTTING_DOWN (`why`). */
  shutdownCalls(why: string): void;
  /** The control link of the peer's hello (its PING, PONG and DRAIN), or null before it. */
  helloLink(): ControlLink | null;
}

/*
 * How one accepted connection leaves: ACTIVE ──maxConnectionAge, or the server's close()──▶ DRAINED. DRAIN goes to a
 * client that reads it (it opens a fresh connection for new calls and closes this one when its calls are done); a
 * client that cannot read it (an older one, a Go caller of protocol 1), or whose hello did not come within
 * HELLO_TIMEOUT, is closed once no call runs (DRAINED ──▶ CLOSE_WHEN_IDLE); a hello still on its way decides which
 * when it comes. With `maxConnectionAgeGrace`, what still runs when the grace is over ends with
 * ERR_SMUX_SHUTTING_DOWN and the connection closes. Every connection has one; only an accepted, admitted one ages.
 */
const ACTIVE = 0;
const DRAINED = 1;
const CLOSE_WHEN_IDLE = 2;

/** A connection's `maxConnectionAge`, its grace, and DRAIN (ServerConnection's leaving, one per connection). */
export class ConnectionDrain {
  readonly #connection: DrainedConnection;
  readonly #host: ConnectionHost;
  #state = ACTIVE;
  #reason = '';
  #helloWait: TimerHandle | null = null; // drained before the hello: how long a hello may still take
  #timer: TimerHandle | null = null; // maxConnectionAge, then its grace

  constructor(connection: DrainedConnection, host: ConnectionHost) {
    this.#connection = connection;
    this.#host = host;
  }

  /** Starts the `maxConnectionAge` timer (an accepted connection's, not refused). */
  startAge(maxConnectionAge: number): void {
    // ± 10 %: clients connected at the same moment (a restart, a deploy) must not all move at the same moment.
    const age = Math.round(maxConnectionAge * (0.9 + 0.2 * Math.random()));
    this.#timer = this.#host.clock.setTimeout(() => this.#ageReached(), age);
  }

  /** True once DRAIN went to a client that reads it: it closes the connection itself when its calls are done. */
  get leavesByItself(): boolean {
    return this.#state !== ACTIVE && this.#connection.helloLink()?.peerReads === true && !this.#connection.session.isClosed;
  }

  /**
   * Asks the client to open a fresh connection for new calls (DRAIN) while the calls in flight finish here; the
   * client closes this one once they are done. With `maxConnectionAgeGrace`, calls still running past it end with
   * ERR_SMUX_SHUTTING_DOWN and the connection closes.
   */
  #drain(reason: string): void {
    if (this.#state !== ACTIVE || this.#connection.session.isClosed) return;
    this.announce(reason);
    this.#host.debug('drain', `Drained the connection from ${this.#connection.remote}: ${reason}`);
    const clock = this.#host.clock;
    // A hello still on its way (a young connection, a busy client) decides when it comes; a client that never says
    // hello (a Go caller of protocol 1) is treated as one that cannot read DRAIN.
    if (this.#connection.helloLink() !== null) this.helloArrived();
    else this.#helloWait = clock.setTimeout(() => this.#connection.helloLink() === null && this.#closeOnceIdle(), HELLO_TIMEOUT);
    const grace = this.#host.options.maxConnectionAgeGrace;
    if (grace > 0) this.#timer = clock.setTimeout(() => this.#endGrace(), grace);
  }

  /** Sends DRAIN, when the client reads it (the server's close() tells every client first). */
  announce(reason: string): void {
    if (this.#state !== ACTIVE) return;
    this.#state = DRAINED;
    this.#reason = reason;
    this.#connection.helloLink()?.drain(reason);
  }

  /** The hello is in: a drained connection sends DRAIN to a client that reads it; another is closed once idle. */
  helloArrived(): void {
    if (this.#state !== ACTIVE && this.#connection.helloLink()?.drain(this.#reason) !== true) this.#closeOnceIdle();
  }

  /** A call is over and its handler returned: a connection waiting to be idle may close now. */
  callDone(): void {
    if (this.#state === CLOSE_WHEN_IDLE) this.#closeIfIdle();
  }

  /** The connection is over: the timers stop. */
  stop(): void {
    if (this.#timer !== null) this.#host.clock.clearTimeout(this.#timer);
    if (this.#helloWait !== null) this.#host.clock.clearTimeout(this.#helloWait);
    this.#timer = this.#helloWait = null;
  }

  /**
   * `maxConnectionAge` passed. A peer that serves calls (a ServerSmux with `connectTo`) is not drained: this side
   * calls over its connection and would lose the calls it makes while the peer moves (found by a new-user trial: a
   * gateway's calls to its dialled-in workers failed at every drain). Such a peer rebalances when it redials.
   */
  #ageReached(): void {
    this.#timer = null;
    if (this.#connection.helloLink()?.peerServes === true)
      return this.#host.debug('drain', `Kept ${this.#connection.remote} past its maxConnectionAge: it serves calls`);
    this.#drain('the connection reached its maxConnectionAge');
  }

  #closeOnceIdle(): void {
    this.#state = CLOSE_WHEN_IDLE;
    this.#closeIfIdle();
  }

  #closeIfIdle(): void {
    if (this.#connection.callCount === 0) void closeWithin(this.#connection.session, this.#host.clock, 2_000);
  }

  #endGrace(): void {
    this.#timer = null;
    this.#connection.shutdownCalls(`the connection was drained (${this.#reason}) and its maxConnectionAgeGrace is over`);
    void closeWithin(this.#connection.session, this.#host.clock, 2_000);
  }
}
