import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { ClientProxy, type MsPattern, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { type Clock, Session, type SmuxConfig, SmuxError, systemClock } from '../smux/index.js';
import { Fifo } from '../util/fifo.js';
import { type CallMessage, encodeMessage, Flag, Kind } from './call-codec.js';
import { ClientCall, type ClientCallHost } from './client-call.js';
import type { ClientSmuxOptions } from './interfaces.js';
import { SmuxRecord } from './smux.record-builder.js';
import type { SmuxClientEvents } from './smux.events.js';

const MiB = 1024 * 1024;

/**
 * The NestJS client of {@link ServerSmux}: every `send()` and `emit()` runs on its own smux stream over one
 * connection, opened lazily on first use.
 *
 * ```ts
 * ClientsModule.register([{ name: 'MATH', customClass: ClientSmux, options: { port: 4000 } }]);
 * ```
 */
export class ClientSmux extends ClientProxy<SmuxClientEvents, string> {
  readonly #options: ClientSmuxOptions;
  readonly #smux: Partial<SmuxConfig>;
  readonly #host: ClientCallHost;
  readonly #events = new EventEmitter();
  readonly #maxConcurrent: number;
  readonly #maxQueued: number;
  readonly #queue = new Fifo<ClientCall>();
  readonly #draining = new Set<Session>(); // sessions out of stream ids, finishing their calls
  readonly #customSerializer: boolean;
  readonly #customDeserializer: boolean;
  #session: Session | null = null;
  #connecting: Promise<Session> | null = null;
  #generation = 0; // bumped by close(): a connection that completes afterwards is dropped
  #inFlight = 0;
  #waiting = 0; // queued calls still waiting (the queue may also hold settled ones)
  #nextId = 0;
  #failures = 0;
  #retryAt = 0;
  #everConnected = false;

  /** @param options - where to connect, TLS, smux config, default timeout, limits, (de)serializers */
  constructor(options: ClientSmuxOptions = {}) {
    super();
    this.#options = options;
    this.#smux = { version: 2, ...options.smux };
    if (options.timeout !== undefined && !(Number.isFinite(options.timeout) && options.timeout >= 0)) {
      throw new RangeError(`ClientSmux: timeout must be a non-negative number of ms (0 = none), got ${options.timeout}`);
    }
    this.#maxConcurrent = options.maxConcurrentCalls ?? 10_000;
    this.#maxQueued = options.maxQueuedCalls ?? 10_000;
    this.#customSerializer = options.serializer !== undefined;
    this.#customDeserializer = options.deserializer !== undefined;
    this.initializeSerializer(options);
    this.initializeDeserializer(options);
    const clock: Clock = options.smux?.clock ?? systemClock;
    this.#host = {
      clock,
      maxMessageBytes: options.maxMessageBytes ?? 64 * MiB,
      toPacket: (message) => this.#toPacket(message),
      settled: (call) => this.#settled(call),
    };
  }

  /** Connects (once; concurrent callers share the attempt). Resolves with the session. */
  connect(): Promise<Session> {
    const session = this.#session;
    if (session !== null && !session.isClosed) return Promise.resolve(session);
    this.#connecting ??= this.#establish().finally(() => (this.#connecting = null));
    return this.#connecting;
  }

  /**
   * Closes the connection gracefully (queued events are flushed); calls still in flight or queued fail with
   * `ERR_SMUX_SESSION_CLOSED`. A later call connects again.
   */
  async close(): Promise<void> {
    this.#generation++;
    const closed = new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the client was closed');
    // Empty the queue before failing its calls, so no failure launches the next one.
    const queued = this.#queue.drain().filter((call) => call.queued);
    this.#waiting = 0;
    for (const call of queued) {
      call.queued = false;
      call.fail(closed);
    }
    const sessions = [...this.#draining];
    if (this.#session !== null) sessions.push(this.#session);
    this.#session = null;
    this.#draining.clear();
    await Promise.all(sessions.map((s) => closeWithin(s, 2_000)));
    this._status$.next('disconnected');
  }

  /** The current smux session. @throws when not connected */
  unwrap<T = Session>(): T {
    if (this.#session === null || this.#session.isClosed) throw new Error('ClientSmux is not connected: call connect() first');
    return this.#session as T;
  }

  /** Listens to client events: `connect`, `close`, `error`. */
  override on<K extends keyof SmuxClientEvents>(event: K, callback: SmuxClientEvents[K]): void {
    this.#events.on(event, callback as (...args: unknown[]) => void);
  }

  /**
   * A request/response call. Once connected, it skips `ClientProxy.send()`'s per-call `defer(connect)` +
   * `mergeMap`; what the subscriber sees is the same (values, then completion or the error).
   */
  override send<TResult = unknown, TInput = unknown>(pattern: unknown, data: TInput): Observable<TResult> {
    if (pattern === null || pattern === undefined || data === null || data === undefined) return super.send(pattern, data);
    return new Observable<TResult>((observer) => {
      const call = new ClientCall(this.#host, this.createObserver(observer));
      this.#start(call, pattern, data);
      return call;
    });
  }

  /** @internal Nest's publish contract, for code that goes through it; `send()` does not. */
  protected publish(packet: ReadPacket, callback: (packet: WritePacket) => void): () => void {
    const call = new ClientCall(this.#host, callback);
    this.#start(call, packet.pattern, packet.data, packet);
    return () => call.unsubscribe();
  }

  /**
   * An event: EVENT then FIN on a new stream. At most once: resolves when the event and its FIN have been
   * handed to the socket, rejects if the connection is lost before that.
   */
  protected async dispatchEvent<T = unknown>(packet: ReadPacket): Promise<T> {
    let session = await this.connect();
    if (session.streamIdsLeft === 0) {
      this.#rotate(session); // an emit-only client must move to a fresh session too
      session = await this.connect();
    }
    const { data, headers } = unwrapRecord(packet.data, (packet as ReadPacket & { metadata?: Record<string, string> }).metadata);
    const buffers = this.#customSerializer
      ? encodeMessage(Kind.EVENT, Flag.OPAQUE, this.serializer.serialize({ ...packet, data }))
      : encodeMessage(Kind.EVENT, 0, data, { ...this.#patternField(packet.pattern), headers });
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

  #start(call: ClientCall, pattern: unknown, rawData: unknown, nestPacket?: ReadPacket): void {
    let packet: ReadPacket & { metadata?: Record<string, string> };
    if (nestPacket !== undefined) packet = nestPacket;
    else packet = typeof this.createPacket === 'function' ? this.createPacket(pattern, rawData) : { pattern, data: rawData };
    const { data, headers, timeout } = unwrapRecord(packet.data, packet.metadata);
    const id = (++this.#nextId).toString(36);
    call.timeout = timeout ?? this.#options.timeout ?? 0;
    const timeoutField = call.timeout > 0 ? call.timeout : undefined;
    try {
      call.request = this.#customSerializer
        ? encodeMessage(
            Kind.REQUEST,
            Flag.OPAQUE,
            this.serializer.serialize({ pattern: packet.pattern, data, id, ...(headers ? { metadata: headers } : {}) }),
            { timeout: timeoutField },
          )
        : encodeMessage(Kind.REQUEST, 0, data, { id, ...this.#patternField(packet.pattern), timeout: timeoutField, headers });
    } catch (error) {
      call.fail(error);
      return;
    }
    call.startTimer();
    if (this.#inFlight >= this.#maxConcurrent) {
      if (this.#waiting >= this.#maxQueued) {
        call.fail(
          new SmuxError(
            'ERR_SMUX_LIMIT',
            `${this.#inFlight} calls in flight and ${this.#waiting} queued (maxConcurrentCalls ${this.#maxConcurrent}, maxQueuedCalls ${this.#maxQueued})`,
          ),
        );
        return;
      }
      call.queued = true;
      this.#waiting++;
      this.#queue.push(call);
      return;
    }
    this.#launch(call);
  }

  #launch(call: ClientCall): void {
    if (call.done) return;
    call.launched = true;
    this.#inFlight++;
    const session = this.#session;
    if (session !== null && !session.isClosed && session.streamIdsLeft > 0) {
      this.#openOn(session, call);
      return;
    }
    if (session !== null && !session.isClosed) this.#rotate(session);
    this.connect().then(
      (s) => this.#openOn(s, call),
      (error: unknown) => call.fail(error),
    );
  }

  #openOn(session: Session, call: ClientCall): void {
    if (call.done) return;
    if (session.streamIdsLeft === 0) {
      this.#rotate(session);
      this.connect().then(
        (s) => this.#openOn(s, call),
        (error: unknown) => call.fail(error),
      );
      return;
    }
    try {
      call.open(session.openChannel());
    } catch (error) {
      call.fail(error);
    }
  }

  /** Stream ids are running out on `session`: new calls go to a fresh session; this one finishes its calls, then closes. */
  #rotate(session: Session): void {
    if (this.#session !== session) return;
    this.#session = null;
    this.#draining.add(session);
    if (session.numStreams === 0) this.#retire(session);
  }

  #retire(session: Session): void {
    this.#draining.delete(session);
    void session.close();
  }

  #settled(call: ClientCall): void {
    if (call.launched) this.#inFlight--;
    else if (call.queued) {
      // Unsubscribed or timed out while waiting: its queue slot is free now (the entry is skipped later).
      call.queued = false;
      this.#waiting--;
    }
    while (this.#inFlight < this.#maxConcurrent && this.#queue.length > 0) {
      const next = this.#queue.shift()!;
      if (!next.queued) continue; // settled while waiting
      next.queued = false;
      this.#waiting--;
      this.#launch(next);
    }
    if (this.#draining.size > 0) for (const session of this.#draining) if (session.numStreams === 0) this.#retire(session);
  }

  /**
   * The PATTERN field: a string as it is, an object pattern as Nest normalises it (JSON with sorted keys) — the
   * form the server's route cache keeps — with PATTERN_JSON set.
   */
  #patternField(pattern: unknown): { pattern: string; patternIsJson: boolean } {
    return typeof pattern === 'string'
      ? { pattern, patternIsJson: false }
      : { pattern: this.normalizePattern(pattern as MsPattern), patternIsJson: true };
  }

  #toPacket(message: CallMessage): WritePacket | Promise<WritePacket> {
    const last = (message.flags & Flag.LAST) !== 0;
    if ((message.flags & Flag.OPAQUE) !== 0 || this.#customDeserializer) {
      const raw =
        (message.flags & Flag.OPAQUE) !== 0
          ? message.body
          : {
              ...((message.flags & Flag.ERROR) !== 0 ? { err: message.body } : { response: message.body }),
              ...(last ? { isDisposed: true } : {}),
              ...(message.status !== undefined ? { status: message.status } : {}),
            };
      return this.deserializer.deserialize(raw) as WritePacket | Promise<WritePacket>;
    }
    if ((message.flags & Flag.ERROR) !== 0) return { err: message.body, isDisposed: last };
    return { response: message.body, isDisposed: last };
  }

  // ── connection ─────────────────────────────────────────────────────────────────────────────────────────

  async #establish(): Promise<Session> {
    const generation = this.#generation;
    const wait = this.#retryAt - Date.now();
    if (this.#everConnected || wait > 0) this._status$.next('reconnecting');
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    let socket: Duplex;
    try {
      socket = await this.#dial();
    } catch (error) {
      this.#failures++;
      const { initialDelay = 100, maxDelay = 5_000, factor = 2 } = this.#options.reconnect ?? {};
      this.#retryAt = Date.now() + Math.min(maxDelay, initialDelay * factor ** (this.#failures - 1));
      this._status$.next('disconnected');
      this.#events.emit('error', error);
      throw error;
    }
    this.#failures = 0;
    this.#retryAt = 0;
    const session = Session.client(socket, this.#smux);
    if (generation !== this.#generation) {
      session.destroy();
      throw new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the client was closed while connecting');
    }
    session.on('close', (error) => this.#lost(session, error));
    // The server side of this transport never opens streams; any that arrive are refused at once rather than
    // left to fill the accept backlog (which would stop the session reading).
    session.on('channel', (channel) => channel.destroy());
    this.#session = session;
    this.#everConnected = true;
    this._status$.next('connected');
    this.#events.emit('connect', session);
    return session;
  }

  #lost(session: Session, error: SmuxError | undefined): void {
    this.#draining.delete(session);
    if (this.#session !== session) return;
    this.#session = null;
    this._status$.next('disconnected');
    this.#events.emit('close', error);
  }

  #dial(): Promise<Duplex> {
    const { host = 'localhost', port = 3000, path, tls: tlsOptions, connectTimeout = 10_000 } = this.#options;
    return new Promise((resolve, reject) => {
      const target = path !== undefined ? { path } : { host, port };
      const socket = tlsOptions !== undefined ? tls.connect({ ...tlsOptions, ...target }) : net.connect(target);
      const ready = tlsOptions !== undefined ? 'secureConnect' : 'connect';
      const timer = setTimeout(
        () => fail(new SmuxError('ERR_SMUX_TIMEOUT', `could not connect to ${path ?? `${host}:${port}`} within ${connectTimeout} ms`)),
        connectTimeout,
      );
      const fail = (error: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      };
      socket.once('error', fail);
      socket.once(ready, () => {
        clearTimeout(timer);
        socket.off('error', fail);
        resolve(socket);
      });
    });
  }
}

/** Unwraps a {@link SmuxRecord} and merges its headers with Nest 12's dispatch-hook metadata. */
function unwrapRecord(
  value: unknown,
  metadata: Record<string, string> | undefined,
): { data: unknown; headers: Record<string, string> | undefined; timeout: number | undefined } {
  if (!(value instanceof SmuxRecord)) return { data: value, headers: metadata, timeout: undefined };
  const { headers, timeout } = value.options as { headers?: Record<string, string>; timeout?: number };
  return { data: value.data, headers: metadata === undefined ? headers : { ...metadata, ...headers }, timeout };
}

async function closeWithin(session: Session, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([session.close(), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
  session.destroy();
}
