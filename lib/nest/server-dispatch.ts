import { IntrinsicException, type LoggerService } from '@nestjs/common';
import { type MessageHandler, RpcException } from '@nestjs/microservices';
import { connectable, finalize, isObservable, Subject } from 'rxjs';
import { SmuxError } from '../smux/index.js';
import type { CallMessage } from './call-codec.js';
import { FEED_EXTRAS_KEY } from './feed.js';
import type { RateLimitedLog } from './log.js';
import type { EventGate } from './event-gate.js';
import type { DecodedRequest, PacketCodec } from './packet-codec.js';
import type { ServerCall } from './server-call.js';
import { createSmuxContext, type SmuxContext } from './smux.context.js';
import { withServerSpan } from './tracing.js';

// Nest's own texts (not exported from @nestjs/microservices' entry point).
const NO_MESSAGE_HANDLER = 'There is no matching message handler defined in the remote service.';
const NO_EVENT_HANDLER = (pattern: string) => `There is no matching event handler defined in the remote service. Event pattern: ${pattern}`;
/** Cached routes at most (one per distinct pattern the app handles; the cap only guards against misuse). */
const MAX_CACHED_ROUTES = 4096;

/** Nest's processing start hook (`setOnProcessingStartHook`). */
type StartHook = (transportId: symbol, ctx: SmuxContext, done: () => Promise<unknown>) => void;
/** Nest's processing end hook (`setOnProcessingEndHook`). */
type EndHook = (transportId: symbol, ctx: SmuxContext) => void;

/** What a {@link CallDispatcher} needs of the Nest server it works for (protected there, so passed in). */
export interface NestServerFace {
  readonly transportId: symbol;
  readonly logger: LoggerService;
  /** The server's rate-limited lines, for what a peer can make happen per message (an event nobody handles). */
  readonly rateLimited: RateLimitedLog;
  readonly codec: PacketCodec;
  /** True once the server is shutting down. */
  closing(): boolean;
  /** Nest's handler lookup (`getHandlerByPattern`). */
  handlerFor(pattern: string): MessageHandler | null;
  /** Nest's route of a pattern text (`getRouteFromPattern`). */
  routeOf(pattern: string): string;
  /** The processing start hook an app set, or null for Nest's default (which only runs the handler). */
  startHook(): StartHook | null;
  /** The processing end hook an app set. */
  endHook(): EndHook | undefined;
}

/**
 * Nest's side of a call on the server: it decodes a REQUEST or EVENT, finds the handler (cached per pattern text),
 * builds the `SmuxContext`, and runs the handler through Nest's processing hooks — a call's handler through
 * `ServerCall.run`, which writes its result; an event's handlers fire and forget, as Nest's `handleEvent` does.
 */
export class CallDispatcher {
  readonly #nest: NestServerFace;
  readonly #routes = new Map<string, MessageHandler>();

  constructor(nest: NestServerFace) {
    this.#nest = nest;
  }

  /** Handlers changed: the per-pattern cache starts over. */
  clearRoutes(): void {
    this.#routes.clear();
  }

  /** A REQUEST arrived: decode it, route it, run its handler through Nest's processing hooks (or fail it). */
  dispatchRequest(call: ServerCall, message: CallMessage): void {
    if (this.#nest.closing()) return call.end(new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'the server is shutting down'));
    let request: DecodedRequest | Promise<DecodedRequest>;
    try {
      request = this.#nest.codec.decodeCall(message);
    } catch (error) {
      return call.fail(this.toRpcError(error));
    }
    if (!(request instanceof Promise)) return this.#runRequest(call, request);
    request.then(
      (decoded) => {
        call.id ??= decoded.id; // an opaque request's id is only known once deserialized
        this.#runRequest(call, decoded);
      },
      (error: unknown) => call.fail(this.toRpcError(error)),
    );
  }

  #runRequest(call: ServerCall, { pattern, data: requestData, headers }: DecodedRequest): void {
    const data = call.input ?? requestData; // a streamed request's payload is the stream of its items
    const handler = this.#route(pattern);
    if (handler === null) return call.fail(NO_MESSAGE_HANDLER, 'error');
    const ctx = createSmuxContext(call.channel, pattern, headers, call);
    const feed = (handler.extras?.[FEED_EXTRAS_KEY] as { bufferSize: number } | undefined) ?? null;
    const start = this.#nest.startHook();
    if (start === null)
      void call.run(handler, data, ctx, null, feed); // the common case: no hooks, no per-call closures
    else start(this.#nest.transportId, ctx, () => call.run(handler, data, ctx, this.#endHook(ctx), feed));
  }

  /**
   * An EVENT arrived (`size` bytes): its handlers run (at most once); failures are logged, nothing goes back. It holds
   * a place and its bytes at `gate` (its connection's `maxEventsPerConnection` and `maxPendingRequestBytes`) from now
   * until its handlers settle, or until it is clear that none will run.
   */
  dispatchEvent(call: ServerCall, message: CallMessage, size: number, gate: EventGate): void {
    if (this.#nest.closing()) return; // at most once: a server shutting down takes no new work
    gate.enter(size);
    // The native codec decodes at once: nothing is awaited (a burst of events is dispatched in one read, and each
    // await kept its frame alive into the next scavenge); a custom deserializer's promise is chained.
    try {
      const decoded = this.#nest.codec.decodeCall(message);
      if (!(decoded instanceof Promise)) return this.#dispatchEvent(call, decoded, size, gate);
      decoded.then(
        (request) => this.#dispatchEvent(call, request, size, gate),
        (error: unknown) => {
          gate.leave(size);
          this.#logError(error);
        },
      );
    } catch (error) {
      gate.leave(size);
      this.#logError(error);
    }
  }

  /** Never throws nor rejects: what fails is logged. The event's place at `gate` is left here or by #runEvent. */
  #dispatchEvent(call: ServerCall, { pattern, data, headers }: DecodedRequest, size: number, gate: EventGate): void {
    let handedOn = false; // the place is #runEvent's, or already given back: the catch below leaves nothing
    try {
      const handler = this.#route(pattern);
      // Nest logs each one; a peer can send thousands of them, so they are rate-limited here.
      if (handler === null) {
        gate.leave(size);
        return this.#nest.rateLimited.error('unhandled event', NO_EVENT_HANDLER(pattern));
      }
      const ctx = createSmuxContext(call.channel, pattern, headers, call);
      const start = this.#nest.startHook();
      if (start === null) {
        handedOn = true;
        void this.#runEventInSpan(pattern, headers, handler, data, ctx, null, size, gate);
      } else {
        // The app's start hook decides when the handlers run (a hook that never calls done must not hold a place for
        // good): the event waits there without one, and takes one again as they start.
        gate.leave(size);
        handedOn = true;
        let started = false; // at most once: a hook that calls done() twice does not run the handlers twice
        start(this.#nest.transportId, ctx, () => {
          if (started) return Promise.resolve();
          started = true;
          gate.enter(size);
          return this.#runEventInSpan(pattern, headers, handler, data, ctx, this.#endHook(ctx), size, gate);
        });
      }
    } catch (error) {
      if (!handedOn) gate.leave(size);
      this.#logError(error);
    }
  }

