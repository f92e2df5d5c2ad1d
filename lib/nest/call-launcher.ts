import type { ReadPacket, WritePacket } from '@nestjs/microservices';
import { Observable, type Observer, throwError, type Unsubscribable } from 'rxjs';
import { type Session, type SmuxChannel, SmuxError } from '../smux/index.js';
import { Flag, Kind, type MessagePiece } from './call-codec.js';
import { toSmuxError } from './call-scheduler.js';
import { ClientCall, type ClientCallHost, clientClosed, type PendingCall } from './client-call.js';
import { ClientRawCall } from './client-raw-call.js';
import { type EventLedger, EventSend } from './event-send.js';
import { HotResult } from './hot-result.js';
import type { SmuxDuplexOptions } from './interfaces.js';
import { deliverLater, failDuplexLater, rejectLater, startCall } from './late-failure.js';
import { SmuxDuplex } from './raw-duplex.js';
import { isSource } from './sources.js';
import { assertDeadline, SmuxRecord } from './smux.record-builder.js';
import { type ClientSpan, startClientSpan, tracingPending, tracingReady, withClientSpan } from './tracing.js';

/** Where a {@link CallLauncher} sends its calls: one connection, or a client's scheduler. */
export interface LaunchTarget {
  /** A new call: give it a slot and a stream (or fail it). */
  schedule(call: PendingCall): void;
  /** A session to send an event on (failing fast while there is none, unless it waits for ready). */
  sessionFor(waitForReady: boolean): Promise<Session>;
  /** Throws when the peer would refuse `request` as too large. */
  checkSize(request: MessagePiece[]): void;
  /** Told of its events' streams (a SmuxConnection's: its server's close waits for them); a ClientSmux has none. */
  readonly events?: EventLedger;
}

/** What a launcher borrows from the `ClientProxy` it serves (protected there, so passed in). */
export interface LauncherProxy {
  /** Nest's observer adapter: packets in, Observable notifications out. */
  createObserver<T>(observer: Observer<T>): (packet: WritePacket) => void;
  /** Nest 12's packet with its dispatch-hook metadata (Nest 11 has none). */
  createPacket?: ((pattern: unknown, data: unknown) => ReadPacket & { metadata?: Record<string, string> }) | undefined;
}

/** A launcher's defaults for calls that do not say. */
export interface LaunchDefaults {
  readonly timeout: number;
  readonly waitForReady: boolean;
  readonly streamHighWaterMark: number;
}

/**
 * The calling side of a `ClientProxy` over smux — `send()`, events, `openDuplex()` — for whatever holds the
 * connection: a {@link ClientSmux}, or a server calling one of its callers back (`SmuxConnection`). It encodes the
 * request, unwraps a {@link SmuxRecord}, picks the call kind (plain, streamed, byte stream) and hands the call to
 * its target; the calls themselves are {@link ClientCall} and {@link ClientRawCall}.
 */
export class CallLauncher {
  readonly #host: ClientCallHost;
  readonly #target: LaunchTarget;
  readonly #proxy: LauncherProxy;
  readonly #defaults: LaunchDefaults;

  constructor(host: ClientCallHost, target: LaunchTarget, proxy: LauncherProxy, defaults: LaunchDefaults) {
    this.#host = host;
    this.#target = target;
    this.#proxy = proxy;
    this.#defaults = defaults;
  }

  /**
   * `send()`: a call whose replies the Observable delivers; unsubscribing cancels it. A failure decided inside
   * `subscribe()` (no connection, …) is delivered on a later turn (late-failure.ts); a null or undefined pattern or
   * data is refused with `throwError`, at once, as Nest's `send()` does: the calling code's mistake, which no
   * retry can mend (nor is any I/O owed a turn to make it succeed).
   */
  send<T>(pattern: unknown, data: unknown): Observable<T> {
    if (pattern === null || pattern === undefined || data === null || data === undefined) {
      return throwError(
        () =>
          new SmuxError('ERR_SMUX_INVALID_ARGUMENT', 'send() needs a pattern and data that are not null or undefined (as Nest requires)'),
      );
    }
    return new Observable<T>((observer) => {
      const callback = this.#proxy.createObserver(observer);
      return tracingPending() ? this.#startTraced(callback, pattern, data) : this.start(callback, pattern, data);
    });
  }

