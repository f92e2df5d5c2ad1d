import { EventEmitter } from 'node:events';
import { Logger } from '@nestjs/common';
import type { MsPattern } from '@nestjs/microservices';
import { type Session, SmuxError } from '../smux/index.js';
import { CallScheduler } from './call-scheduler.js';
import { type ClientCallHost, clientClosed, failCall, type PendingCall } from './client-call.js';
import type { SmuxConnectionInfo } from './client-lane.js';
import { ConnectorPool } from './connector-pool.js';
import type { ClientSmuxOptions } from './interfaces.js';
import { RateLimitedLog } from './log.js';
import { OutageLog } from './outage-log.js';
import { createSmuxMetrics, type SmuxMetrics } from './metrics.js';
import { resolveClientOptions } from './options.js';
import { createPacketCodec } from './packet-codec.js';
import { connectionFailure } from './smux-connection.js';
import { attachLauncher, SmuxProxy } from './smux-proxy.js';
import type { SmuxClientEvents } from './smux.events.js';

let failAll: (client: ClientSmux, error: SmuxError) => number;

/**
 * Fails every call of `client` in flight, queued or waiting for a connection with `error` (internal: a dialling
 * ServerSmux's close ends its own calls with ERR_SMUX_SHUTTING_DOWN, as it ends those it serves). @returns how many
 * were in flight
 */
export function failClientCalls(client: ClientSmux, error: SmuxError): number {
  return failAll(client, error);
}

/**
 * The NestJS client of {@link ServerSmux}: every `send()` and `emit()` runs on its own smux stream over one
 * connection, opened lazily on first use — or over several (`hosts`, `dns`, `connectionsPerAddress`), each call
 * on the one with fewer calls in flight of two picked at random. While there is no connection, calls fail at once
 * with the retryable `ERR_SMUX_UNAVAILABLE`, told on a later turn of the event loop (never inside `subscribe()`), or
 * wait with `waitForReady`; reconnection goes on in the background.
 *
 * ```ts
 * ClientsModule.register([smuxClient({ name: 'MATH', options: { port: 4000 } })]);
 * ```
 */
export class ClientSmux extends SmuxProxy<SmuxClientEvents, string> {
  /** Nest's logger, with this transport's context. */
  protected readonly logger = new Logger('ClientSmux');
  readonly #host: ClientCallHost;
  readonly #events = new EventEmitter();
  readonly #pool: ConnectorPool;
  readonly #scheduler: CallScheduler;
  readonly #warnings: RateLimitedLog;
  readonly #metrics: SmuxMetrics;
  #cutOff = 0; // calls in flight when the connection died (for the log line)
  #closing = 0; // close() calls under way: the calls they cut off say the client was closed
  #closes = 0; // close() calls begun
  readonly #outages: OutageLog;
  // A dialling server's client only (connectTo): its calls holding a slot, which the server's close fails
  // (failClientCalls). A plain client keeps no such set: its calls cost nothing more.
  readonly #launched: Set<PendingCall> | null;

