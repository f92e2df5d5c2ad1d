import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { type CustomTransportStrategy, type MessageHandler, type OutgoingResponse, RpcException, Server } from '@nestjs/microservices';
import { connectable, finalize, isObservable, Subject } from 'rxjs';
import { type Clock, Session, type SmuxChannel, type SmuxConfig, SmuxError, systemClock, type TimerHandle } from '../smux/index.js';
import { type CallMessage, encodeMessage, Flag, Kind } from './call-codec.js';
import type { ServerSmuxOptions } from './interfaces.js';
import { type CallHost, ServerCall } from './server-call.js';
import { createSmuxContext, type SmuxContext } from './smux.context.js';
import type { SmuxServerEvents, SmuxStatus } from './smux.events.js';
import { SMUX_TRANSPORT } from './transport-id.js';

// Nest's own texts (not exported from @nestjs/microservices' entry point).
const NO_MESSAGE_HANDLER = 'There is no matching message handler defined in the remote service.';
const NO_EVENT_HANDLER = (pattern: string) => `There is no matching event handler defined in the remote service. Event pattern: ${pattern}`;
const MiB = 1024 * 1024;
/** Cached routes at most (one per distinct pattern the app handles; the cap only guards against misuse). */
const MAX_CACHED_ROUTES = 4096;

/** One client connection: its session and the calls running on it. */
interface Connection {
  readonly session: Session;
  readonly calls: Set<ServerCall>;
  /** Over `maxConnections`: every call gets ERR_SMUX_LIMIT and the connection closes. */
  readonly refused: boolean;
}

/**
 * A NestJS microservice transport over smux: every call from a {@link ClientSmux} (or any smux client
 * speaking docs/PROTOCOL.md) arrives on its own multiplexed stream.
 *
 * ```ts
 * const app = await NestFactory.createMicroservice(AppModule, { strategy: new ServerSmux({ port: 4000 }) });
 * await app.listen();
 * ```
 */
export class ServerSmux extends Server<SmuxServerEvents, SmuxStatus> implements CustomTransportStrategy {
  override transportId: symbol = SMUX_TRANSPORT;
  readonly #options: ServerSmuxOptions;
  readonly #smux: Partial<SmuxConfig>;
  readonly #clock: Clock;
  readonly #maxCalls: number;
  readonly #finTimeout: number;
  readonly #customSerializer: boolean;
  readonly #customDeserializer: boolean;
  readonly #events = new EventEmitter();
  readonly #pendingListeners: Array<[string, (...args: never[]) => void]> = [];
  readonly #connections = new Set<Connection>();
  readonly #awaitingFin = new Set<ServerCall>();
  readonly #routes = new Map<string, MessageHandler>();
  readonly #host: CallHost;
  readonly #defaultStartHook: unknown;
  #server: net.Server | null = null;
  #finSweep: TimerHandle | null = null;
  #closing: Promise<void> | null = null;
  #settledWaiter: (() => void) | null = null;

  /** @param options - where to listen, TLS, smux config, limits, (de)serializers */
  constructor(options: ServerSmuxOptions = {}) {
    super();
    this.#options = options;
    this.#smux = { version: 2, ...options.smux };
    this.#clock = options.smux?.clock ?? systemClock;
    this.#maxCalls = options.maxCallsPerConnection ?? 10_000;
    this.#finTimeout = options.finTimeout ?? 30_000;
    this.#customSerializer = options.serializer !== undefined;
    this.#customDeserializer = options.deserializer !== undefined;
    this.initializeSerializer(options);
    this.initializeDeserializer(options);
    this.#defaultStartHook = this.onProcessingStartHook;
    this.#host = this.#createCallHost(options.maxMessageBytes ?? 64 * MiB, options.maxReplyBufferBytes ?? 128 * MiB);
  }

