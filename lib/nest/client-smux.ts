import { EventEmitter } from 'node:events';
import { Logger } from '@nestjs/common';
import { ClientProxy, type MsPattern, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import { connectable, defer, Observable, Subject, throwError } from 'rxjs';
import { type Session, SmuxError } from '../smux/index.js';
import { Fifo } from '../util/fifo.js';
import { Admission } from './admission.js';
import { Flag, Kind, PREFIX_SIZE } from './call-codec.js';
import { ClientCall, type ClientCallHost, type PendingCall } from './client-call.js';
import { ClientRawCall } from './client-raw-call.js';
import { Connector } from './connector.js';
import type { ClientSmuxOptions, SmuxDuplexOptions } from './interfaces.js';
import { RateLimitedLog } from './log.js';
import { createPacketCodec } from './packet-codec.js';
import { SmuxDuplex } from './raw-duplex.js';
import { isSource } from './sources.js';
import { resolveClientOptions, type ResolvedClientOptions } from './options.js';
import { SmuxRecord } from './smux.record-builder.js';
import type { SmuxClientEvents } from './smux.events.js';

/** Something waiting for a connection: a call, an event, a `connect()`. */
interface ConnectionWaiter {
  readonly waitForReady: boolean;
  /** True once it no longer waits (settled elsewhere). */
  gone(): boolean;
  connected(session: Session): void;
  unavailable(error: SmuxError): void;
}

/**
 * The NestJS client of {@link ServerSmux}: every `send()` and `emit()` runs on its own smux stream over one
 * connection, opened lazily on first use. While there is no connection, calls fail at once with the retryable
 * `ERR_SMUX_UNAVAILABLE` (or wait, with `waitForReady`); reconnection goes on in the background.
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
  readonly #admission: Admission;
  readonly #connector: Connector;
  readonly #awaiting = new Fifo<ConnectionWaiter>();
  readonly #warnings: RateLimitedLog;
  #nextId = 0;
  #waitingCalls = 0; // calls waiting for a connection (they hold no slot yet)
  #keepAlive: NodeJS.Timeout | null = null; // holds the process while anything waits for a connection
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
    this.#admission = new Admission(resolved.maxConcurrentCalls, resolved.maxQueuedCalls);
    this.#warnings = new RateLimitedLog(this.logger, resolved.clock);
    const connector = new Connector(resolved, {
      ready: (session) => this.#ready(session),
      failed: (error) => this.#failed(error),
      lost: (session, error) => this.#lost(session, error),
      status: (status) => this._status$.next(status),
    });
    this.#connector = connector;
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
      launch: (call) => this.#launch(call),
      cutOff: () => void this.#cutOff++,
      settled: (call) => {
        this.#admission.release(call);
        this.#connector.retireIdle();
      },
      get connectError() {
        return connector.lastError;
      },
    };
  }

  /**
   * Connects, unless connected (concurrent callers share the attempt); a backoff wait is cut short. Resolves with
   * the session, or rejects with `ERR_SMUX_UNAVAILABLE` whose `cause` is why the attempt failed.
   */
  connect(): Promise<Session> {
    const session = this.#connector.session;
    return session !== null ? Promise.resolve(session) : this.#nextSession(false);
  }

  /**
   * Closes the connection gracefully (queued events are flushed); calls still in flight, queued or waiting for
   * a connection fail with `ERR_SMUX_SESSION_CLOSED`, and reconnecting stops. A later call connects again.
   */
  async close(): Promise<void> {
    const closed = new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the client was closed');
    for (const call of this.#admission.drain()) (call as PendingCall).fail(closed);
    for (const waiter of this.#awaiting.drain()) if (!waiter.gone()) waiter.unavailable(closed);
    this.#holdProcess();
    await this.#connector.close();
    this.#warnings.close();
  }

  /** The current smux session. @throws SmuxError `ERR_SMUX_UNAVAILABLE` when not connected */
  unwrap<T = Session>(): T {
    const session = this.#connector.session;
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
    const call = new ClientRawCall(this.#host, duplex, request, timeout, options.waitForReady ?? this.#options.waitForReady);
    if (this.#connector.session !== null) this.#admit(call);
    else this.#awaitConnection(call);
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
    const session = await this.#sessionFor(waitForReady ?? this.#options.waitForReady);
    const channel = session.openChannel();
    return new Promise<T>((resolve, reject) => {
      channel.setHandler({
        onData: () => undefined,
        onEnd: () => undefined,
        onDrain: () => {
          if (!channel.finSent) return;
          channel.destroy(); // sent; the server's FIN would find nothing to close
          resolve(undefined as T);
        },
        onClose: (error) =>
          channel.finSent
            ? resolve(undefined as T)
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
      this.#checkSize(request);
    } catch (error) {
      callback({ err: toSmuxError(error, 'the request could not be encoded'), isDisposed: true } as WritePacket);
      return null;
    }
    const call = new ClientCall(this.#host, callback, request, timeout, waitForReady ?? this.#options.waitForReady, source);
    if (this.#connector.session !== null) this.#admit(call);
    else this.#awaitConnection(call);
    return call;
  }

  /** Slots are taken once connected: until then the server's `maxCallsPerConnection` (from its hello) is unknown. */
  #admit(call: PendingCall): void {
    if (call.done || this.#admission.admit(call)) return;
    call.fail(
      new SmuxError(
        'ERR_SMUX_LIMIT',
        `${this.#admission.running} calls in flight and ${this.#admission.queued} queued ` +
          `(maxConcurrentCalls ${this.#options.maxConcurrentCalls}, maxQueuedCalls ${this.#options.maxQueuedCalls})`,
      ),
    );
  }

  /** No connection: wait for one (bounded like the queue), or fail fast while the last attempt failed. */
  #awaitConnection(call: PendingCall): void {
    if (this.#failsFast(call.waitForReady)) return call.fail(this.#unavailable());
    const { maxConcurrentCalls, maxQueuedCalls } = this.#options;
    if (this.#waitingCalls >= maxConcurrentCalls + maxQueuedCalls) {
      const limits = `maxConcurrentCalls ${maxConcurrentCalls} + maxQueuedCalls ${maxQueuedCalls}`;
      return call.fail(new SmuxError('ERR_SMUX_LIMIT', `${this.#waitingCalls} calls wait for a connection (${limits})`));
    }
    this.#waitingCalls++;
    let waiting = true;
    const leave = (): boolean => {
      if (waiting) this.#waitingCalls--;
      waiting = false;
      return true;
    };
    this.#wait({
      waitForReady: call.waitForReady,
      gone: () => call.done && leave(),
      connected: () => leave() && this.#admit(call),
      unavailable: (error) => leave() && call.fail(error),
    });
  }

  /** A call took a slot: open its stream (should the connection be gone meanwhile, wait for the next one). */
  #launch(call: PendingCall): void {
    if (call.done) return;
    const session = this.#usableSession();
    if (session !== null) return this.#openOn(session, call);
    if (this.#failsFast(call.waitForReady)) return call.fail(this.#unavailable());
    this.#wait({
      waitForReady: call.waitForReady,
      gone: () => call.done,
      connected: (s) => this.#openOn(s, call),
      unavailable: (error) => call.fail(error),
    });
  }

  #openOn(session: Session, call: PendingCall): void {
    if (call.done) return;
    try {
      call.open(session.openChannel());
    } catch (error) {
      call.fail(toSmuxError(error, 'the call could not be opened'));
    }
  }

  /** A session for an event: the ready one, or the next one (failing fast while there is none, unless waiting). */
  #sessionFor(waitForReady: boolean): Promise<Session> {
    const session = this.#usableSession();
    if (session !== null) return Promise.resolve(session);
    if (this.#failsFast(waitForReady)) return Promise.reject(this.#unavailable());
    return this.#nextSession(waitForReady);
  }

  /** The next session: starts an attempt unless one runs (a backoff wait is cut short), waits for its outcome. */
  #nextSession(waitForReady: boolean): Promise<Session> {
    return new Promise((resolve, reject) => {
      let settled = false;
      this.#wait({
        waitForReady,
        gone: () => settled,
        connected: (s) => {
          settled = true;
          resolve(s);
        },
        unavailable: (error) => {
          settled = true;
          reject(error);
        },
      });
    });
  }

  /**
   * Fail at once, or wait for a connection? Once an attempt has failed, calls fail fast until one succeeds — also
   * while the background retries run (gRPC's "sticky" transient failure): a peer that accepts TCP but never
   * answers must not make every call wait out a hello timeout. The first attempt, and the one after a lost
   * connection, are waited for.
   */
  #failsFast(waitForReady: boolean): boolean {
    return !waitForReady && this.#connector.lastError !== null;
  }

  /** Waits for a connection (starting an attempt if none runs); the process stays alive while anyone waits. */
  #wait(waiter: ConnectionWaiter): void {
    this.#awaiting.push(waiter);
    this.#holdProcess();
    this.#connector.connect();
  }

  /**
   * Our timers are unref'd (a client must not keep an app alive), and during a backoff there is no socket: a
   * script whose only work is a call waiting for the server would exit with the call pending. A ref'd handle is
   * held while anything waits for a connection.
   */
  #holdProcess(): void {
    if (this.#awaiting.length > 0) this.#keepAlive ??= setInterval(noop, 0x7fff_ffff);
    else if (this.#keepAlive !== null) {
      clearInterval(this.#keepAlive);
      this.#keepAlive = null;
    }
  }

  /** The ready session, if it still has stream ids (otherwise new calls move to a fresh one). */
  #usableSession(): Session | null {
    const session = this.#connector.session;
    if (session === null) return null;
    if (session.streamIdsLeft > 0) return session;
    this.#connector.rotate();
    return null;
  }

  /** A request the server will refuse as too large fails here, before its bytes are sent. */
  #checkSize(request: Buffer[]): void {
    const limit = this.#connector.hello?.maxMessageBytes;
    if (limit === undefined) return;
    let length = -PREFIX_SIZE;
    for (const buffer of request) length += buffer.length;
    if (length > limit)
      throw new SmuxError('ERR_SMUX_LIMIT', `a call message of ${length} bytes exceeds the server's maxMessageBytes (${limit} bytes)`);
  }

  #unavailable(): SmuxError {
    const cause = this.#connector.lastError ?? undefined;
    // A server that does not speak this transport will not start speaking it: retrying that is pointless.
    const retryable = !(cause instanceof SmuxError && cause.code === 'ERR_SMUX_PROTOCOL');
    return new SmuxError('ERR_SMUX_UNAVAILABLE', `no connection: ${cause?.message ?? `not connected to ${this.#connector.where}`}`, {
      cause,
      retryable,
    });
  }

  // ── connection events ──────────────────────────────────────────────────────────────────────────────────

  #ready(session: Session): void {
    const limit = this.#connector.hello?.maxCallsPerConnection;
    if (limit !== undefined) this.#admission.limit(Math.min(limit, this.#options.maxConcurrentCalls));
    this.logger.debug?.(`Connected to ${this.#connector.where} (smux protocol version ${session.version})`);
    this.#events.emit('connect', session);
    for (const waiter of this.#awaiting.drain()) {
      if (waiter.gone()) continue;
      const usable = this.#usableSession();
      if (usable === null)
        this.#awaiting.push(waiter); // ids ran out at once: the next session takes it
      else waiter.connected(usable);
    }
    this.#holdProcess();
  }

  #failed(error: Error): void {
    this.#warnings.warn('connect', `Could not connect to ${this.#connector.where}: ${error.message} (retrying in the background)`);
    if (this.#events.listenerCount('error') > 0) this.#events.emit('error', error);
    const unavailable = this.#unavailable();
    for (const waiter of this.#awaiting.drain()) {
      if (waiter.gone()) continue;
      if (waiter.waitForReady) this.#awaiting.push(waiter);
      else waiter.unavailable(unavailable);
    }
    this.#holdProcess();
  }

  #lost(_session: Session, error: SmuxError | undefined): void {
    // A server closing its end on purpose (shutdown, a drained connection) ends the session without a cause and
    // with its calls answered; a dead process or a cut network leaves calls in flight, or a socket error.
    const inFlight = this.#cutOff;
    this.#cutOff = 0;
    if (error !== undefined && (error.cause !== undefined || error.code !== 'ERR_SMUX_SESSION_CLOSED' || inFlight > 0)) {
      const calls = inFlight > 0 ? ` (${inFlight} calls in flight failed with it)` : '';
      this.#warnings.warn('connection', `Connection to ${this.#connector.where} lost: ${error.message}${calls}`);
    } else {
      this.logger.debug?.(`Connection to ${this.#connector.where} closed`);
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

/** `error` as a SmuxError: ours as they are, anything else (a custom serializer's) as ERR_SMUX_ENCODING. */
function noop(): void {}

function toSmuxError(error: unknown, what: string): SmuxError {
  return error instanceof SmuxError
    ? error
    : new SmuxError('ERR_SMUX_ENCODING', `${what}: ${(error as Error)?.message ?? String(error)}`, { cause: error });
}