  /** A call made while `@opentelemetry/api` is still looked for (a process's first moments) starts once it was. */
  #startTraced(callback: (packet: WritePacket) => void, pattern: unknown, data: unknown): Unsubscribable {
    let call: Unsubscribable | null = null;
    let cancelled = false;
    const closes = this.#host.closes();
    void tracingReady().then(() => {
      if (cancelled) return;
      if (this.#host.closes() === closes) call = this.start(callback, pattern, data);
      else callback({ err: clientClosed(), isDisposed: true } as WritePacket); // as the calls queued at the close
    });
    return {
      unsubscribe: () => {
        cancelled = true;
        call?.unsubscribe();
      },
    };
  }

  /**
   * `emit()`: an event, hot as Nest's (sent whether or not the result is subscribed), through `dispatch` (the
   * proxy's `dispatchEvent`, which a subclass may override) and without Nest's implicit `connect()`.
   */
  emit<T>(
    pattern: unknown,
    data: unknown,
    dispatch: (packet: ReadPacket & { metadata?: Record<string, string> }) => Promise<T>,
  ): Observable<T> {
    if (pattern === null || pattern === undefined || data === null || data === undefined) {
      return throwError(
        () =>
          new SmuxError('ERR_SMUX_INVALID_ARGUMENT', 'emit() needs a pattern and data that are not null or undefined (as Nest requires)'),
      );
    }
    const packet = this.packet(pattern, data);
    return new HotResult<T>(() => dispatch(packet));
  }

  /** The packet Nest's `emit()` sends (Nest 12 adds its dispatch-hook metadata). */
  packet(pattern: unknown, data: unknown): ReadPacket & { metadata?: Record<string, string> } {
    return typeof this.#proxy.createPacket === 'function' ? this.#proxy.createPacket(pattern, data) : { pattern, data };
  }

