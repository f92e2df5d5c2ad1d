import type * as OtelApiModule from '@opentelemetry/api';
import type { Context, Span, Tracer, TracerProvider } from '@opentelemetry/api';
import { failureOf, type SmuxCallFailure } from './metrics.js';
import { SmuxContext } from './smux.context.js';

/*
 * OpenTelemetry, when the app has `@opentelemetry/api` (an optional peer dependency). The client starts a span per
 * call (kind CLIENT; PRODUCER for an event) and injects its context into the call's headers through the global
 * propagator (W3C `traceparent`/`tracestate` with the SDK's defaults); the server extracts it and runs the handler
 * inside a span of kind SERVER (CONSUMER for an event) whose parent is the caller's span: one trace across both.
 *
 * The API is looked for once, when this module loads, with a dynamic `import()`: it compiles to both builds (the
 * CommonJS one turns it into a `require()` a microtask later; `import.meta` would not compile there and a bare
 * `require` does not exist in ESM). Calls, events and a ServerSmux's listening wait until it settled
 * ({@link tracingPending}); when the package is absent, every function here returns null at the cost of one variable
 * read. With the API but no SDK registered, they return null too, without
 * allocating: the global provider is then a proxy without a delegate (a no-op span per call measurably grew the
 * server's young generation in the echo benchmark).
 */

type OtelApi = typeof OtelApiModule;

let otel: OtelApi | null = null;
let lookingUp = true; // until the lookup settles: the first calls and events wait for it (tracingPending())

const found: Promise<boolean> = import('@opentelemetry/api').then(
  (module) => {
    // ESM sees the CommonJS package's named exports (Node detects them); a loader that does not offers `default`.
    otel = typeof module.trace === 'object' ? module : (module as unknown as { default: OtelApi }).default;
    lookingUp = false;
    return true;
  },
  () => {
    lookingUp = false;
    return false;
  },
);

/** The tracer's name (the instrumentation scope). */
const TRACER = 'nestjs-smux';

/**
 * Resolves once `@opentelemetry/api` was looked for: true when found (calls started from then on are traced).
 * It is looked for when this module loads, so by the time an app has started it has long resolved.
 */
export function tracingReady(): Promise<boolean> {
  return found;
}

/**
 * True until `@opentelemetry/api` was looked for. That is not always done by the time an app has started: with the
 * SDK's loader hooks (`NodeSDK` under `--import`) an ESM app's lookup took 120 – 220 ms, longer than its start-up, and
 * its first calls went untraced (a new-user trial). So a ServerSmux listens, and a call or event starts, only once
 * it settled: a wait of that once, at a process's start.
 */
export function tracingPending(): boolean {
  return lookingUp;
}

/** A call's span: ended once, with the call's outcome. */
export interface CallSpan {
  /** Ends the span: `failure` null for a value, else why the call failed (status ERROR, attribute `error.type`). */
  end(failure: SmuxCallFailure | null): void;
}

/** The caller's span of a call or event, whose context travels in the call's headers. */
export interface ClientSpan extends CallSpan {
  /** `headers` plus the span's trace context (`traceparent`, `tracestate`): a new object; `headers` is not changed. */
  inject(headers: Record<string, string> | undefined): Record<string, string> | undefined;
}

/** The server's span of a call or event. */
export interface ServerSpan extends CallSpan {
  /** Runs `run` inside the span's context: spans the handler starts are its children, calls it makes carry it. */
  run<T>(run: () => T): T;
}

/**
 * Starts the caller's span of a call (`'call'`, kind CLIENT) or an event (`'event'`, kind PRODUCER), a child of the
 * active context. Null without `@opentelemetry/api`, or when there is neither a span to record nor a trace to
 * propagate (the API without an SDK).
 */
export function startClientSpan(kind: 'call' | 'event', pattern: unknown): ClientSpan | null {
  const api = otel;
  if (api === null) return null;
  const tracer = sdkTracer(api);
  if (tracer === null) return null;
  const name = patternText(pattern);
  const parent = api.context.active();
  const span = tracer.startSpan(name, spanOptions(api, kind === 'call' ? 'CLIENT' : 'PRODUCER', name), parent);
  return live(api, span) ? new OtelClientSpan(api, span, api.trace.setSpan(parent, span)) : null;
}

/**
 * Starts the server's span of a call (`'call'`, kind SERVER) or an event (`'event'`, kind CONSUMER) whose parent is
 * the trace context in `headers` (the caller's span), or a new trace without one. Null as {@link startClientSpan}.
 */
export function startServerSpan(
  kind: 'call' | 'event',
  pattern: string,
  headers: Readonly<Record<string, string>> | undefined,
): ServerSpan | null {
  const api = otel;
  if (api === null) return null;
  const tracer = sdkTracer(api);
  if (tracer === null) return null;
  // From the root, not the active context: what is active when a socket's data arrives is not the caller's.
  const parent = headers === undefined ? api.ROOT_CONTEXT : api.propagation.extract(api.ROOT_CONTEXT, headers);
  const span = tracer.startSpan(pattern, spanOptions(api, kind === 'call' ? 'SERVER' : 'CONSUMER', pattern), parent);
  return live(api, span) ? new OtelServerSpan(api, span, api.trace.setSpan(parent, span)) : null;
}

