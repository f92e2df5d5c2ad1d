import { type Clock, isSmuxError, type SmuxErrorCode, systemClock } from '../smux/index.js';
import type { MessagePiece } from './call-codec.js';

/*
 * Counters and histograms of one ClientSmux or ServerSmux, without a dependency. Recording is on the call path, so
 * it allocates nothing: numbers in fields, histogram buckets in a preallocated Float64Array, failures in a Map
 * keyed by a code (a constant string). A call reads the clock once when it starts and once when it ends (the
 * server's start is the call's `openedAt`, which it reads anyway). Everything else is computed by `snapshot()`,
 * which a scraper calls every few seconds.
 */

/**
 * Upper bounds, in ms, of the latency and RTT histograms' buckets (Prometheus `le`, before the implicit `+Inf`):
 * from 50 µs (a call on loopback) to 30 s. Fixed, so that every process reports the same buckets and they
 * aggregate across instances.
 */
export const SMUX_LATENCY_BUCKETS_MS: readonly number[] = Object.freeze([
  0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
]);

/**
 * Why a call failed, as {@link SmuxMetricsSnapshot} counts it: the `SmuxError` code the call failed with (on the
 * client, what the caller received; on the server, the transport error it answered with, or why it stopped:
 * `ERR_SMUX_CANCELLED` when the caller let go, `ERR_SMUX_SESSION_CLOSED` when the connection died); `'handler'` when
 * the call was answered with an error value (the handler threw or returned an error, no handler matched, an
 * exception filter answered); `'other'` for a failure that is no `SmuxError` (a client's request source failed).
 */
export type SmuxCallFailure = SmuxErrorCode | 'handler' | 'other';

/** A histogram as Prometheus exposes one: cumulative buckets, a count and a sum. */
export interface SmuxHistogramSnapshot {
  /** The buckets' upper bounds in ms ({@link SMUX_LATENCY_BUCKETS_MS}), ascending; `+Inf` is implicit. */
  readonly bounds: readonly number[];
  /** Cumulative counts: `counts[i]` observations were ≤ `bounds[i]` ms (Prometheus `_bucket{le}`). */
  readonly counts: readonly number[];
  /** Observations in all (Prometheus `_count`, the `+Inf` bucket). */
  readonly count: number;
  /** Sum of the observations, in ms (Prometheus `_sum`, which is in seconds: divide by 1000). */
  readonly sum: number;
}

/**
 * What {@link SmuxMetrics.snapshot} returns: a plain, JSON-serialisable object, new on each call. Counters only
 * grow (for Prometheus counters); `inFlight` is a gauge.
 */
export interface SmuxMetricsSnapshot {
  /** `'client'`: calls this ClientSmux made; `'server'`: calls this ServerSmux served. */
  readonly side: 'client' | 'server';
  readonly calls: {
    /**
     * Calls started: on the client each `send()` subscribed and each `openDuplex()`, from that moment (a call waiting
     * for a slot or a connection counts); on the server each REQUEST that arrived, and each stream refused before
     * its request (over a limit, malformed, too slow: counted as failed at once).
     */
    readonly started: number;
    /** Calls over with a value (every response delivered, or a byte stream ended both ways). */
    readonly completed: number;
    /** Calls over with a failure, by {@link SmuxCallFailure}. Keys appear with their first failure. */
    readonly failed: Readonly<Partial<Record<SmuxCallFailure, number>>>;
    /** Calls started and not over: `started − completed − Σ failed`. */
    readonly inFlight: number;
  };
  readonly events: {
    /** Events sent (`emit()`); a server counts the events its callers' calls back send, once there are any. */
    readonly sent: number;
    /** Events that arrived (a server's `@EventPattern` handlers were given them, or none matched). */
    readonly received: number;
  };
  readonly bytes: {
    /**
     * Bytes of call messages this side wrote on calls' streams (requests, responses, streamed items, byte-stream
     * data and events), smux frame headers not included.
     */
    readonly sent: number;
    /** Bytes this side received on calls' streams (on the server, the connection's control stream too). */
    readonly received: number;
  };
  /** How long calls took, in ms, from `started` until over (failed ones included). */
  readonly latency: SmuxHistogramSnapshot;
  /** Round-trip times measured by pings, in ms. */
  readonly rtt: SmuxHistogramSnapshot;
}

/** The metrics of one ClientSmux (`client.metrics`) or ServerSmux (`server.metrics`). */
export interface SmuxMetrics {
  /** `'client'` or `'server'`: which calls these are (see {@link SmuxMetricsSnapshot.side}). */
  readonly side: 'client' | 'server';
  /** The counters and histograms as they are now. Cheap enough for every scrape; not meant for every call. */
  snapshot(): SmuxMetricsSnapshot;
}

