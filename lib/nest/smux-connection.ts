import { EventEmitter } from 'node:events';
import type { PeerCertificate } from 'node:tls';
import type { MsPattern, ReadPacket } from '@nestjs/microservices';
import { type Clock, type Session, SmuxError } from '../smux/index.js';
import { observeSession } from '../smux/session-layer.js';
import { toSmuxError } from './call-scheduler.js';
import { callDone, failCall, openCall, type PendingCall } from './client-call.js';
import { OwnEvents } from './own-events.js';
import { createPacketCodec } from './packet-codec.js';
import { attachLauncher, SmuxProxy } from './smux-proxy.js';

/** What a {@link SmuxConnection} is given by the side that holds the connection (internal). */
export interface ConnectionPort {
  readonly id: string;
  readonly remoteAddress: string;
  readonly peerCertificate: PeerCertificate | null;
  readonly session: Session;
  readonly clock: Clock;
  /** The largest reply this side accepts, in bytes. */
  readonly maxMessageBytes: number;
  /** Why the connection failed, given the error its session ended with; undefined for a close on purpose or a routine leave. */
  failure(error: SmuxError | undefined): SmuxError | undefined;
  /** True once the peer said in its HELLO that it serves calls. */
  servesCalls(): boolean;
  /**
   * True once the server's close began and no handler of a call on the connection runs: no new call or event goes out
   * (ERR_SMUX_SHUTTING_DOWN).
   */
  closing(): boolean;
  /** Measures the round trip on the control stream. */
  ping(timeoutMs: number): Promise<number>;
  /** The last round trip measured, or null. */
  rtt(): number | null;
  /** Closes the connection gracefully: calls in flight finish first (bounded). */
  close(): Promise<void>;
  /** A call this side made on the connection is over: a close waiting for such calls looks again. */
  callSettled(): void;
}

const bySession = new WeakMap<Session, SmuxConnection>();
let createConnection: (port: ConnectionPort) => SmuxConnection;
let callsOf: (connection: SmuxConnection) => Set<PendingCall>;
let eventsOf: (connection: SmuxConnection) => OwnEvents;
let cutOffOf: (connection: SmuxConnection) => number;
/** Proves a construction came from {@link newSmuxConnection}: TypeScript's `private` does not hold at run time. */
const FROM_SERVER = Symbol('SmuxConnection');

/** The app's face of a connection (internal: only the server constructs one, so no app can register a session). */
export function newSmuxConnection(port: ConnectionPort): SmuxConnection {
  return createConnection(port);
}

/** Calls this side made on `connection` that its end failed (internal: the connection's end is then a loss). */
export function callsCutOff(connection: SmuxConnection): number {
  return cutOffOf(connection);
}

/** Calls this side made on `connection` (`send()`, `openDuplex()`) whose stream is open (internal: a close waits for them). */
export function callsInFlight(connection: SmuxConnection): number {
  return callsOf(connection).size;
}

/**
 * Fails the calls this side made on `connection` that are still in flight with `error`, each cancelled on the peer
 * (its FIN before the end), so they end with the reason of ours rather than with the connection's close.
 * @returns how many there were
 */
export function failCallsInFlight(connection: SmuxConnection, error: SmuxError): number {
  const calls = [...callsOf(connection)];
  for (const call of calls) failCall(call, error);
  return calls.length;
}

/** Events this side emitted on `connection` that have not settled (internal: a close waits for them). */
export function eventsInFlight(connection: SmuxConnection): number {
  return eventsOf(connection).inFlight;
}

/**
 * Fails the events this side emitted on `connection` whose streams are still open with `error` (what went out of
 * them is discarded by the peer). @returns how many had not gone out
 */
export function failEventsInFlight(connection: SmuxConnection, error: SmuxError): number {
  return eventsOf(connection).failAll(error);
}

/** Why a connection ended, or undefined when it closed on purpose (a peer leaving is not a failure). */
export function connectionFailure(error: SmuxError | undefined): SmuxError | undefined {
  return error === undefined || (error.code === 'ERR_SMUX_SESSION_CLOSED' && error.cause === undefined) ? undefined : error;
}

/** The connection a call's session belongs to (`ctx.getConnection()`), or null. */
export function connectionOf(session: Session): SmuxConnection | null {
  return bySession.get(session) ?? null;
}