  /**
   * {@link #runEvent} inside the event's span (with OpenTelemetry: a CONSUMER span whose parent is the emitter's,
   * tracing.ts). A span that fails to start gives the place back before the error goes on.
   */
  #runEventInSpan(
    pattern: string,
    headers: Readonly<Record<string, string>> | undefined,
    handler: MessageHandler,
    data: unknown,
    ctx: SmuxContext,
    end: (() => void) | null,
    size: number,
    gate: EventGate,
  ): Promise<void> {
    let ran = false;
    try {
      return withServerSpan('event', pattern, headers, () => {
        ran = true;
        return this.#runEvent(handler, data, ctx, end, size, gate);
      });
    } catch (error) {
      if (!ran) gate.leave(size);
      throw error;
    }
  }

  /**
   * Runs the event handlers (chained by Nest) as Nest's handleEvent does: an Observable result runs hot. Never
   * rejects (a failure is logged); leaves `gate` once they settled. Chained with `then`, not an async function: no
   * suspended frame per event.
   */
  #runEvent(
    handler: MessageHandler,
    data: unknown,
    ctx: SmuxContext,
    end: (() => void) | null,
    size: number,
    gate: EventGate,
  ): Promise<void> {
    let pending: unknown;
    try {
      pending = handler(data, ctx);
    } catch (error) {
      gate.leave(size);
      this.#eventFailed(error, end);
      return Promise.resolve();
    }
    return Promise.resolve(pending).then(
      (result) => this.#eventResult(result, end, size, gate),
      (error: unknown) => {
        gate.leave(size);
        this.#eventFailed(error, end);
      },
    );
  }

  /**
   * The handlers' result. An Observable runs hot, as Nest's handleEvent runs it, and keeps the event's place until it
   * completes or errors: the work it does is the handler's (found by a new-user trial: 40 such handlers ran at once
   * under a limit of 4).
   */
  #eventResult(result: unknown, end: (() => void) | null, size: number, gate: EventGate): void {
    if (!isObservable(result)) {
      gate.leave(size);
      return end?.();
    }
    let over = false;
    const finished = (): void => {
      if (over) return;
      over = true;
      gate.leave(size);
      end?.();
    };
    try {
      connectable(result.pipe(finalize(finished)), { connector: () => new Subject(), resetOnDisconnect: false }).connect();
    } catch (error) {
      finished(); // if the Observable's own finalizer has not run already
      this.#nest.logger.error(error);
    }
  }

  #eventFailed(error: unknown, end: (() => void) | null): void {
    this.#nest.logger.error(error);
    end?.();
  }

  readonly #logError = (error: unknown): void => {
    this.#nest.logger.error(error);
  };

  /** The handler of a raw pattern text, cached: Nest's lookup parses and normalises the pattern on every call. */
  #route(pattern: string): MessageHandler | null {
    const cached = this.#routes.get(pattern);
    if (cached !== undefined) return cached;
    const handler = this.#nest.handlerFor(pattern);
    // Only canonical texts are cached — the route itself (a plain string pattern, or an object pattern as Nest
    // normalises it, which is how ClientSmux sends it) — so a client cannot grow the cache with variants
    // (whitespace, key order, escapes) of a valid pattern; misses are never cached.
    if (handler !== null && this.#routes.size < MAX_CACHED_ROUTES && this.#nest.routeOf(pattern) === pattern)
      this.#routes.set(pattern, handler);
    return handler;
  }

  /** What the caller receives for a thrown value: Nest's default exception-filter shapes. */
  toRpcError(error: unknown): unknown {
    if (error instanceof RpcException) {
      const value = error.getError();
      return typeof value === 'object' && value !== null ? value : { status: 'error', message: value };
    }
    // As Nest's own filter does: the transport's errors in handler code (handler-facing-error.ts) are not logged.
    if (!(error instanceof IntrinsicException)) this.#nest.logger.error(error);
    return { status: 'error', message: 'Internal server error' };
  }

  #endHook(ctx: SmuxContext): () => void {
    let called = false;
    return () => {
      if (called) return;
      called = true;
      this.#nest.endHook()?.(this.#nest.transportId, ctx);
    };
  }
}