  /** Starts listening; `callback()` on success, `callback(error)` on failure (Nest's contract). */
  listen(callback: (error?: unknown) => void): void {
    const { tls: tlsOptions } = this.#options;
    const server =
      tlsOptions !== undefined
        ? tls.createServer(tlsOptions, (socket) => this.#accept(socket))
        : net.createServer((socket) => this.#accept(socket));
    this.#server = server;
    for (const [event, listener] of this.#pendingListeners.splice(0)) this.on(event as keyof SmuxServerEvents, listener);
    const onError = (error: Error): void => {
      server.off('listening', onListening);
      callback(error);
    };
    const onListening = (): void => {
      server.off('error', onError);
      server.on('error', (error) => this.logger.error(error));
      this._status$.next('connected');
      callback();
    };
    server.once('error', onError).once('listening', onListening);
    const { path, port = 3000, host = 'localhost' } = this.#options;
    if (path !== undefined) server.listen(path);
    else server.listen(port, host);
  }

  /**
   * Graceful close: stops accepting connections and calls (new calls get the retryable
   * `ERR_SMUX_SHUTTING_DOWN`), lets running calls finish within `closeTimeout`, ends the rest with
   * `ERR_SMUX_SHUTTING_DOWN`, then closes every connection. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /** Listens to the `net.Server`'s events (`listening`, `connection`, `close`, `error`) or `session`. */
  on<K extends keyof SmuxServerEvents>(event: K, callback: SmuxServerEvents[K]): void {
    if (event === 'session') this.#events.on(event, callback as (...args: unknown[]) => void);
    else if (this.#server === null) this.#pendingListeners.push([event, callback]);
    else this.#server.on(event, callback as (...args: unknown[]) => void);
  }

  /** The listening `net.Server` (a `tls.Server` with TLS). */
  unwrap<T = net.Server>(): T {
    if (this.#server === null) throw new Error('ServerSmux is not listening: call listen() first');
    return this.#server as T;
  }

  /** Registers a handler (Nest calls this); the per-pattern route cache starts over. */
  override addHandler(pattern: unknown, callback: MessageHandler, isEventHandler?: boolean, extras?: Record<string, unknown>): void {
    super.addHandler(pattern, callback, isEventHandler, extras);
    this.#routes.clear();
  }

  // ── connections ────────────────────────────────────────────────────────────────────────────────────────

  #accept(socket: net.Socket): void {
    if (this.#closing !== null) {
      socket.destroy();
      return;
    }
    const session = Session.server(socket, this.#smux);
    const connection: Connection = { session, calls: new Set(), refused: this.#connections.size >= (this.#options.maxConnections ?? 1024) };
    this.#connections.add(connection);
    session.on('channel', (channel) => this.#open(connection, channel));
    session.on('close', () => this.#connections.delete(connection));
    if (connection.refused) {
      // Answer what arrives with ERR_SMUX_LIMIT (a clear error, not a silent drop), then hang up.
      const timer = this.#clock.setTimeout(() => void closeWithin(session, this.#clock, 2_000), 1_000);
      session.on('close', () => this.#clock.clearTimeout(timer));
    }
    this.#events.emit('session', session);
  }

  /**
   * A stream the client opened. Calls count against `maxCallsPerConnection` from their SYN, so requests still
   * arriving cannot pile up beyond it; one over the limit (or on a refused connection, or during shutdown) is
   * answered with the error as soon as its first bytes arrive, without buffering its request.
   */
  #open(connection: Connection, channel: SmuxChannel): void {
    let refusal: SmuxError | null = null;
    if (this.#closing !== null) refusal = new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'the server is shutting down');
    else if (connection.refused)
      refusal = new SmuxError('ERR_SMUX_LIMIT', `the server has reached its limit of ${this.#options.maxConnections ?? 1024} connections`);
    else if (connection.calls.size >= this.#maxCalls)
      refusal = new SmuxError('ERR_SMUX_LIMIT', `the connection has reached its limit of ${this.#maxCalls} calls in flight`);
    const call = new ServerCall(this.#host, channel, connection, refusal);
    if (refusal === null) connection.calls.add(call);
  }

  async #shutdown(): Promise<void> {
    const server = this.#server;
    const stopped = server?.listening === true ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    const deadline = this.#clock.now() + (this.#options.closeTimeout ?? 10_000);
    while (this.#runningCalls() > 0 && this.#clock.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = this.#clock.setTimeout(resolve, Math.max(0, deadline - this.#clock.now()));
        this.#settledWaiter = () => {
          this.#clock.clearTimeout(timer);
          resolve();
        };
      });
      this.#settledWaiter = null;
    }
    for (const connection of this.#connections) {
      for (const call of [...connection.calls]) call.shutdown();
    }
    await Promise.all([...this.#connections].map((c) => closeWithin(c.session, this.#clock, 2_000)));
    if (this.#finSweep !== null) this.#clock.clearTimeout(this.#finSweep);
    this.#finSweep = null;
    this.#awaitingFin.clear();
    await stopped; // the net.Server reports closed once every connection is gone
    this._status$.next('disconnected');
  }

  #runningCalls(): number {
    let running = 0;
    for (const connection of this.#connections) for (const call of connection.calls) if (call.running) running++;
    return running;
  }

  // ── calls ──────────────────────────────────────────────────────────────────────────────────────────────

  #createCallHost(maxMessageBytes: number, maxReplyBufferBytes: number): CallHost {
    return {
      clock: this.#clock,
      maxMessageBytes,
      maxReplyBufferBytes,
      dispatchRequest: (call, message) => this.#dispatchRequest(call, message),
      dispatchEvent: (call, message) => void this.#dispatchEvent(call, message).catch((error: unknown) => this.logger.error(error)),
      encodeResponse: (id, value, flags, status) => this.#encodeResponse(id, value, flags, status),
      toRpcError: (error) => this.#toRpcError(error),
      callSettled: () => this.#settledWaiter?.(),
      awaitCallerFin: (call) => this.#awaitCallerFin(call),
      callClosed: (call) => {
        (call.connection as Connection).calls.delete(call);
        this.#awaitingFin.delete(call);
      },
    };
  }

  #dispatchRequest(call: ServerCall, message: CallMessage): void {
    if (this.#closing !== null) return call.end('ERR_SMUX_SHUTTING_DOWN', 'the server is shutting down');
    if (this.#customDeserializer || (message.flags & Flag.OPAQUE) !== 0) {
      void this.#deserialize(message).then(
        (packet) => {
          call.id ??= packet.id; // an opaque request's id is only known once deserialized
          this.#runRequest(call, packet.text, packet.data, packet.headers);
        },
        (error: unknown) => call.fail(this.#toRpcError(error)),
      );
      return;
    }
    this.#runRequest(call, message.pattern ?? '', message.body, message.headers);
  }

  #runRequest(call: ServerCall, pattern: string, data: unknown, headers: Record<string, string> | undefined): void {
    const handler = this.#route(pattern);
    if (handler === null) return call.fail(NO_MESSAGE_HANDLER, 'error');
    const ctx = createSmuxContext(call.channel, pattern, headers, call);
    if (this.onProcessingStartHook === this.#defaultStartHook && this.onProcessingEndHook === undefined) {
      void call.run(handler, data, ctx, null); // the common case: no hooks, no per-call closures
    } else {
      this.onProcessingStartHook(this.transportId, ctx, () => call.run(handler, data, ctx, this.#endHook(ctx)));
    }
  }

  async #dispatchEvent(call: ServerCall, message: CallMessage): Promise<void> {
    if (this.#closing !== null) return; // at most once: a server shutting down takes no new work
    const { text, data, headers } =
      this.#customDeserializer || (message.flags & Flag.OPAQUE) !== 0 ? await this.#deserialize(message) : plain(message);
    const handler = this.#route(text);
    if (handler === null) return void this.logger.error(NO_EVENT_HANDLER(text));
    const ctx = createSmuxContext(call.channel, text, headers, call);
    if (this.onProcessingStartHook === this.#defaultStartHook && this.onProcessingEndHook === undefined)
      return this.#runEvent(handler, data, ctx, null);
    this.onProcessingStartHook(this.transportId, ctx, () => this.#runEvent(handler, data, ctx, this.#endHook(ctx)));
  }

  /** Runs the event handlers (chained by Nest) as Nest's handleEvent does: an Observable result runs hot. */
  async #runEvent(handler: MessageHandler, data: unknown, ctx: SmuxContext, end: (() => void) | null): Promise<void> {
    try {
      const result = await handler(data, ctx);
      if (isObservable(result)) {
        const source = end === null ? result : result.pipe(finalize(end));
        connectable(source, { connector: () => new Subject(), resetOnDisconnect: false }).connect();
        return;
      }
    } catch (error) {
      this.logger.error(error);
    }
    end?.();
  }

  /** The handler of a raw pattern text, cached: Nest's lookup parses and normalises the pattern on every call. */
  #route(pattern: string): MessageHandler | null {
    const cached = this.#routes.get(pattern);
    if (cached !== undefined) return cached;
    const handler = this.getHandlerByPattern(pattern);
    // Only canonical texts are cached — the route itself (a plain string pattern, or an object pattern as Nest
    // normalises it, which is how ClientSmux sends it) — so a client cannot grow the cache with variants
    // (whitespace, key order, escapes) of a valid pattern; misses are never cached.
    if (handler !== null && this.#routes.size < MAX_CACHED_ROUTES && this.getRouteFromPattern(pattern) === pattern)
      this.#routes.set(pattern, handler);
    return handler;
  }

  async #deserialize(
    message: CallMessage,
  ): Promise<{ text: string; data: unknown; headers: Record<string, string> | undefined; id: string | undefined }> {
    const raw =
      (message.flags & Flag.OPAQUE) !== 0
        ? message.body
        : {
            pattern: (message.flags & Flag.PATTERN_JSON) !== 0 ? JSON.parse(message.pattern ?? 'null') : message.pattern,
            data: message.body,
            id: message.id,
            ...(message.headers ? { metadata: message.headers } : {}),
          };
    const packet = (await this.deserializer.deserialize(raw)) as {
      pattern: unknown;
      data: unknown;
      id?: unknown;
      metadata?: Record<string, string>;
    };
    const id = typeof packet.id === 'string' ? packet.id : message.id;
    return { text: this.getPatternAsString(packet.pattern), data: packet.data, headers: packet.metadata ?? message.headers, id };
  }

  #encodeResponse(id: string | undefined, value: unknown, flags: number, status?: string): Buffer[] {
    if (!this.#customSerializer) return encodeMessage(Kind.RESPONSE, flags, value, status === undefined ? undefined : { status });
    const packet: OutgoingResponse = { id: id ?? '' };
    if ((flags & Flag.ERROR) !== 0) packet.err = value;
    else if (value !== undefined) packet.response = value;
    if ((flags & Flag.LAST) !== 0) packet.isDisposed = true;
    if (status !== undefined) packet.status = status;
    return encodeMessage(Kind.RESPONSE, flags | Flag.OPAQUE, this.serializer.serialize(packet));
  }

  /** What the caller receives for a thrown value: Nest's default exception-filter shapes. */
  #toRpcError(error: unknown): unknown {
    if (error instanceof RpcException) {
      const value = error.getError();
      return typeof value === 'object' && value !== null ? value : { status: 'error', message: value };
    }
    this.logger.error(error);
    return { status: 'error', message: 'Internal server error' };
  }

  #endHook(ctx: SmuxContext): () => void {
    let called = false;
    return () => {
      if (called) return;
      called = true;
      this.onProcessingEndHook?.(this.transportId, ctx);
    };
  }

  /**
   * After its last message and FIN, a call waits for the caller's FIN at most `finTimeout`; one sweep on the
   * server's clock checks them all (no timer per call). A call whose own bytes are still queued is not cut off
   * while they keep draining — a slow reader is not a caller that went away.
   */
  #awaitCallerFin(call: ServerCall): void {
    call.finDue = this.#clock.now() + this.#finTimeout;
    call.finQueued = -1;
    this.#awaitingFin.add(call);
    if (this.#finSweep === null) this.#finSweep = this.#clock.setTimeout(() => this.#sweepFins(), this.#finTimeout);
  }

  #sweepFins(): void {
    this.#finSweep = null;
    const now = this.#clock.now();
    for (const call of this.#awaitingFin) {
      if (call.finDue > now) break; // insertion order is due order
      this.#awaitingFin.delete(call);
      const queued = call.channel.writableLength;
      if (!call.channel.finSent && queued !== call.finQueued) {
        call.finDue = now + this.#finTimeout; // still draining: look again later
        call.finQueued = queued;
        this.#awaitingFin.add(call);
      } else {
        call.channel.destroy();
      }
    }
    const next = this.#awaitingFin.values().next();
    if (!next.done) this.#finSweep = this.#clock.setTimeout(() => this.#sweepFins(), Math.max(1, next.value.finDue - now));
  }
}

function plain(message: CallMessage): { text: string; data: unknown; headers: Record<string, string> | undefined; id: string | undefined } {
  return { text: message.pattern ?? '', data: message.body, headers: message.headers, id: message.id };
}

/** Graceful session close, bounded: destroyed when it takes longer than `ms`. */
async function closeWithin(session: Session, clock: Clock, ms: number): Promise<void> {
  let timer: unknown = null;
  await Promise.race([session.close(), new Promise<void>((resolve) => (timer = clock.setTimeout(resolve, ms)))]);
  clock.clearTimeout(timer);
  session.destroy();
}