/** Events of a {@link SmuxConnection} (`connection.on(event, listener)`). */
export type SmuxConnectionEvents = {
  /** The connection ended; `error` is set when it failed (as the server's `'disconnect'` tells it). */
  close: (error?: SmuxError) => void;
};

/**
 * One connection between a ServerSmux and a peer, seen from the server: who it is (`id`, `remoteAddress`, the TLS
 * `peerCertificate`), a place for what the app knows about it (`data`), and a `ClientProxy` over the same connection
 * — `send()`, `emit()`, `openDuplex()` call the handlers of a peer that serves calls (a ServerSmux that dials out
 * with `connectTo`). Reached from a handler with `ctx.getConnection()`, and from the server with `server.connections`
 * and its `'connection'` / `'disconnect'` events. Calls are not queued or retried: while the connection is gone they
 * fail at once with the retryable `ERR_SMUX_UNAVAILABLE`, and once the server's `close()` began with the retryable
 * `ERR_SMUX_SHUTTING_DOWN` (those already under way finish within `closeTimeout`, and while a handler of a call on the
 * connection still runs, new ones go out: it may be calling its caller back). Such a failure is delivered on a later
 * turn of the event loop, never inside `subscribe()` or `emit()`.
 */
export class SmuxConnection extends SmuxProxy<SmuxConnectionEvents, string> {
  /** The app's own state for this connection (who the peer is, once a handler has found out). */
  readonly data: Record<string, unknown> = {};
  readonly #port: ConnectionPort;
  readonly #events = new EventEmitter();
  readonly #calls = new Set<PendingCall>(); // ours, with their stream open: a server's close waits for them
  #cutOff = 0; // ours that the connection's end failed
  readonly #ownEvents: OwnEvents; // ours, not settled yet: a server's close waits for them too
  #closed: SmuxError | null | undefined = undefined; // undefined: open; null: closed cleanly

  static {
    createConnection = (port) => new SmuxConnection(port, FROM_SERVER);
    callsOf = (connection) => connection.#calls;
    eventsOf = (connection) => connection.#ownEvents;
    cutOffOf = (connection) => connection.#cutOff;
  }

