import { type Clock, type Session, type SmuxChannel, SmuxError, type TimerHandle } from '../smux/index.js';
import { closeWithin, dialSession } from './dial.js';
import { observeSession } from '../smux/session-layer.js';
import { type ControlLink, FEATURE_CALLS, type ServeHook } from './control-link.js';
import { FEATURES, greet, HELLO_TIMEOUT, type ServerHello } from './hello.js';
import { formatAddress, type ResolvedClientOptions } from './options.js';
import { ReconnectBackoff } from './reconnect-backoff.js';
import type { SmuxStatus } from './smux.events.js';

/**
 * The connector's states (gRPC's channel states, without its idle timeout):
 *
 *   IDLE ──connect()──▶ CONNECTING ──dial + hello ok──▶ READY ──session lost──▶ IDLE (the next call connects)
 *                           │ fails                        │ stream ids run out, or the server sent DRAIN: rotate
 *                           ▼                              │ (new calls go to a fresh session, the old one drains)
 *                        BACKOFF ──delay──▶ CONNECTING     └─ close() ──▶ IDLE (a later connect() starts over)
 *
 * In BACKOFF new calls fail at once with the last error (unless they wait for ready), while the retries go on in
 * the background until one succeeds or the client is closed. A lost connection is not redialled until something
 * needs it, as Nest's TCP client and gRPC's pick-first do; nor is a rotation's fresh session that failed before any
 * call or connect() asked for it (back to IDLE, no last error: the server that drained us may be shutting down).
 */
export type ConnectorState = 'idle' | 'connecting' | 'ready' | 'backoff';

/** How often draining sessions with streams left are looked at again (streams that end tell no one). */
const RETIRE_CHECK_MS = 250;

/** What the client hears from its connector. */
export interface ConnectorListener {
  /** A session is ready for calls. */
  ready(session: Session): void;
  /**
   * An attempt failed; `error` is what the calls' errors carry as cause. `retrying`: the next attempt follows after a
   * backoff; false: nobody had asked for this one (a rotation's fresh session: the server drained the old one, and may
   * be shutting down), and the next call dials.
   */
  failed(error: Error, retrying: boolean): void;
  /** The ready session ended; calls on it fail through their own streams. */
  lost(session: Session, error: SmuxError | undefined): void;
  /** The public status changed. */
  status(status: SmuxStatus): void;
  /** A ping on a connection came back after `ms` (RTT metrics). */
  rtt?(ms: number): void;
}

/**
 * Dials the server, starts the smux session and exchanges the hello; reconnects with backoff; rotates to a
 * fresh session before stream ids run out. All time goes through the client's clock.
 */
export class Connector {
  readonly #options: ResolvedClientOptions;
  readonly #listener: ConnectorListener;
  readonly #clock: Clock;
  readonly #where: string;
  readonly #controls = new Map<Session, { channel: SmuxChannel; link: ControlLink }>(); // each session's control stream
  readonly #draining = new Set<Session>();
  #state: ConnectorState = 'idle';
  #published: SmuxStatus | null = null; // the last status published
  #drainedEarly: Session | null = null; // DRAIN came with the HELLO, before the session was ready
  #unasked = false; // the running attempt is a rotation's that no call or connect() has asked for yet
  #retireTimer: TimerHandle | null = null; // looks at the draining sessions again
  readonly #serve: ServeHook | null; // calls the server makes on our connections, when we serve them
  #session: Session | null = null;
  #hello: ServerHello | null = null;
  readonly #backoff: ReconnectBackoff;
  #everConnected = false;
  #generation = 0; // bumped by close(): what an older attempt completes is dropped

  /**
   * @param options - the client's resolved options
   * @param listener - told about sessions, failures and status
   */
  constructor(options: ResolvedClientOptions, listener: ConnectorListener) {
    this.#options = options;
    this.#listener = listener;
    this.#clock = options.clock;
    this.#where = formatAddress(options.address);
    this.#serve = options.serveCalls;
    this.#backoff = new ReconnectBackoff(options.reconnect, this.#clock, () => this.#state === 'backoff' && this.#attempt());
  }

  /** The current state. */
  get state(): ConnectorState {
    return this.#state;
  }

  /** The ready session, or null. */
  get session(): Session | null {
    return this.#session;
  }

  /** What the server said in its hello (limits it advertises), once connected. */
  get hello(): ServerHello | null {
    return this.#hello;
  }

