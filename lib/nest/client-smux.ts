import { EventEmitter } from 'node:events';
import { Logger } from '@nestjs/common';
import { ClientProxy, type MsPattern, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import { connectable, defer, Observable, Subject, throwError } from 'rxjs';
import { type Session, SmuxError } from '../smux/index.js';
import { Flag, Kind } from './call-codec.js';
import { CallScheduler, toSmuxError } from './call-scheduler.js';
import { ClientCall, type ClientCallHost } from './client-call.js';
import { ClientRawCall } from './client-raw-call.js';
import type { SmuxConnectionInfo } from './client-lane.js';
import { ConnectorPool } from './connector-pool.js';
import type { ClientSmuxOptions, SmuxDuplexOptions } from './interfaces.js';
import { RateLimitedLog } from './log.js';
import { createPacketCodec } from './packet-codec.js';
import { SmuxDuplex } from './raw-duplex.js';
import { isSource } from './sources.js';
import { resolveClientOptions, type ResolvedClientOptions } from './options.js';
import { SmuxRecord } from './smux.record-builder.js';
import type { SmuxClientEvents } from './smux.events.js';

/**
 * The NestJS client of {@link ServerSmux}: every `send()` and `emit()` runs on its own smux stream over one
 * connection, opened lazily on first use — or over several (`hosts`, `dns`, `connectionsPerAddress`), each call
 * on the one with fewer calls in flight of two picked at random. While there is no connection, calls fail at once
 * with the retryable `ERR_SMUX_UNAVAILABLE` (or wait, with `waitForReady`); reconnection goes on in the background.
 *
 * ```ts
 * ClientsModule.register([smuxClient({ name: 'MATH', options: { port: 4000 } })]);
 * ```
 */
export class ClientSmux extends ClientProxy<SmuxClientEvents, string> {
  /** Nest's logger, with this transport's context. */
  protected readonly logger = new Logger('ClientSmux');
  readonly #options: ResolvedClientOptions;
  readonly #host: ClientCallHost;
  readonly #events = new EventEmitter();
  readonly #pool: ConnectorPool;
  readonly #scheduler: CallScheduler;
  readonly #warnings: RateLimitedLog;
  #nextId = 0;
  #cutOff = 0; // calls in flight when the connection died (for the log line)

  /**
   * @param options - where to connect, TLS, smux config, default timeout, limits, (de)serializers
   * @throws SmuxError `ERR_SMUX_INVALID_CONFIG` naming the option, for an unknown option or a bad value
   */
  constructor(options: ClientSmuxOptions = {}) {
    super();
    const resolved = resolveClientOptions(options);
    this.#options = resolved;
    this.initializeSerializer(options);
    this.initializeDeserializer(options);
    this.#warnings = new RateLimitedLog(this.logger, resolved.clock);
    const pool = new ConnectorPool(resolved, {
      ready: (session, where) => this.#ready(session, where),
      failed: (error, where) => this.#failed(error, where),
      lost: (session, error, where) => this.#lost(session, error, where),
      status: (status) => this._status$.next(status),
      resolveFailed: (error, names, kept) =>
        this.#warnings.warn('dns', `Could not resolve ${names}: ${error.message} (keeping the ${kept} addresses found before)`),
      changed: (added, removed) => this.logger.debug?.(`DNS: ${[...added.map((a) => `+${a}`), ...removed.map((r) => `-${r}`)].join(' ')}`),
    });
    this.#pool = pool;
    const scheduler = new CallScheduler(pool, resolved);
    this.#scheduler = scheduler;
    this.#host = {
      clock: resolved.clock,
      maxMessageBytes: resolved.maxMessageBytes,
      maxSourceBufferBytes: resolved.maxSourceBufferBytes,
      codec: createPacketCodec(resolved.serializer !== undefined || resolved.deserializer !== undefined, {
        serializer: this.serializer,
        deserializer: this.deserializer,
        normalizePattern: (pattern) => this.normalizePattern(pattern as MsPattern),
        patternAsString: (pattern) => String(pattern),
      }),
      launch: (call) => scheduler.launch(call),
      cutOff: () => void this.#cutOff++,
      settled: (call) => scheduler.release(call),
      get connectError() {
        return pool.lastError;
      },
    };
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
    const closed = new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the client was closed');
    this.#scheduler.close(closed);
    await this.#pool.close();
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

  /**
   * A request/response call. It skips `ClientProxy.send()`'s per-call `defer(connect)` + `mergeMap`; what the
   * subscriber sees is the same (values, then completion or the error).
   */
  override send<TResult = unknown, TInput = unknown>(pattern: unknown, data: TInput): Observable<TResult> {
    if (pattern === null || pattern === undefined || data === null || data === undefined) {
      return throwError(
        () =>
          new SmuxError('ERR_SMUX_INVALID_ARGUMENT', 'send() needs a pattern and data that are not null or undefined (as Nest requires)'),
      );
    }
    return new Observable<TResult>((observer) => this.#start(this.createObserver(observer), pattern, data) ?? undefined);
  }

  /**
   * An event, hot as Nest's `emit()` (it is sent whether or not the result is subscribed), without its implicit
   * `connect()`: while there is no connection the event fails fast like a call, instead of cutting the reconnect
   * backoff short every time.
   */
  override emit<TResult = unknown, TInput = unknown>(pattern: unknown, data: TInput): Observable<TResult> {
    if (pattern === null || pattern === undefined || data === null || data === undefined) {
      return throwError(
        () =>
          new SmuxError('ERR_SMUX_INVALID_ARGUMENT', 'emit() needs a pattern and data that are not null or undefined (as Nest requires)'),
      );
    }
    const packet = typeof this.createPacket === 'function' ? this.createPacket(pattern, data) : { pattern, data };
    const source = connectable(
      defer(() => this.dispatchEvent<TResult>(packet)),
      { connector: () => new Subject<TResult>(), resetOnDisconnect: false },
    );
    source.connect();
    return source;
  }

  /**
   * Opens a byte stream to a `@MessagePattern` handler, which reads and writes it through `ctx.getDuplex()`:
   * returns a Node `Duplex` at once (the connection opens lazily; failures arrive as `'error'` with a `SmuxError`,
   * or with the handler's error as Nest delivers it). The stream's window is the backpressure and
   * `stream.pipeline()` works end to end; each side ends its writable side with `end()`, and the call is complete
   * once both did. `destroy()` before that cancels the call (the handler's Duplex errors with
   * `ERR_SMUX_CANCELLED`).
   *
   * @param pattern - the handler's pattern
   * @param data - the request data (`@Payload()`), null when absent
   * @param options - headers, a deadline for the whole transfer, waiting for a connection
   */
  openDuplex(pattern: unknown, data: unknown = null, options: SmuxDuplexOptions = {}): SmuxDuplex {
    const duplex = new SmuxDuplex(this.#options.smux.streamHighWaterMark ?? 64 * 1024);
    const packet: ReadPacket & { metadata?: Record<string, string> } =
      typeof this.createPacket === 'function' ? this.createPacket(pattern, data) : { pattern, data };
    const headers = packet.metadata === undefined ? options.headers : { ...packet.metadata, ...options.headers };
    const timeout = options.timeout ?? 0;
    let request: Buffer[];
    try {
      if (pattern === null || pattern === undefined) throw new SmuxError('ERR_SMUX_INVALID_ARGUMENT', 'openDuplex() needs a pattern');
      const id = (++this.#nextId).toString(36);
      request = this.#host.codec.encodeCall(Kind.REQUEST, {
        pattern,
        data,
        id,
        headers,
        timeout: timeout > 0 ? timeout : undefined,
        flags: Flag.RAW,
      });
    } catch (error) {
      process.nextTick(() => duplex.fail(toSmuxError(error, 'the request could not be encoded')));
      return duplex;
    }
    this.#scheduler.schedule(new ClientRawCall(this.#host, duplex, request, timeout, options.waitForReady ?? this.#options.waitForReady));
    return duplex;
  }

  /** Nest's publish contract, for code that goes through `ClientProxy`'s own paths; `send()` does not. */
  protected publish(packet: ReadPacket, callback: (packet: WritePacket) => void): () => void {
    const call = this.#start(callback, packet.pattern, packet.data, packet);
    return () => call?.unsubscribe();
  }

  /**
   * An event: EVENT then FIN on a new stream. At most once: resolves when the event and its FIN have been
   * handed to the socket; rejects with `ERR_SMUX_UNAVAILABLE` when there is no connection (unless it waits for
   * ready), or when the connection is lost before that.
   */
  protected async dispatchEvent<T = unknown>(packet: ReadPacket): Promise<T> {
    const { data, headers, waitForReady } = unwrapRecord(
      packet.data,
      (packet as ReadPacket & { metadata?: Record<string, string> }).metadata,
    );
    if (isSource(data))
      throw new SmuxError('ERR_SMUX_INVALID_ARGUMENT', 'an event cannot stream: emit() takes a value (use send() to stream)');
    const buffers = this.#host.codec.encodeCall(Kind.EVENT, { pattern: packet.pattern, data, headers });
    const session = await this.#scheduler.sessionFor(waitForReady ?? this.#options.waitForReady);
    const channel = session.openChannel();
    return new Promise<T>((resolve, reject) => {
      channel.setHandler({
        onData: () => undefined,
        onEnd: () => undefined,
        onDrain: () => {
          if (channel.finSent) channel.destroy(); // sent; the server's FIN would find nothing to close
        },
        // Settled on the next turn: a loop of awaited emits must let timers and reads run (the socket takes the
        // bytes at once while the kernel has room, so settling at once would never yield).
        onClose: (error) =>
          channel.finSent
            ? setImmediate(resolve, undefined as T)
            : reject(error ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed before the event was sent')),
      });
      for (const buffer of buffers) channel.write(buffer);
      channel.end();
    });
  }

  // ── calls ──────────────────────────────────────────────────────────────────────────────────────────────

  #start(callback: (packet: WritePacket) => void, pattern: unknown, rawData: unknown, nestPacket?: ReadPacket): ClientCall | null {
    const packet: ReadPacket & { metadata?: Record<string, string> } =
      nestPacket ?? (typeof this.createPacket === 'function' ? this.createPacket(pattern, rawData) : { pattern, data: rawData });
    const { data, headers, timeout: recordTimeout, waitForReady } = unwrapRecord(packet.data, packet.metadata);
    const timeout = recordTimeout ?? this.#options.timeout;
    const id = (++this.#nextId).toString(36);
    const timeoutField = timeout > 0 ? timeout : undefined;
    // A source (Observable, AsyncIterable, Readable) is a streamed request: its items follow as DATA … END.
    const source = isSource(data) ? data : null;
    let request: Buffer[];
    try {
      request = this.#host.codec.encodeCall(Kind.REQUEST, {
        pattern: packet.pattern,
        data: source === null ? data : undefined,
        id,
        headers,
        timeout: timeoutField,
        flags: source === null ? 0 : Flag.STREAM,
      });
      this.#scheduler.checkSize(request);
    } catch (error) {
      callback({ err: toSmuxError(error, 'the request could not be encoded'), isDisposed: true } as WritePacket);
      return null;
    }
    const call = new ClientCall(this.#host, callback, request, timeout, waitForReady ?? this.#options.waitForReady, source);
    this.#scheduler.schedule(call);
    return call;
  }

  // ── connection events ──────────────────────────────────────────────────────────────────────────────────

  #ready(session: Session, where: string): void {
    this.logger.debug?.(`Connected to ${where} (smux protocol version ${session.version})`);
    this.#events.emit('connect', session);
    this.#scheduler.connected();
  }

  #failed(error: Error, where: string): void {
    this.#warnings.warn('connect', `Could not connect to ${where}: ${error.message} (retrying in the background)`);
    if (this.#events.listenerCount('error') > 0) this.#events.emit('error', error);
    this.#scheduler.attemptFailed();
  }

  #lost(_session: Session, error: SmuxError | undefined, where: string): void {
    this.#scheduler.lost();
    // A server closing its end on purpose (shutdown, a drained connection) ends the session without a cause and
    // with its calls answered; a dead process or a cut network leaves calls in flight, or a socket error.
    const inFlight = this.#cutOff;
    this.#cutOff = 0;
    if (error !== undefined && (error.cause !== undefined || error.code !== 'ERR_SMUX_SESSION_CLOSED' || inFlight > 0)) {
      const calls = inFlight > 0 ? ` (${inFlight} calls in flight failed with it)` : '';
      this.#warnings.warn('connection', `Connection to ${where} lost: ${error.message}${calls}`);
    } else {
      this.logger.debug?.(`Connection to ${where} closed`);
    }
    this.#events.emit('close', error);
  }
}

/** Unwraps a {@link SmuxRecord} and merges its headers with Nest 12's dispatch-hook metadata. */
function unwrapRecord(
  value: unknown,
  metadata: Record<string, string> | undefined,
): { data: unknown; headers: Record<string, string> | undefined; timeout: number | undefined; waitForReady: boolean | undefined } {
  if (!(value instanceof SmuxRecord)) return { data: value, headers: metadata, timeout: undefined, waitForReady: undefined };
  const { headers, timeout, waitForReady } = value.options;
  return { data: value.data, headers: metadata === undefined ? headers : { ...metadata, ...headers }, timeout, waitForReady };
}