  /**
   * Made by the server for each connection ({@link newSmuxConnection}), never by apps: one made by hand would
   * register its session as a connection's (`ctx.getConnection()`), so a run-time call throws.
   */
  private constructor(port: ConnectionPort, from: typeof FROM_SERVER) {
    if (from !== FROM_SERVER) throw new TypeError('a SmuxConnection is made by the server for each connection');
    super();
    this.#port = port;
    this.#ownEvents = new OwnEvents(() => port.callSettled());
    this.initializeSerializer({});
    this.initializeDeserializer({});
    const target = {
      schedule: (call: PendingCall) => this.#open(call),
      sessionFor: () => this.connect(),
      checkSize: () => undefined, // the peer refuses what is too large with ERR_SMUX_LIMIT
      events: this.#ownEvents,
    };
    const host = {
      clock: port.clock,
      maxMessageBytes: port.maxMessageBytes,
      maxSourceBufferBytes: 16 * 1024 * 1024,
      codec: createPacketCodec(false, {
        serializer: this.serializer,
        deserializer: this.deserializer,
        normalizePattern: (pattern: unknown) => this.normalizePattern(pattern as MsPattern),
        patternAsString: (pattern: unknown) => String(pattern),
      }),
      launch: (call: PendingCall) => this.#open(call),
      settled: (call: PendingCall) => {
        if (this.#calls.delete(call)) port.callSettled();
      },
      cutOff: () => void this.#cutOff++,
      connectError: () => null,
      closing: () => false, // its calls cut by a close of the connection: "the connection closed" says it
      closes: () => 0, // a closed connection refuses new calls itself
    };
    attachLauncher(this, host, target, {
      timeout: 0,
      waitForReady: false,
      streamHighWaterMark: port.session.config.streamHighWaterMark ?? 64 * 1024,
    });
    bySession.set(port.session, this);
    observeSession(port.session, {
      close: (error) => {
        const failure = port.failure(error);
        this.#closed = failure ?? null;
        this.#events.emit('close', failure);
      },
    });
  }

  /** Unique among the server's connections (it is not reused; the server finds the connection by it). */
  get id(): string {
    return this.#port.id;
  }

  /** `address:port` of the peer (or `unix` on a unix socket). */
  get remoteAddress(): string {
    return this.#port.remoteAddress;
  }

  /** The peer's TLS certificate (mutual TLS), or null. */
  get peerCertificate(): PeerCertificate | null {
    return this.#port.peerCertificate;
  }

  /** True once the connection ended. */
  get closed(): boolean {
    return this.#closed !== undefined;
  }

  /**
   * True when the peer serves calls (it named the `calls` feature in its HELLO: a ServerSmux with `connectTo`); known by
   * the time the server's `'connection'` event comes.
   */
  get servesCalls(): boolean {
    return this.#port.servesCalls();
  }

  /** The last round-trip time measured with {@link ping} (ms), or null. */
  get rtt(): number | null {
    return this.#port.rtt();
  }

  /**
   * Measures the round trip to the peer on the connection's control stream (PING, PONG). @returns ms
   * @throws SmuxError `ERR_SMUX_TIMEOUT` without an answer within `timeoutMs`; `ERR_SMUX_UNAVAILABLE` when the peer
   *   does not answer pings (an older client, a Go caller of protocol 1) or the connection is gone
   */
  ping(timeoutMs = 5_000): Promise<number> {
    return this.#port.ping(timeoutMs);
  }

  /** Resolves with the connection's session (it is already connected: Nest's `ClientProxy` contract). */
  connect(): Promise<Session> {
    const unavailable = this.#unavailable();
    return unavailable === null ? Promise.resolve(this.#port.session) : Promise.reject(unavailable);
  }

  /** Closes the connection gracefully: what is queued goes out, calls in flight end (bounded). */
  async close(): Promise<void> {
    await this.#port.close();
    // The session reports its end on a later turn: resolve once `closed` and the 'close' event are there too.
    if (this.#closed === undefined) await new Promise((resolve) => this.#events.once('close', resolve));
  }

  /** The connection's smux session. */
  unwrap<T = Session>(): T {
    return this.#port.session as T;
  }

  /**
   * An event (EVENT then FIN on a new stream), at most once; see {@link SmuxProxy.dispatchEvent}. One emitted before
   * the server's close began is waited for within `closeTimeout`, then failed with `ERR_SMUX_SHUTTING_DOWN`.
   */
  protected override dispatchEvent<T = unknown>(packet: ReadPacket): Promise<T> {
    const sending = super.dispatchEvent<T>(packet);
    return this.#port.closing() ? sending : this.#ownEvents.track(sending); // once closing, it fails (#unavailable)
  }

  /** Listens to `close` (the connection ended). */
  override on<K extends keyof SmuxConnectionEvents>(event: K, callback: SmuxConnectionEvents[K]): void {
    this.#events.on(event, callback as (...args: unknown[]) => void);
  }

  /** Why a call cannot go out now, or null. */
  #unavailable(): SmuxError | null {
    // Calls and events already under way finish within closeTimeout; a new one would only be cut off by the close.
    if (this.#port.closing()) {
      return new SmuxError('ERR_SMUX_SHUTTING_DOWN', `the server is shutting down: no new call or event goes to ${this.remoteAddress}`);
    }
    if (this.#closed !== undefined || this.#port.session.isClosed) {
      return new SmuxError('ERR_SMUX_UNAVAILABLE', `the connection ${this.id} (${this.remoteAddress}) is closed`, {
        retryable: true,
        cause: this.#closed ?? undefined,
      });
    }
    if (!this.#port.servesCalls()) {
      return new SmuxError(
        'ERR_SMUX_UNAVAILABLE',
        `${this.remoteAddress} does not serve calls: only a ServerSmux that dials out (connectTo) takes calls over its connection`,
      );
    }
    return null;
  }

  #open(call: PendingCall): void {
    if (callDone(call)) return;
    const unavailable = this.#unavailable();
    if (unavailable !== null) return failCall(call, unavailable);
    try {
      openCall(call, this.#port.session.openChannel());
    } catch (error) {
      failCall(call, toSmuxError(error, 'the call could not be opened'));
    }
    if (!callDone(call)) this.#calls.add(call);
  }
}