  /** The last round-trip time measured on the ready connection (ms), or null. */
  get rtt(): number | null {
    return this.#link()?.rtt ?? null;
  }

  /**
   * Measures the round trip to the server on the ready connection's control stream. @returns ms
   * @throws SmuxError `ERR_SMUX_UNAVAILABLE` without a ready connection (or a server too old to answer pings),
   *   `ERR_SMUX_TIMEOUT` without an answer within `timeoutMs`
   */
  ping(timeoutMs: number): Promise<number> {
    const link = this.#link();
    if (link === null) return Promise.reject(new SmuxError('ERR_SMUX_UNAVAILABLE', `not connected to ${this.#where}`, { retryable: true }));
    return link.ping(timeoutMs);
  }

  /** Why the last attempt failed (cleared by a success). */
  get lastError(): Error | null {
    return this.#backoff.lastError;
  }

  /** The server's address as messages show it. */
  get where(): string {
    return this.#where;
  }

  /** Starts an attempt now, unless one is running or a session is ready (a backoff wait is cut short). */
  connect(): void {
    this.#unasked = false; // asked for: a failure now backs off and retries
    if (this.#state === 'connecting' || this.#state === 'ready') return;
    this.#backoff.cancel();
    this.#attempt();
  }

  /**
   * Calls are failing fast, or waiting, while this connection backs off: its next attempt comes at most
   * `DEMAND_RETRY_MS` (± `reconnect.jitter`) after the last failure — except for a peer that does not speak this
   * transport ({@link ReconnectBackoff.hurry}).
   */
  hurry(): void {
    if (this.#state === 'backoff') this.#backoff.hurry();
  }

  /**
   * The ready session has no stream ids left: new calls go to a fresh session, the old one finishes its calls
   * and then closes ({@link retireIdle}).
   */
  rotate(): void {
    const session = this.#session;
    if (session === null) return;
    this.#session = null;
    this.#draining.add(session);
    this.#controls.get(session)?.channel.destroy(); // the control stream must not keep a draining session open
    this.#state = 'idle';
    this.retireIdle();
    this.#unasked = true; // until a call or connect() asks for it: see #attempt
    this.#attempt(); // a ready session had no retry timer running
  }

  /** Closes draining sessions whose calls are all done. */
  retireIdle(): void {
    if (this.#draining.size === 0) return; // every settled call asks: the common case allocates nothing
    let busy = false;
    for (const session of this.#draining) {
      if (session.numStreams === 0)
        void session.close(); // idempotent; 'close' removes it
      else busy = true;
    }
    // Events and calls served on the session end without telling us: look again until every drained one is closed.
    if (this.#retireTimer === null && busy) {
      this.#retireTimer = this.#clock.setTimeout(() => {
        this.#retireTimer = null;
        this.retireIdle();
      }, RETIRE_CHECK_MS);
    }
  }

  /** Stops reconnecting and closes every session gracefully (bounded). A later {@link connect} starts over. */
  async close(): Promise<void> {
    this.#generation++;
    this.#backoff.cancel();
    if (this.#retireTimer !== null) this.#clock.clearTimeout(this.#retireTimer);
    this.#retireTimer = null;
    const sessions = [...this.#draining];
    if (this.#session !== null) sessions.push(this.#session);
    this.#session = null;
    this.#draining.clear();
    this.#state = 'idle';
    this.#unasked = false;
    this.#backoff.reset();
    await Promise.all(sessions.map((s) => closeWithin(s, this.#clock, 2_000, false))); // its calls fail with the session
    this.#status('disconnected');
  }

  // ── attempts ───────────────────────────────────────────────────────────────────────────────────────────

  #attempt(): void {
    this.#state = 'connecting';
    // A rotation (stream ids, DRAIN) is not a reconnect: the draining session still serves its calls.
    if ((this.#everConnected || this.#backoff.failures > 0) && this.#draining.size === 0) this.#status('reconnecting');
    const generation = this.#generation;
    this.#establish(generation).then(
      (session) => {
        if (generation !== this.#generation) return void session.destroy();
        this.#state = 'ready';
        this.#unasked = false;
        this.#session = session;
        this.#backoff.reset();
        this.#everConnected = true;
        this.#status('connected');
        this.#listener.ready(session);
        this.#schedulePing(session);
        if (this.#drainedEarly === session) this.rotate(); // the server drained it before it was ready
        this.#drainedEarly = null;
      },
      (error: Error) => {
        if (generation !== this.#generation) return;
        if (this.#unasked) {
          // A fresh session nobody asked for: no retries in the background (an idle client whose server shut down
          // gracefully redialled it for good, with a warning every few seconds). The next call dials and waits for
          // it, as after a lost connection: hence no last error, which would fail that call fast without a dial.
          this.#unasked = false;
          this.#state = 'idle';
          this.#status('disconnected');
          this.#listener.failed(error, false);
          return;
        }
        this.#state = 'backoff';
        // Scheduled before the listener hears of it: it may hurry the retry (calls waiting), connect or close.
        this.#backoff.failed(error);
        this.#status('disconnected');
        this.#listener.failed(error, true);
      },
    );
  }

  async #establish(generation: number): Promise<Session> {
    const { session, socket, firstBytes } = await dialSession(this.#options, this.#clock, this.#where);
    if (generation !== this.#generation) {
      session.destroy();
      throw new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the client was closed while connecting');
    }
    // A client that does not serve calls refuses streams the server opens at once, rather than leave them to fill
    // the accept backlog (which would stop the session reading).
    const serve = this.#serve;
    if (serve === null) observeSession(session, { channel: (channel) => channel.destroy() });
    else serve(session, () => this.#controls.get(session)?.link ?? null, socket);
    const helloMs = Math.min(HELLO_TIMEOUT, this.#options.connectTimeout);
    try {
      const { hello, control, link } = await greet(session, this.#clock, helloMs, {
        where: this.#where,
        firstBytes,
        tls: this.#options.tls !== undefined,
        answeredBefore: this.#hello !== null,
        features: serve === null ? FEATURES : [...FEATURES, FEATURE_CALLS],
        measured: (ms) => this.#listener.rtt?.(ms),
        // New calls go to a fresh connection; the calls on this one finish here, then it closes (retireIdle).
        drain: () => {
          if (this.#session === session) this.rotate();
          else this.#drainedEarly = session; // with the HELLO, before the session is ready: rotate once it is
        },
      });
      this.#hello = hello;
      this.#controls.set(session, { channel: control, link });
    } catch (error) {
      session.destroy();
      throw error;
    }
    if (session.isClosed) throw session.error ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed');
    observeSession(session, { close: (error) => this.#closed(session, error) });
    return session;
  }

  /** The ready session's control link, or null. */
  #link(): ControlLink | null {
    return this.#session === null ? null : (this.#controls.get(this.#session)?.link ?? null);
  }

  /**
   * Health (`pingInterval`): the ready session is pinged on its control stream every interval; a ping without an
   * answer within the interval gives the connection up (its calls in flight fail with ERR_SMUX_TIMEOUT, the next call
   * reconnects). A server too old to answer pings is not pinged.
   */
  #schedulePing(session: Session): void {
    const interval = this.#options.pingInterval;
    if (interval === 0) return;
    const timer = this.#clock.setTimeout(() => {
      unobserve(); // one observer per ping at a time, not one more per interval
      if (this.#session !== session) return;
      this.ping(interval).then(
        () => this.#schedulePing(session),
        (error: unknown) => {
          if (this.#session !== session || !(error instanceof SmuxError) || error.code !== 'ERR_SMUX_TIMEOUT') return;
          // Not retryable: the calls in flight on it may have run (as when a connection is lost).
          session.destroy(new SmuxError('ERR_SMUX_TIMEOUT', `${this.#where} did not answer a ping within ${interval} ms (pingInterval)`));
        },
      );
    }, interval);
    const unobserve = observeSession(session, { close: () => this.#clock.clearTimeout(timer) });
  }

  /** Publishes a status, once per change. */
  #status(status: SmuxStatus): void {
    if (status === this.#published) return;
    this.#published = status;
    this.#listener.status(status);
  }

  #closed(session: Session, error: SmuxError | undefined): void {
    this.#controls.delete(session);
    // Every session that was ready is reported when it ends, a drained one too ('connect' and 'close' pair up).
    if (this.#draining.delete(session)) return this.#listener.lost(session, error);
    if (this.#session !== session) return;
    this.#session = null;
    this.#state = 'idle';
    this.#status('disconnected');
    this.#listener.lost(session, error);
  }
}