/** A histogram with the fixed bounds: one count per bucket (not cumulative: one increment per observation). */
class Histogram {
  readonly #counts = new Float64Array(SMUX_LATENCY_BUCKETS_MS.length + 1); // the last one is +Inf
  #sum = 0;

  record(ms: number): void {
    const bounds = SMUX_LATENCY_BUCKETS_MS;
    let i = 0;
    while (i < bounds.length && ms > bounds[i]) i++; // most calls are fast: a few comparisons
    this.#counts[i]++;
    this.#sum += ms;
  }

  snapshot(): SmuxHistogramSnapshot {
    const counts: number[] = [];
    let total = 0;
    for (let i = 0; i < SMUX_LATENCY_BUCKETS_MS.length; i++) counts.push((total += this.#counts[i]));
    total += this.#counts[SMUX_LATENCY_BUCKETS_MS.length];
    return { bounds: SMUX_LATENCY_BUCKETS_MS, counts, count: total, sum: this.#sum };
  }
}

/**
 * What the call engine records into (internal: hosts hold it as their optional `metrics`; users see
 * {@link SmuxMetrics}). All in the side's clock's ms.
 */
export class MetricsRecorder {
  readonly side: 'client' | 'server';
  readonly #clock: Clock;
  readonly #latency = new Histogram();
  readonly #rtt = new Histogram();
  readonly #failed = new Map<SmuxCallFailure, number>();
  #started = 0;
  #completed = 0;
  #ended = 0;
  /** Bytes written and received on calls' streams (public fields: each call's endpoint adds to them). */
  bytesSent = 0;
  bytesReceived = 0;
  #eventsSent = 0;
  #eventsReceived = 0;

  constructor(side: 'client' | 'server', clock: Clock) {
    this.side = side;
    this.#clock = clock;
  }

  /** A call started: returns the time to hand back to {@link callEnded} (the one clock read of its start). */
  callStarted(): number {
    this.#started++;
    return this.#clock.now();
  }

  /** A call started whose start the caller read itself from the same clock (a server call's `openedAt`). */
  callOpened(): void {
    this.#started++;
  }

  /** A call is over (at `endedAt`, when the caller read the clock already): `failure` null for a value, else why it failed. */
  callEnded(startedAt: number, failure: SmuxCallFailure | null, endedAt = this.#clock.now()): void {
    this.#ended++;
    if (failure === null) this.#completed++;
    else this.#failed.set(failure, (this.#failed.get(failure) ?? 0) + 1);
    this.#latency.record(endedAt - startedAt);
  }

  /** An event went out: `buffers` are its encoded message. */
  eventSent(buffers: readonly MessagePiece[]): void {
    this.#eventsSent++;
    for (const buffer of buffers) this.bytesSent += buffer.length; // a text piece is ASCII: its length is its bytes
  }

  /** An event arrived (its bytes are counted by its stream's endpoint). */
  eventReceived(): void {
    this.#eventsReceived++;
  }

  /** A round-trip time measured by a ping, in ms. */
  recordRtt(ms: number): void {
    this.#rtt.record(ms);
  }

  snapshot(): SmuxMetricsSnapshot {
    const failed: Partial<Record<SmuxCallFailure, number>> = {};
    for (const [failure, count] of this.#failed) failed[failure] = count;
    return {
      side: this.side,
      calls: { started: this.#started, completed: this.#completed, failed, inFlight: this.#started - this.#ended },
      events: { sent: this.#eventsSent, received: this.#eventsReceived },
      bytes: { sent: this.bytesSent, received: this.bytesReceived },
      latency: this.#latency.snapshot(),
      rtt: this.#rtt.snapshot(),
    };
  }
}

/**
 * The metrics of a side: `metrics` for users (`client.metrics`, `server.metrics`), `recorder` for the call
 * engine's hosts. `clock` must be the one the side's calls use (the server passes its calls' `openedAt`).
 */
export function createSmuxMetrics(
  side: 'client' | 'server',
  clock: Clock = systemClock,
): { readonly metrics: SmuxMetrics; readonly recorder: MetricsRecorder } {
  const recorder = new MetricsRecorder(side, clock);
  return { metrics: Object.freeze({ side, snapshot: () => recorder.snapshot() }), recorder };
}

/** The failure key of a call that failed with `error` (a SmuxError's code, else `'other'`). */
export function failureOf(error: unknown): SmuxCallFailure {
  return isSmuxError(error) ? error.code : 'other';
}
