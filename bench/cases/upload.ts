import { closedLoop, describe, type LoopResult, STALL_MS } from './closed-loop.js';
import { makePayload } from './payload.js';
import type { Driver, RunResult, UploadHolSpec, UploadSpec } from './spec.js';

/** Once every chunk is handed out, how long the server may take to confirm the byte count (a buffering client). */
const TAIL_MS = 30_000;

/** One timed upload. */
export interface UploadRun {
  stalled: boolean;
  failed?: string;
  ms: number;
  /** Bytes handed out by the source (and confirmed by the server, unless `failed`). */
  bytes: number;
  /** MB/s (10⁶ bytes) from the first chunk until the server's byte count arrived. */
  mbps: number;
  /** The client's peak RSS during the upload (sampled every 100 ms), in bytes. */
  clientPeakRss: number;
}

/** Runs alternate the order of a system's variants (one agent process runs every round of a system). */
let runs = 0;

function ordered(variants: readonly string[]): string[] {
  return runs++ % 2 === 0 ? [...variants] : [...variants].reverse();
}

function variantsOf(driver: Driver): readonly string[] {
  if (driver.upload === undefined || driver.uploadVariants === undefined || driver.uploadVariants.length === 0)
    throw new Error('this system has no upload');
  return driver.uploadVariants;
}

/**
 * One upload through `variant` of `bytes` (fewer if `stop()` ends it first), timed from its start until the
 * server's byte count arrives, which must be the bytes the source handed out. A stall: no chunk handed out for
 * 5 s, or no answer within 30 s of the last one. A wrong count or an error fails it. `onChunk` sees the source's
 * progress too.
 */
export function timedUpload(
  driver: Driver,
  variant: string,
  chunks: { bytes: number; chunkBytes: number; stop?: () => boolean; onChunk?: (bytes: number) => void },
): Promise<UploadRun> {
  const { bytes, chunkBytes, stop = () => false, onChunk = () => undefined } = chunks;
  let handed = 0;
  let exhausted = false;
  const started = performance.now();
  return new Promise<UploadRun>((resolve) => {
    let over = false;
    let lastSeen = -1;
    let lastChange = started;
    let peakRss = process.memoryUsage.rss();
    const finish = (run: { stalled: boolean; failed?: string }): void => {
      if (over) return;
      over = true;
      clearInterval(watchdog);
      const ms = performance.now() - started;
      resolve({ ...run, ms, bytes: handed, mbps: handed / 1e3 / ms, clientPeakRss: Math.max(peakRss, process.memoryUsage.rss()) });
    };
    const watchdog = setInterval(() => {
      const now = performance.now();
      peakRss = Math.max(peakRss, process.memoryUsage.rss());
      if (handed !== lastSeen) {
        lastSeen = handed;
        lastChange = now;
      } else if (now - lastChange >= (exhausted || handed >= bytes ? TAIL_MS : STALL_MS)) finish({ stalled: true });
    }, 100);
    const stopping = (): boolean => (exhausted ||= stop());
    driver.upload!(variant, {
      bytes,
      chunkBytes,
      stop: stopping,
      onChunk: (n) => {
        handed += n;
        onChunk(n);
      },
    }).then(
      (received) =>
        finish(
          received === handed
            ? { stalled: false }
            : { stalled: false, failed: `${variant}: the server received ${received} of ${handed} bytes` },
        ),
      (error: unknown) => finish({ stalled: false, failed: `${variant}: ${describe(error)}` }),
    );
  });
}

/**
 * Bytes per second of each variant's latest upload in this agent (first its calibration's), by variant and
 * calibration size: an upload is sized by bytes from it, not stopped by the clock — Nest's gRPC client writes what its source yields without waiting (no
 * backpressure), so a source stopped by time queued gigabytes and stalled (2026-12-05).
 */
const calibrated = new Map<string, number>();

/**
 * Upload throughput: a warm-up upload, then the measured one, through each of the system's variants (their order
 * alternates from run to run), sized by time (issue 11): the agent's first run of a variant uploads
 * `calibrationBytes` to learn its rate (not recorded; it warms up too), then each run uploads `warmupSeconds` and
 * `seconds` (× 1.15) of bytes at that rate. `<variant>MBps` per variant; `rate` is the first variant's.
 */