  static {
    failAll = (client, error) => {
      client.#scheduler.close(error); // the queued and waiting ones first: none of them takes a freed slot
      const launched = [...(client.#launched ?? [])];
      for (const call of launched) failCall(call, error);
      return launched.length;
    };
  }

  /**
   * @param options - where to connect, TLS, smux config, default timeout, limits, (de)serializers
   * @throws SmuxError `ERR_SMUX_INVALID_CONFIG` naming the option, for an unknown option or a bad value
   */
  constructor(options: ClientSmuxOptions = {}) {
    super();
    const resolved = resolveClientOptions(options);
    this.initializeSerializer(options);
    this.initializeDeserializer(options);
    this.#warnings = new RateLimitedLog(this.logger, resolved.clock);
    this.#outages = new OutageLog(this.#warnings, resolved.clock);
    const { metrics, recorder } = createSmuxMetrics('client', resolved.clock);
    this.#metrics = metrics;
    const pool = new ConnectorPool(resolved, {
      ready: (session, where) => this.#ready(session, where),
      failed: (error, where, retrying) => this.#failed(error, where, retrying),
      lost: (session, error, where) => this.#lost(session, error, where),
      status: (status) => this._status$.next(status),
      resolveFailed: (error, names, kept) =>
        this.#warnings.warn(
          'dns',
          `Could not resolve ${names}: ${error.message} (keeping the ${kept} address${kept === 1 ? '' : 'es'} found before)`,
        ),
      rtt: (ms) => recorder.recordRtt(ms),
      changed: (added, removed) => {
        for (const where of removed) this.#outages.forget(where);
        this.logger.debug?.(`DNS: ${[...added.map((a) => `+${a}`), ...removed.map((r) => `-${r}`)].join(' ')}`);
      },
    });
    this.#pool = pool;
    const scheduler = new CallScheduler(pool, resolved);
    this.#scheduler = scheduler;
    const launched = resolved.serveCalls === null ? null : new Set<PendingCall>();
    this.#launched = launched;
    this.#host = {
      metrics: recorder,
      clock: resolved.clock,
      maxMessageBytes: resolved.maxMessageBytes,
      maxSourceBufferBytes: resolved.maxSourceBufferBytes,
      codec: createPacketCodec(resolved.serializer !== undefined || resolved.deserializer !== undefined, {
        serializer: this.serializer,
        deserializer: this.deserializer,
        normalizePattern: (pattern) => this.normalizePattern(pattern as MsPattern),
        patternAsString: (pattern) => String(pattern),
      }),
      launch:
        launched === null
          ? (call) => scheduler.launch(call)
          : (call) => {
              launched.add(call);
              scheduler.launch(call);
            },
      cutOff: () => void this.#cutOff++,
      settled:
        launched === null
          ? (call) => scheduler.release(call)
          : (call) => {
              launched.delete(call);
              scheduler.release(call);
            },
      connectError: () => pool.lastError,
      closing: () => this.#closing > 0,
      closes: () => this.#closes,
    };
    attachLauncher(this, this.#host, scheduler, {
      timeout: resolved.timeout,
      waitForReady: resolved.waitForReady,
      streamHighWaterMark: resolved.smux.streamHighWaterMark ?? 64 * 1024,
    });
  }

  /**
   * Connects, unless connected (concurrent callers share the attempt); a backoff wait is cut short. Resolves with
   * the session, or rejects with `ERR_SMUX_UNAVAILABLE` whose `cause` is why the attempt failed.
   */
  connect(): Promise<Session> {
    const session = this.#pool.anySession;
    return session !== null ? Promise.resolve(session) : this.#scheduler.nextSession(false);
  }

  /**
   * Closes the connections gracefully (queued events are flushed); calls still in flight, queued or waiting for
   * a connection fail with `ERR_SMUX_SESSION_CLOSED`, and reconnecting stops. A later call connects again.
   */
  async close(): Promise<void> {
    const closed = clientClosed();
    this.#scheduler.close(closed);
    this.#closes++;
    this.#closing++;
    try {
      await this.#pool.close();
    } finally {
      this.#closing--;
    }
    this.#outages.clear(); // a later call starts over
    this.#warnings.close();
  }

  /**
   * Every connection of this client, as a snapshot: its address, connection index, state, calls in flight and
   * last error. One entry without `hosts`, `dns` or `connectionsPerAddress`; `client.status` tells whether at
   * least one is ready.
   */
  get connections(): SmuxConnectionInfo[] {
    return this.#pool.connections;
  }

  /**
   * Measures the round trip to the server on a ready connection's control stream (PING, PONG) — the connection
   * `unwrap()` gives. Each connection's last round trip (these pings, and `pingInterval`'s) is in
   * `client.connections[i].rtt`. @returns the time in ms
   * @throws SmuxError `ERR_SMUX_UNAVAILABLE` without a ready connection, or from a server too old to answer pings;
   *   `ERR_SMUX_TIMEOUT` without an answer within `timeoutMs`
   */
  ping(timeoutMs = 5_000): Promise<number> {
    return this.#pool.ping(timeoutMs);
  }

  /** Counters and latency histograms of this client's calls (README "Metrics"): `client.metrics.snapshot()`. */
  get metrics(): SmuxMetrics {
    return this.#metrics;
  }

  /**
   * The current smux session (with several connections: one of the ready ones).
   * @throws SmuxError `ERR_SMUX_UNAVAILABLE` when not connected
   */
  unwrap<T = Session>(): T {
    const session = this.#pool.anySession;
    if (session === null) throw new SmuxError('ERR_SMUX_UNAVAILABLE', 'ClientSmux is not connected: call connect() first');
    return session as T;
  }

  /** Listens to client events: `connect` (a session is ready), `close` (it ended), `error` (an attempt failed). */
  override on<K extends keyof SmuxClientEvents>(event: K, callback: SmuxClientEvents[K]): void {
    this.#events.on(event, callback as (...args: unknown[]) => void);
  }

  // ── connection events ──────────────────────────────────────────────────────────────────────────────────

  #ready(session: Session, where: string): void {
    // Rate-limited as the server's per-connection lines are: a standalone client logs through Nest's default logger,
    // which prints debug, and a server's maxConnectionAge rotates a connection as often as it says (found by a new-user
    // trial: 2 lines a second at maxConnectionAge 1000). Not verbose: the default logger prints that too.
    this.#outages.connected(where, session.version);
    this.#events.emit('connect', session);
    this.#scheduler.connected();
  }

  #failed(error: Error, where: string, retrying: boolean): void {
    this.#outages.failed(where, error, retrying);
    if (this.#events.listenerCount('error') > 0) this.#events.emit('error', error);
    this.#scheduler.attemptFailed(retrying);
  }

  #lost(_session: Session, error: SmuxError | undefined, where: string): void {
    this.#scheduler.lost();
    // A server closing its end on purpose (shutdown, a drained connection) ends the session without a cause and
    // with its calls answered; a dead process or a cut network leaves calls in flight, or a socket error.
    const inFlight = this.#cutOff;
    this.#cutOff = 0;
    const failure = inFlight > 0 ? error : connectionFailure(error); // 'close' carries an error only for a failure
    if (failure !== undefined) {
      const calls = inFlight > 0 ? ` (${inFlight} call${inFlight === 1 ? '' : 's'} in flight failed with it)` : '';
      this.#warnings.warn('lost connection', `Connection to ${where} lost: ${failure.message}${calls}`);
    } else {
      this.#warnings.debug('connection', `Connection to ${where} closed`);
    }
    this.#events.emit('close', failure);
  }
}
