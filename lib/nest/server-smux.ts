import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { Logger } from '@nestjs/common';
import { type CustomTransportStrategy, type MessageHandler, type MsPattern, RpcException, Server } from '@nestjs/microservices';
import { connectable, finalize, isObservable, Subject } from 'rxjs';
import { type Clock, SmuxError } from '../smux/index.js';
import type { CallMessage } from './call-codec.js';
import { ServerConnections } from './server-connections.js';
import { FEED_EXTRAS_KEY } from './feed.js';
import { FinSweep } from './fin-sweep.js';
import type { ServerSmuxOptions } from './interfaces.js';
import { RateLimitedLog } from './log.js';
import { createPacketCodec, type DecodedRequest } from './packet-codec.js';
import { resolveServerOptions, type ResolvedServerOptions } from './options.js';
import type { CallHost, ServerCall } from './server-call.js';
import { type ConnectionHost, ServerConnection } from './server-connection.js';
import { connectionFailure, type SmuxConnection } from './smux-connection.js';
import { createSmuxContext, type SmuxContext } from './smux.context.js';
import type { SmuxServerEvents, SmuxStatus } from './smux.events.js';
import { watchTlsFailures } from './tls-failures.js';
import { SMUX_TRANSPORT } from './transport-id.js';

// Nest's own texts (not exported from @nestjs/microservices' entry point).
const NO_MESSAGE_HANDLER = 'There is no matching message handler defined in the remote service.';
const NO_EVENT_HANDLER = (pattern: string) => `There is no matching event handler defined in the remote service. Event pattern: ${pattern}`;
/** Cached routes at most (one per distinct pattern the app handles; the cap only guards against misuse). */
const MAX_CACHED_ROUTES = 4096;

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
  /** Nest's logger, with this transport's context. */
  protected override readonly logger = new Logger('ServerSmux');
  readonly #options: ResolvedServerOptions;
  readonly #clock: Clock;
  readonly #events = new EventEmitter();
  readonly #pendingListeners: Array<[string, (...args: never[]) => void]> = [];
  readonly #connections: ServerConnections;
  readonly #routes = new Map<string, MessageHandler>();
  readonly #callHost: CallHost;
  readonly #connectionHost: ConnectionHost;
  readonly #finSweep: FinSweep;
  readonly #warnings: RateLimitedLog;
  readonly #defaultStartHook: unknown;
  readonly #faces = new Map<string, SmuxConnection>(); // the open connections, by id
  #lastConnectionId = 0;
  #server: net.Server | null = null;
  #closing: Promise<void> | null = null;

  /**
   * @param options - where to listen, TLS, smux config, limits, (de)serializers
   * @throws SmuxError `ERR_SMUX_INVALID_CONFIG` naming the option, for an unknown option or a bad value
   */
  constructor(options: ServerSmuxOptions = {}) {
    super();
    this.#options = resolveServerOptions(options);
    this.#clock = this.#options.clock;
    this.initializeSerializer(options);
    this.initializeDeserializer(options);
    this.#defaultStartHook = this.onProcessingStartHook;
    this.#finSweep = new FinSweep(this.#clock, this.#options.finTimeout);
    this.#connections = new ServerConnections(this.#clock);
    this.#warnings = new RateLimitedLog(this.logger, this.#clock);
    this.#callHost = this.#createCallHost();
    const server = this; // eslint-disable-line @typescript-eslint/no-this-alias -- the host's getter needs the server
    this.#connectionHost = {
      options: this.#options,
      clock: this.#clock,
      callHost: this.#callHost,
      get closing() {
        return server.#closing !== null;
      },
      warn: (kind, message) => this.#warnings.warn(kind, message),
      debug: (message) => this.logger.debug(message),
      closed: (connection, error) => {
        this.#connections.delete(connection);
        const face = connection.face;
        if (face === null || !this.#faces.delete(face.id)) return;
        this.#events.emit('disconnect', face, connectionFailure(error));
      },
      nextConnectionId: () => (++this.#lastConnectionId).toString(36),
    };
  }

  /** Starts listening; `callback()` on success, `callback(error)` on failure (Nest's contract). */
  listen(callback: (error?: unknown) => void): void {
    const { tls: tlsOptions } = this.#options;
    const accept = (socket: net.Socket): void => this.#accept(socket);
    const server = tlsOptions !== undefined ? tls.createServer(tlsOptions, accept) : net.createServer(accept);
    this.#server = server;
    for (const [event, listener] of this.#pendingListeners.splice(0)) this.on(event as keyof SmuxServerEvents, listener);
    if (server instanceof tls.Server) watchTlsFailures(server, (message) => this.#warnings.warn('TLS', message));
    const onError = (error: Error): void => {
      server.off('listening', onListening);
      callback(error);
    };
    const onListening = (): void => {
      server.off('error', onError);
      server.on('error', (error) => this.logger.error(error));
      const address = server.address();
      const where = typeof address === 'string' ? address : `${address?.address}:${address?.port}`;
      const version = this.#options.pinnedVersion ?? 'auto';
      this.logger.log(
        `Listening on ${where} (nestjs-smux, smux protocol version ${version}, ${tlsOptions === undefined ? 'plain TCP' : 'TLS'})`,
      );
      this._status$.next('connected');
      callback();
    };
    server.once('error', onError).once('listening', onListening);
    const { address } = this.#options;
    if ('path' in address) server.listen(address.path);
    else server.listen(address.port, address.host);
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

  /**
   * Listens to a connection arriving (`connection`, with its {@link SmuxConnection}) or ending (`disconnect`), a
   * session starting (`session`), or the listening `net.Server`'s `listening`, `close` and `error`.
   */
  on<K extends keyof SmuxServerEvents>(event: K, callback: SmuxServerEvents[K]): void {
    if (event === 'session' || event === 'connection' || event === 'disconnect')
      this.#events.on(event, callback as (...args: unknown[]) => void);
    else if (this.#server === null) this.#pendingListeners.push([event, callback]);
    else this.#server.on(event, callback as (...args: unknown[]) => void);
  }

  /** The open connections by id: call a peer that serves calls with `connections.get(id).send(…)`. */
  get connections(): ReadonlyMap<string, SmuxConnection> {
    return this.#faces;
  }

  /** The listening `net.Server` (a `tls.Server` with TLS). @throws SmuxError `ERR_SMUX_UNAVAILABLE` before `listen()` */
  unwrap<T = net.Server>(): T {
    if (this.#server === null) throw new SmuxError('ERR_SMUX_UNAVAILABLE', 'ServerSmux is not listening: call listen() first');
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
    const refusal = this.#admit(socket.remoteAddress ?? 'unix', `${socket.remoteAddress}:${socket.remotePort}`);
    const connection = new ServerConnection(this.#connectionHost, socket, refusal);
    this.#connections.add(connection);
    this.#events.emit('session', connection.session);
    const face = connection.face;
    if (face === null) return;
    this.#faces.set(face.id, face);
    this.#events.emit('connection', face);
  }

  /**
   * A slot for a new connection: within `maxConnections` and `maxConnectionsPerAddress`, or the slot of an idle
   * connection (evicted); otherwise the refusal its streams are answered with.
   */
  #admit(address: string, remote: string): SmuxError | null {
    const { maxConnections, maxConnectionsPerAddress, evictIdleAfter } = this.#options;
    const connections = this.#connections;
    let why: string | null = null;
    if (connections.size >= maxConnections && !connections.evictIdle(evictIdleAfter)) {
      why = `${connections.size} connections open (maxConnections ${maxConnections})`;
    } else if (connections.from(address) >= maxConnectionsPerAddress && !connections.evictIdle(evictIdleAfter, address)) {
      why = `${connections.from(address)} connections from ${address} (maxConnectionsPerAddress ${maxConnectionsPerAddress})`;
    }
    if (why === null) return null;
    this.#warnings.warn('refused', `Refused a connection from ${remote}: ${why}, none idle for ${evictIdleAfter} ms`);
    return new SmuxError('ERR_SMUX_LIMIT', `the server has reached its connection limit: ${why}`, { retryable: true });
  }

  async #shutdown(): Promise<void> {
    const server = this.#server;
    const stopped = server?.listening === true ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    this.#connections.stop();
    this.#connections.announceDrain('the server is shutting down'); // clients move their new calls elsewhere
    const { connections, ended } = await this.#connections.drain(this.#options.closeTimeout);
    const cut = ended === 0 ? 'every call finished' : `${ended} calls still running were ended with ERR_SMUX_SHUTTING_DOWN`;
    this.logger.log(`Closed ${connections} connection${connections === 1 ? '' : 's'}: ${cut}`);
    this.#finSweep.stop();
    this.#warnings.close();
    await stopped; // the net.Server reports closed once every connection is gone
    this._status$.next('disconnected');
  }

  // ── calls ──────────────────────────────────────────────────────────────────────────────────────────────

  #createCallHost(): CallHost {
    return {
      clock: this.#clock,
      maxMessageBytes: this.#options.maxMessageBytes,
      maxReplyBufferBytes: this.#options.maxReplyBufferBytes,
      dispatchRequest: (call, message) => this.#dispatchRequest(call, message),
      dispatchEvent: (call, message) => void this.#dispatchEvent(call, message).catch((error: unknown) => this.logger.error(error)),
      openControl: (call, message) => (call.connection as ServerConnection).answerHello(call, message),
      controlMessage: (call, message) => (call.connection as ServerConnection).controlMessage(message),
      codec: createPacketCodec(this.#options.serializer !== undefined || this.#options.deserializer !== undefined, {
        serializer: this.serializer,
        deserializer: this.deserializer,
        normalizePattern: (pattern) => this.normalizePattern(pattern as MsPattern),
        patternAsString: (pattern) => this.getPatternAsString(pattern),
      }),
      toRpcError: (error) => this.#toRpcError(error),
      callSettled: (call) => {
        (call.connection as ServerConnection).callDone(call);
        this.#connections.callSettled();
      },
      awaitCallerFin: (call) => this.#finSweep.add(call),
      callClosed: (call) => {
        (call.connection as ServerConnection).calls.delete(call);
        this.#finSweep.delete(call);
      },
    };
  }

  #dispatchRequest(call: ServerCall, message: CallMessage): void {
    if (this.#closing !== null) return call.end(new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'the server is shutting down'));
    let request: DecodedRequest | Promise<DecodedRequest>;
    try {
      request = this.#callHost.codec.decodeCall(message);
    } catch (error) {
      return call.fail(this.#toRpcError(error));
    }
    if (!(request instanceof Promise)) return this.#runRequest(call, request);
    request.then(
      (decoded) => {
        call.id ??= decoded.id; // an opaque request's id is only known once deserialized
        this.#runRequest(call, decoded);
      },
      (error: unknown) => call.fail(this.#toRpcError(error)),
    );
  }

  #runRequest(call: ServerCall, { pattern, data: requestData, headers }: DecodedRequest): void {
    const data = call.input ?? requestData; // a streamed request's payload is the stream of its items
    const handler = this.#route(pattern);
    if (handler === null) return call.fail(NO_MESSAGE_HANDLER, 'error');
    const ctx = createSmuxContext(call.channel, pattern, headers, call);
    const feed = (handler.extras?.[FEED_EXTRAS_KEY] as { bufferSize: number } | undefined) ?? null;
    if (this.onProcessingStartHook === this.#defaultStartHook && this.onProcessingEndHook === undefined) {
      void call.run(handler, data, ctx, null, feed); // the common case: no hooks, no per-call closures
    } else {
      this.onProcessingStartHook(this.transportId, ctx, () => call.run(handler, data, ctx, this.#endHook(ctx), feed));
    }
  }

  async #dispatchEvent(call: ServerCall, message: CallMessage): Promise<void> {
    if (this.#closing !== null) return; // at most once: a server shutting down takes no new work
    const { pattern, data, headers } = await this.#callHost.codec.decodeCall(message);
    const handler = this.#route(pattern);
    if (handler === null) return void this.logger.error(NO_EVENT_HANDLER(pattern));
    const ctx = createSmuxContext(call.channel, pattern, headers, call);
    if (this.onProcessingStartHook === this.#defaultStartHook && this.onProcessingEndHook === undefined)
      return this.#runEvent(handler, data, ctx, null);
    this.onProcessingStartHook(this.transportId, ctx, () => this.#runEvent(handler, data, ctx, this.#endHook(ctx)));
  }

  /** Runs the event handlers (chained by Nest) as Nest's handleEvent does: an Observable result runs hot. */
  async #runEvent(handler: MessageHandler, data: unknown, ctx: SmuxContext, end: (() => void) | null): Promise<void> {
    try {
      const result: unknown = await handler(data, ctx);
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
}