export async function runUpload(driver: Driver, spec: UploadSpec): Promise<RunResult> {
  const variants = variantsOf(driver);
  const figures: Record<string, number> = {};
  const chunked = (bytes: number): number => Math.max(spec.chunkBytes, Math.ceil(bytes / spec.chunkBytes) * spec.chunkBytes);
  for (const variant of ordered(variants)) {
    const key = `${variant} ${spec.calibrationBytes}`; // the priming's small upload does not size the case's
    let rate = calibrated.get(key);
    // Twice: the first upload of a fresh agent runs cold code (its rate is half the warm one's or less).
    for (let i = 0; rate === undefined && i < 2; i++) {
      const run = await timedUpload(driver, variant, { bytes: spec.calibrationBytes, chunkBytes: spec.chunkBytes });
      if (run.stalled || run.failed !== undefined)
        return { stalled: run.stalled, ...(run.failed === undefined ? {} : { failed: run.failed }), phase: `${variant} calibration` };
      if (i === 1) calibrated.set(key, (rate = run.bytes / (run.ms / 1000)));
    }
    if (rate === undefined) throw new Error('unreachable: the calibration sets the rate');
    for (const [phase, seconds] of [
      ['warm-up', spec.warmupSeconds],
      ['measure', spec.seconds * 1.15],
    ] as const) {
      if (seconds === 0) continue;
      const run = await timedUpload(driver, variant, { bytes: chunked(rate * seconds), chunkBytes: spec.chunkBytes });
      if (run.stalled || run.failed !== undefined)
        return { stalled: run.stalled, ...(run.failed === undefined ? {} : { failed: run.failed }), phase: `${variant} ${phase}` };
      if (phase === 'measure') {
        calibrated.set(key, run.bytes / (run.ms / 1000)); // the next round is sized at this round's rate
        figures[`${variant}MBps`] = run.mbps;
        figures[`${variant}ClientPeakRss`] = run.clientPeakRss;
        figures[`${variant}Seconds`] = run.ms / 1000;
      }
    }
  }
  return { stalled: false, rate: figures[`${variants[0]}MBps`], ...figures };
}

/** The most small calls one phase of an upload-hol run makes (its `seconds` end it long before, on this machine). */
const MAX_SMALL_CALLS = 4_000_000;

/**
 * Small calls during an upload on the same client (the same connection), for each upload variant (their order
 * alternating from run to run): `warmup` unmeasured small calls, small echo calls alone for `seconds` (at least
 * `count`), then as long while an upload runs —
 * it starts first, the small calls once it has handed out `leadBytes`, and it ends after the last of them. Per
 * variant: `<variant>P99Alone`, `<variant>P99During`, `<variant>P99Ratio` (during ÷ alone), the p50s, calls/s of
 * both and the upload's MB/s while the small calls ran.
 */
export async function runUploadHol(driver: Driver, spec: UploadHolSpec): Promise<RunResult> {
  const variants = variantsOf(driver);
  const payload = makePayload(spec.size);
  const call = (done: (error?: unknown) => void): void => driver.echo(payload, done);
  // The small calls must progress by themselves (5 s without one completing is a stall, upload or not). Each phase
  // lasts `seconds` (a count of 10 000 calls at 1 in flight was ≈ 0.7 s, and at 64 ≈ 0.1 s: one pause set the p99).
  const loop = (): Promise<LoopResult> =>
    closedLoop({ call, count: spec.count, minMs: spec.seconds * 1000, maxCount: MAX_SMALL_CALLS, inFlight: spec.inFlight });
  const figures: Record<string, number> = {};
  let errors = 0;
  let firstError: string | undefined;
  for (const variant of ordered(variants)) {
    // Unmeasured small calls first: the previous upload's garbage is collected here, not in the run alone.
    const settle = await closedLoop({ call, count: spec.warmup, inFlight: spec.inFlight });
    if (settle.stalled) return { stalled: true, phase: `${variant}: settling` };
    const alone = await loop();
    if (alone.stalled) return { stalled: true, phase: `${variant}: alone` };

    let handed = 0;
    let smallDone = false;
    let leading: (() => void) | null = null;
    const led = new Promise<void>((resolve) => (leading = resolve));
    const upload = timedUpload(driver, variant, {
      bytes: spec.maxBytes,
      chunkBytes: spec.chunkBytes,
      stop: () => smallDone,
      onChunk: (n) => {
        handed += n;
        if (handed >= spec.leadBytes) leading?.();
      },
    });
    void upload.then(() => leading?.()); // an upload that ended (or failed) before its lead
    await led;
    const handedBefore = handed;
    const t0 = performance.now();
    const during = await loop();
    const duringMs = performance.now() - t0;
    const duringBytes = handed - handedBefore;
    smallDone = true;
    const up = await upload; // bounded by its own stall detection
    if (up.failed !== undefined) return { stalled: up.stalled, failed: up.failed, phase: `${variant}: during` };
    if (during.stalled || up.stalled) return { stalled: true, phase: `${variant}: during` };
    if (up.bytes >= spec.maxBytes)
      return { stalled: false, failed: `${variant}: the upload ended (${spec.maxBytes} bytes) before the small calls` };
    errors += alone.errors + during.errors;
    firstError ??= alone.firstError ?? during.firstError;
    Object.assign(figures, {
      [`${variant}P99Alone`]: alone.p99,
      [`${variant}P99During`]: during.p99,
      [`${variant}P99Ratio`]: during.p99 / alone.p99,
      [`${variant}P50Alone`]: alone.p50,
      [`${variant}P50During`]: during.p50,
      [`${variant}CallsAlone`]: alone.rate,
      [`${variant}CallsDuring`]: during.rate,
      [`${variant}MBps`]: duringBytes / 1e3 / duringMs,
    });
  }
  return { stalled: false, ...figures, errors, ...(firstError === undefined ? {} : { firstError }) };
}