/**
 * Runs `run` (the sending of an event, or a call whose end is a promise) with a client span (see
 * {@link startClientSpan}; `run` passes it to `encodeCall`, which injects it) that ends when the promise settles. Without
 * tracing, `run(null)` and nothing else.
 */
export function withClientSpan<T>(kind: 'call' | 'event', pattern: unknown, run: (span: ClientSpan | null) => Promise<T>): Promise<T> {
  if (lookingUp) return found.then(() => withClientSpan(kind, pattern, run)); // see tracingPending()
  const span = startClientSpan(kind, pattern);
  if (span === null) return run(null);
  return run(span).then(
    (value) => {
      span.end(null);
      return value;
    },
    (error: unknown) => {
      span.end(failureOf(error));
      throw error;
    },
  );
}

/** The server span of the call whose context is `ctx` (a {@link SmuxContext}; anything else has none). */
export function serverSpanOf(ctx: unknown): ServerSpan | null {
  return otel !== null && ctx instanceof SmuxContext ? startServerSpan('call', ctx.getPattern(), ctx.getHeaders()) : null;
}

/**
 * Runs `run` (an event's handlers, or a call's) inside a server span (see {@link startServerSpan}) that ends when
 * the promise settles: a rejection sets status ERROR (`error.type`: its SmuxError code, else `'handler'`).
 */
export function withServerSpan<T>(
  kind: 'call' | 'event',
  pattern: string,
  headers: Readonly<Record<string, string>> | undefined,
  run: () => Promise<T>,
): Promise<T> {
  const span = startServerSpan(kind, pattern, headers);
  if (span === null) return run();
  return span.run(run).then(
    (value) => {
      span.end(null);
      return value;
    },
    (error: unknown) => {
      const failure = failureOf(error);
      span.end(failure === 'other' ? 'handler' : failure);
      throw error;
    },
  );
}

// ── internals ──────────────────────────────────────────────────────────────────────────────────────────────

let provider: TracerProvider | null = null; // the global provider `tracer` came from
let tracer: Tracer | null = null;

/**
 * The SDK's tracer, or null while no SDK is registered. Kept while the global provider stays the same object (the
 * API replaces it only when an app calls `trace.disable()`); until an SDK registers, the global provider is a proxy
 * without a delegate, asked again on each call at no allocation.
 */
function sdkTracer(api: OtelApi): Tracer | null {
  const current = api.trace.getTracerProvider();
  if (current !== provider) {
    provider = current;
    tracer = null;
  }
  tracer ??= current instanceof api.ProxyTracerProvider ? (current.getDelegateTracer(TRACER) ?? null) : current.getTracer(TRACER);
  return tracer;
}

/** Worth carrying: a span the SDK records, or a sampled-out one whose trace (and decision) must reach the server. */
function live(api: OtelApi, span: Span): boolean {
  return span.isRecording() || api.trace.isSpanContextValid(span.spanContext());
}

function spanOptions(api: OtelApi, kind: 'CLIENT' | 'SERVER' | 'PRODUCER' | 'CONSUMER', method: string) {
  return { kind: api.SpanKind[kind], attributes: { 'rpc.system': 'nestjs-smux', 'rpc.method': method } };
}

/** A pattern as a span name: a string as it is, an object pattern as JSON. */
function patternText(pattern: unknown): string {
  if (typeof pattern === 'string') return pattern;
  try {
    return JSON.stringify(pattern) ?? String(pattern);
  } catch {
    return String(pattern);
  }
}

class OtelCallSpan implements CallSpan {
  protected readonly api: OtelApi;
  protected readonly span: Span;
  /** The context with this span active. */
  protected readonly context: Context;
  #ended = false;

  constructor(api: OtelApi, span: Span, context: Context) {
    this.api = api;
    this.span = span;
    this.context = context;
  }

  end(failure: SmuxCallFailure | null): void {
    if (this.#ended) return;
    this.#ended = true;
    if (failure !== null) {
      this.span.setAttribute('error.type', failure);
      this.span.setStatus({ code: this.api.SpanStatusCode.ERROR, message: failure });
    }
    this.span.end();
  }
}

class OtelClientSpan extends OtelCallSpan implements ClientSpan {
  inject(headers: Record<string, string> | undefined): Record<string, string> | undefined {
    const carrier: Record<string, string> = {};
    this.api.propagation.inject(this.context, carrier);
    if (Object.keys(carrier).length === 0) return headers; // no propagator registered
    // The span's context replaces a traceparent the caller copied from elsewhere: the server's parent is this span.
    return headers === undefined ? carrier : { ...headers, ...carrier };
  }
}

class OtelServerSpan extends OtelCallSpan implements ServerSpan {
  run<T>(run: () => T): T {
    return this.api.context.with(this.context, run);
  }
}