  /**
   * Starts a call whose packets go to `callback`. @returns its teardown: the call, or — when it failed before it
   * was made (its request could not be encoded) — the failure waiting for its later turn
   */
  start(callback: (packet: WritePacket) => void, pattern: unknown, rawData: unknown, nestPacket?: ReadPacket): Unsubscribable {
    const packet: ReadPacket & { metadata?: Record<string, string> } = nestPacket ?? this.packet(pattern, rawData);
    // No object per call for what the record holds: most payloads are not records.
    const payload: unknown = packet.data;
    const record = recordOf(payload);
    const data = record === null ? payload : record.data;
    const headers = record === null ? packet.metadata : recordHeaders(record, packet.metadata);
    const timeout = record?.options.timeout ?? this.#defaults.timeout;
    // A source (Observable, AsyncIterable, Readable) is a streamed request: its items follow as DATA … END.
    const source = isSource(data) ? data : null;
    const span = startClientSpan('call', packet.pattern); // null without @opentelemetry/api
    let request: MessagePiece[];
    try {
      request = this.#host.codec.encodeCall(Kind.REQUEST, {
        pattern: packet.pattern,
        data: source === null ? data : undefined,
        headers,
        timeout: timeout > 0 ? timeout : undefined,
        flags: source === null ? 0 : Flag.STREAM,
        span,
      });
      this.#target.checkSize(request);
    } catch (error) {
      const failure = toSmuxError(error, 'the request could not be encoded');
      span?.end(failure.code);
      this.#countRefusal(failure);
      return deliverLater(callback, { err: failure, isDisposed: true } as WritePacket); // late-failure.ts says why
    }
    const waitForReady = record?.options.waitForReady ?? this.#defaults.waitForReady;
    const call = new ClientCall(this.#host, callback, request, timeout, waitForReady, source, span);
    startCall(call, this.#target);
    return call;
  }

  /**
   * An event: EVENT then FIN on a new stream. At most once: resolves when the event and its FIN have been handed
   * to the socket; rejects when there is no connection, or when it is lost before that. A failure before any I/O
   * (no connection, a stream that cannot open, a value that cannot be encoded) rejects on a later turn.
   */
  event<T>(packet: ReadPacket & { metadata?: Record<string, string> }): Promise<T> {
    return withClientSpan('event', packet.pattern, (span) => this.#event<T>(packet, span));
  }

  #event<T>(packet: ReadPacket & { metadata?: Record<string, string> }, span: ClientSpan | null): Promise<T> {
    const payload: unknown = packet.data;
    const record = recordOf(payload);
    const data = record === null ? payload : record.data;
    const headers = record === null ? packet.metadata : recordHeaders(record, packet.metadata);
    const waitForReady = record?.options.waitForReady;
    // Failures before any I/O reject on a later turn: a loop of awaited emits must let I/O and timers run
    // (late-failure.ts); an event that went out settles on the next turn too (EventSend).
    if (isSource(data))
      return rejectLater(new SmuxError('ERR_SMUX_INVALID_ARGUMENT', 'an event cannot stream: emit() takes a value (use send() to stream)'));
    let buffers: MessagePiece[];
    try {
      buffers = this.#host.codec.encodeCall(Kind.EVENT, { pattern: packet.pattern, data, headers, span });
    } catch (error) {
      return rejectLater(error);
    }
    // A rejected session (failing fast: it rejects at once) and a stream that cannot open reject later.
    return this.#target.sessionFor(waitForReady ?? this.#defaults.waitForReady).then(
      (session) => {
        let channel: SmuxChannel;
        try {
          channel = session.openChannel();
        } catch (error) {
          return rejectLater<T>(error);
        }
        this.#host.metrics?.eventSent(buffers);
        const ledger = this.#target.events ?? null;
        return new Promise<T>((resolve, reject) => void new EventSend(channel, buffers, resolve as () => void, reject, ledger));
      },
      rejectLater<T>,
    );
  }

  /**
   * `openDuplex()`: a byte stream to a handler's `ctx.getDuplex()`, returned at once. While `@opentelemetry/api` is
   * still looked for (a process's first moments), the call starts once it was, as `send()`'s do: what is written
   * meanwhile waits in the Duplex, as it does while the connection is made.
   */
  openDuplex(pattern: unknown, data: unknown, options: SmuxDuplexOptions): SmuxDuplex {
    const duplex = new SmuxDuplex(this.#defaults.streamHighWaterMark);
    if (!tracingPending()) this.#startDuplex(duplex, pattern, data, options);
    else {
      const closes = this.#host.closes();
      void tracingReady().then(() => {
        if (duplex.destroyed) return; // destroyed meanwhile: nothing to open
        if (this.#host.closes() === closes) this.#startDuplex(duplex, pattern, data, options);
        else failDuplexLater(duplex, clientClosed()); // as the calls queued at the close
      });
    }
    return duplex;
  }

  #startDuplex(duplex: SmuxDuplex, pattern: unknown, data: unknown, options: SmuxDuplexOptions): void {
    const packet = this.packet(pattern, data);
    const headers = packet.metadata === undefined ? options.headers : { ...packet.metadata, ...options.headers };
    const timeout = options.timeout ?? 0;
    const span = startClientSpan('call', pattern); // null without @opentelemetry/api
    let request: MessagePiece[];
    try {
      if (pattern === null || pattern === undefined) throw new SmuxError('ERR_SMUX_INVALID_ARGUMENT', 'openDuplex() needs a pattern');
      assertDeadline(timeout, 'openDuplex(): the timeout option takes');
      request = this.#host.codec.encodeCall(Kind.REQUEST, {
        pattern,
        data,
        headers,
        timeout: timeout > 0 ? timeout : undefined,
        flags: Flag.RAW,
        span,
      });
    } catch (error) {
      const failure = toSmuxError(error, 'the request could not be encoded');
      span?.end(failure.code);
      this.#countRefusal(failure);
      failDuplexLater(duplex, failure); // late-failure.ts says why
      return;
    }
    const waitForReady = options.waitForReady ?? this.#defaults.waitForReady;
    startCall(new ClientRawCall(this.#host, duplex, request, timeout, waitForReady, span), this.#target);
  }

  /**
   * A call refused before it was sent still counts as started and failed (a request over the server's
   * `maxMessageBytes`, a value JSON cannot carry, a serializer's failure) — except a bad argument, which is the
   * calling code's mistake and counts nowhere (README, Metrics).
   */
  #countRefusal(failure: SmuxError): void {
    const metrics = this.#host.metrics;
    if (metrics !== undefined && failure.code !== 'ERR_SMUX_INVALID_ARGUMENT') metrics.callEnded(metrics.callStarted(), failure.code);
  }
}

/** The {@link SmuxRecord} a payload is, or null. */
function recordOf(value: unknown): SmuxRecord<unknown> | null {
  // typeof first: `instanceof` on a primitive (a string payload) still runs V8's generic InstanceOf (≈ 1 % of a call).
  return typeof value === 'object' && value !== null && value instanceof SmuxRecord ? value : null;
}

/** A record's headers merged with Nest 12's dispatch-hook metadata (the record's win). */
function recordHeaders(record: SmuxRecord<unknown>, metadata: Record<string, string> | undefined): Record<string, string> | undefined {
  const { headers } = record.options;
  return metadata === undefined ? headers : { ...metadata, ...headers };
}
