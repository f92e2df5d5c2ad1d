import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

/** The OpenTelemetry SDK as an app sets it up, with spans kept in memory; `uninstall()` puts the API back to no-ops. */
export interface OtelSdk {
  readonly exporter: InMemorySpanExporter;
  /** The finished spans, in the order they ended. */
  spans(): ReadableSpan[];
  /** The finished span named `name` (fails when there is not exactly one). */
  span(name: string): ReadableSpan;
  uninstall(): void;
}

/**
 * Registers a tracer provider (every span sampled, exported as it ends), an AsyncLocalStorage context manager and
 * the W3C trace-context propagator as the global ones, as `NodeSDK` does.
 */
export function installOtel(): OtelSdk {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  trace.setGlobalTracerProvider(provider);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const spans = (): ReadableSpan[] => exporter.getFinishedSpans();
  return {
    exporter,
    spans,
    span(name) {
      const named = spans().filter((s) => s.name === name);
      if (named.length !== 1)
        throw new Error(
          `${named.length} finished spans named ${name}: ${spans()
            .map((s) => s.name)
            .join(', ')}`,
        );
      return named[0];
    },
    uninstall() {
      trace.disable();
      context.disable();
      propagation.disable();
      void provider.shutdown();
    },
  };
}
