import { EventEmitter } from 'node:events';
import type * as net from 'node:net';
import { Logger } from '@nestjs/common';
import { type CustomTransportStrategy, type MessageHandler, type MsPattern, Server } from '@nestjs/microservices';
import { type Clock, type Session, SmuxError } from '../smux/index.js';
import { keepingProcessAlive } from '../util/process-hold.js';
import { ReadonlyMapView } from '../util/readonly-map.js';
import type { ClientSmux } from './client-smux.js';
import type { ControlLink } from './control-link.js';
import { FinSweep } from './fin-sweep.js';
import type { ServerSmuxOptions } from './interfaces.js';
import { RateLimitedLog } from './log.js';
import { createSmuxMetrics, type MetricsRecorder, type SmuxMetrics } from './metrics.js';
import { resolveServerOptions, type ResolvedServerOptions } from './options.js';
import { createPacketCodec, type PacketCodec } from './packet-codec.js';
import type { CallHost } from './server-call-host.js';
import { ServerConnection } from './server-connection.js';
import type { ConnectionHost } from './server-connection-host.js';
import { admission, CLOSE_AT_ONCE } from './server-admission.js';
import { closeLine, ServerConnections } from './server-connections.js';
import { ServerDialler } from './server-dialler.js';
import { createListener, watchListener } from './server-listener.js';
import { CallDispatcher } from './server-dispatch.js';
import type { SmuxConnection } from './smux-connection.js';
import type { SmuxServerEvents, SmuxStatus } from './smux.events.js';
import { SMUX_TRANSPORT } from './transport-id.js';
import { tracingPending, tracingReady } from './tracing.js';

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
  readonly #dispatcher: CallDispatcher;
  readonly #callHost: CallHost;
  readonly #metrics: SmuxMetrics;
  readonly #dialler: ServerDialler | null;
  readonly #connectionHost: ConnectionHost;
  readonly #finSweep: FinSweep;
  readonly #warnings: RateLimitedLog;
  readonly #defaultStartHook: unknown;
  #dispatcherCodec!: PacketCodec;
  readonly #faces = new Map<string, SmuxConnection>(); // the open connections, by id
  readonly #facesView = new ReadonlyMapView(this.#faces); // what `connections` shows of them
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
    this.#dispatcher = this.#createDispatcher();
    const { metrics, recorder } = createSmuxMetrics('server', this.#clock);
    this.#metrics = metrics;
    this.#callHost = this.#createCallHost(recorder);
    this.#connectionHost = {
      options: this.#options,
      clock: this.#clock,
      callHost: this.#callHost,
      closing: () => this.#closing !== null,
      warn: (kind, message) => this.#warnings.warn(kind, message),
      debug: (kind, message) => this.#warnings.debug(kind, message),
      established: (connection) => {
        const face = connection.face;
        if (face === null) return; // a refused connection is never announced
        this.#faces.set(face.id, face);
        this.#events.emit('connection', face);
      },
      closed: (connection, failure) => {
        this.#connections.delete(connection);
        const face = connection.face;
        if (face === null || !this.#faces.delete(face.id)) return;
        this.#events.emit('disconnect', face, failure);
      },
      nextConnectionId: () => (++this.#lastConnectionId).toString(36),
    };
    const connectTo = this.#options.connectTo;
    this.#dialler =
      connectTo === undefined
        ? null
        : new ServerDialler(connectTo, { adopt: (session, link, remote, socket) => this.#adopt(session, link, remote, socket) });
  }

  /**
   * Starts listening — or, with `connectTo`, dialling (retried in the background until it succeeds) — then
   * `callback()`; `callback(error)` when it cannot listen (Nest's contract).
   */
  listen(callback: (error?: unknown) => void): void {
    // Calls arrive once `@opentelemetry/api` was looked for, so the first ones are traced too (tracing.ts).
    if (tracingPending()) return void tracingReady().then(() => this.listen(callback));
    const dialler = this.#dialler;
    if (dialler !== null) {
      dialler.client.status.subscribe((status) => this._status$.next(status as SmuxStatus));
      dialler.start();
      this.logger.log(`Dialling ${dialler.where} (nestjs-smux: its side calls this server's handlers over the connection)`);
      return callback();
    }
    const server = createListener(this.#options, (socket) => this.#accept(socket));
    this.#server = server;
    for (const [event, listener] of this.#pendingListeners.splice(0)) this.on(event as keyof SmuxServerEvents, listener);
    watchListener(server, (message) => this.#warnings.warn('TLS', message));
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
        `Listening on ${where} (nestjs-smux, smux protocol version ${version}, ${this.#options.tls === undefined ? 'plain TCP' : 'TLS'})`,
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
   * `ERR_SMUX_SHUTTING_DOWN`, and so do new calls and events of its own on its connections), lets running calls — and
   * this server's own calls to its peers (`connection.send()`, `server.client`), work in progress too, and its own
   * events not sent yet (`connection.emit()`) — finish within `closeTimeout`, ends the rest with
   * `ERR_SMUX_SHUTTING_DOWN` (ours are cancelled on the peer), then closes every connection. Idempotent. The process
   * stays alive until it resolves.
   */
  close(): Promise<void> {
    // The close is bounded by the clock's unref'd timers, and a connection held at maxEventsPerConnection is not read
    // (its socket keeps nothing alive either): a process with nothing else alive exited before close() resolved, and
    // the code after `await app.close()` never ran (found by a new-user trial).
    this.#closing ??= keepingProcessAlive(() => this.#shutdown());
    return this.#closing;
  }

  /**
   * Listens to a connection arriving (`connection`, with its {@link SmuxConnection}) or ending (`disconnect`), a
   * session starting (`session`), or the listening `net.Server`'s `listening`, `close` and `error`.
   */
  on<K extends keyof SmuxServerEvents>(event: K, callback: SmuxServerEvents[K]): void {
    if (event === 'session' || event === 'connection' || event === 'disconnect')
      this.#events.on(event, callback as (...args: unknown[]) => void);
    else if (this.#dialler !== null)
      throw new SmuxError(
        'ERR_SMUX_INVALID_ARGUMENT',
        `a ServerSmux with connectTo has no net.Server: '${event}' never comes (see server.client)`,
      );
    else if (this.#server === null) this.#pendingListeners.push([event, callback]);
    else this.#server.on(event, callback as (...args: unknown[]) => void);
  }

  /** The open connections by id: call a peer that serves calls with `connections.get(id).send(…)`. */
  get connections(): ReadonlyMap<string, SmuxConnection> {
    return this.#facesView;
  }

  /** Counters and latency histograms of the calls this server served (README "Metrics"): `server.metrics.snapshot()`. */
  get metrics(): SmuxMetrics {
    return this.#metrics;
  }

  /** The listening `net.Server` (a `tls.Server` with TLS). @throws SmuxError `ERR_SMUX_UNAVAILABLE` before `listen()`, and with `connectTo` */
  unwrap<T = net.Server>(): T {
    if (this.#dialler !== null)
      throw new SmuxError('ERR_SMUX_UNAVAILABLE', 'this ServerSmux dials out (connectTo): see server.client.unwrap()');
    if (this.#server === null) throw new SmuxError('ERR_SMUX_UNAVAILABLE', 'ServerSmux is not listening: call listen() first');
    return this.#server as T;
  }

  /**
   * With `connectTo`: the ClientProxy of the connection this server dials — this side's own calls to the other
   * side, over the same connection (it waits for, or fails fast without, a connection as any ClientSmux).
   * @throws SmuxError `ERR_SMUX_UNAVAILABLE` on a server that listens
   */
  get client(): ClientSmux {
    if (this.#dialler === null)
      throw new SmuxError('ERR_SMUX_UNAVAILABLE', 'this ServerSmux listens: only one with connectTo has a client');
    return this.#dialler.client;
  }

  /** Registers a handler (Nest calls this); the per-pattern route cache starts over. */
  override addHandler(pattern: unknown, callback: MessageHandler, isEventHandler?: boolean, extras?: Record<string, unknown>): void {
    super.addHandler(pattern, callback, isEventHandler, extras);
    this.#dispatcher.clearRoutes();
  }

  // ── connections ────────────────────────────────────────────────────────────────────────────────────────

  #accept(socket: net.Socket): void {
    if (this.#closing !== null) return void socket.destroy();
    const refusal = admission(socket, this.#connections, this.#options, this.#warnings);
    if (refusal === CLOSE_AT_ONCE) return void socket.destroy();
    this.#register(new ServerConnection(this.#connectionHost, { accepted: socket }, refusal));
  }

  /** A session this server dialled (`connectTo`) is up: the other side's calls on it are served like any. */
  #adopt(session: Session, link: () => ControlLink | null, remote: string, socket: net.Socket): void {
    const connection = new ServerConnection(this.#connectionHost, { dialled: session, socket, remote, link }, null);
    this.#register(connection);
    connection.announce();
  }

  /** A new connection; it is announced (`'connection'`, `connections`) once established: {@link ServerConnection.announce}. */
  #register(connection: ServerConnection): void {
    this.#connections.add(connection);
    this.#events.emit('session', connection.session);
  }

  async #shutdown(): Promise<void> {
    this.#dialler?.halt(); // no redialling while the calls finish
    const server = this.#server;
    const stopped = server?.listening === true ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    this.#connections.stop();
    this.#connections.announceDrain('the server is shutting down'); // clients move their new calls elsewhere
    const summary = await this.#connections.drain(this.#options.closeTimeout, this.#dialler);
    this.logger.log(closeLine(summary));
    this.#finSweep.stop();
    this.#warnings.close();
    await this.#dialler?.stop();
    await stopped; // the net.Server reports closed once every connection is gone
    this._status$.next('disconnected');
  }

  // ── calls ──────────────────────────────────────────────────────────────────────────────────────────────

  #createDispatcher(): CallDispatcher {
    const server = this; // eslint-disable-line @typescript-eslint/no-this-alias -- the face's members read the server's protected state
    this.#dispatcherCodec = createPacketCodec(this.#options.serializer !== undefined || this.#options.deserializer !== undefined, {
      serializer: this.serializer,
      deserializer: this.deserializer,
      normalizePattern: (pattern) => this.normalizePattern(pattern as MsPattern),
      patternAsString: (pattern) => this.getPatternAsString(pattern),
    });
    return new CallDispatcher({
      transportId: this.transportId,
      logger: this.logger,
      rateLimited: this.#warnings,
      codec: this.#dispatcherCodec,
      closing: () => server.#closing !== null,
      handlerFor: (pattern) => server.getHandlerByPattern(pattern),
      routeOf: (pattern) => server.getRouteFromPattern(pattern),
      // Nest's default start hook only runs the handler: the common case then takes no per-call closure.
      startHook: () => (server.onProcessingStartHook === server.#defaultStartHook ? null : server.onProcessingStartHook.bind(server)),
      endHook: () => server.onProcessingEndHook,
    });
  }

  #createCallHost(metrics: MetricsRecorder): CallHost {
    return {
      metrics,
      clock: this.#clock,
      maxMessageBytes: this.#options.maxMessageBytes,
      maxReplyBufferBytes: this.#options.maxReplyBufferBytes,
      dispatchRequest: (call, message) => {
        (call.connection as ServerConnection).announce(); // a peer that said no hello: before its first call
        this.#dispatcher.dispatchRequest(call, message);
      },
      dispatchEvent: (call, message, size) => {
        const connection = call.connection as ServerConnection;
        connection.announce();
        this.#dispatcher.dispatchEvent(call, message, size, connection.events); // logs its failures
      },
      openControl: (call, message) => (call.connection as ServerConnection).answerHello(call, message),
      controlMessage: (call, message) => (call.connection as ServerConnection).controlMessage(message),
      codec: this.#dispatcherCodec,
      toRpcError: (error) => this.#dispatcher.toRpcError(error),
      callStopped: () => this.#connections.callSettled(),
      callSettled: (call) => {
        (call.connection as ServerConnection).callDone(call);
        this.#connections.callSettled();
      },
      awaitCallerFin: (call, now) => this.#finSweep.add(call, now),
      callClosed: (call) => {
        (call.connection as ServerConnection).callClosed(call);
        this.#finSweep.delete(call);
      },
      replyUnencodable: (call, error) =>
        this.logger.error(
          `A reply to ${(call.connection as ServerConnection).remote} could not be encoded`,
          (error as Error)?.stack ?? String(error),
        ),
      limitReached: (call, error) =>
        this.#warnings.warn('limit', `A call from ${(call.connection as ServerConnection).remote} failed: ${error.message}`),
    };
  }
}
