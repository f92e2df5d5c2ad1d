import type { LoggerService } from '@nestjs/common';
import type { Clock, TimerHandle } from '../smux/index.js';

/** Lines of one kind logged at most per window; the rest are counted and summed up once the window ends. */
const BURST = 5;
const WINDOW_MS = 10_000;

type Level = 'log' | 'warn' | 'error' | 'debug';

const WHAT: Record<Level, string> = { log: 'lines', warn: 'warnings', error: 'errors', debug: 'debug lines' };

interface Bucket {
  level: Level;
  windowStart: number;
  lines: number;
  suppressed: number;
  timer: TimerHandle | null;
}

/**
 * Lines about what peers do, rate-limited per kind (`'protocol'`, `'refused'`, …) so that a flood of bad connections
 * or messages cannot flood the log: at most five lines of a kind per 10 s, then one line saying how many more there
 * were. Mostly warnings; an error Nest itself would log per message (an event nobody handles) too, and the debug
 * lines per connection (Nest's default logger prints `debug`: 600 garbage or empty connections wrote 900 lines).
 */
export class RateLimitedLog {
  readonly #logger: LoggerService;
  readonly #clock: Clock;
  readonly #buckets = new Map<string, Bucket>();

  /**
   * @param logger - where lines go (Nest's `Logger` with the transport's context)
   * @param clock - time source of the windows
   */
  constructor(logger: LoggerService, clock: Clock) {
    this.#logger = logger;
    this.#clock = clock;
  }

  /** Logs `message` at `log` (info) unless lines of `kind` are over their budget for the current window. */
  log(kind: string, message: string): void {
    this.#log('log', kind, message);
  }

  /** Logs `message` at `warn` unless lines of `kind` are over their budget for the current window. */
  warn(kind: string, message: string): void {
    this.#log('warn', kind, message);
  }

  /** Logs `message` at `error` unless lines of `kind` are over their budget for the current window. */
  error(kind: string, message: string): void {
    this.#log('error', kind, message);
  }

  /** Logs `message` at `debug` unless lines of `kind` are over their budget for the current window. */
  debug(kind: string, message: string): void {
    this.#log('debug', kind, message);
  }

  #log(level: Level, kind: string, message: string): void {
    const now = this.#clock.now();
    let bucket = this.#buckets.get(kind);
    if (bucket === undefined || now - bucket.windowStart >= WINDOW_MS) {
      if (bucket !== undefined) this.#summarise(kind, bucket);
      bucket = { level, windowStart: now, lines: 0, suppressed: 0, timer: null };
      this.#buckets.set(kind, bucket);
    }
    if (bucket.lines < BURST) {
      bucket.lines++;
      this.#write(level, message);
      return;
    }
    bucket.suppressed++;
    const current = bucket;
    current.timer ??= this.#clock.setTimeout(
      () => {
        current.timer = null;
        this.#summarise(kind, current);
        if (this.#buckets.get(kind) === current) this.#buckets.delete(kind);
      },
      WINDOW_MS - (now - current.windowStart),
    );
  }

  /** Stops the summary timers (their counts are logged now). */
  close(): void {
    for (const [kind, bucket] of this.#buckets) this.#summarise(kind, bucket);
    this.#buckets.clear();
  }

  #summarise(kind: string, bucket: Bucket): void {
    if (bucket.timer !== null) this.#clock.clearTimeout(bucket.timer);
    bucket.timer = null;
    if (bucket.suppressed === 0) return;
    this.#write(
      bucket.level,
      `… and ${bucket.suppressed} more ${kind} ${WHAT[bucket.level]} like these within ${WINDOW_MS / 1000} s (not logged one by one)`,
    );
    bucket.suppressed = 0;
  }

  #write(level: Level, message: string): void {
    if (level === 'debug')
      this.#logger.debug?.(message); // optional in LoggerService
    else this.#logger[level](message);
  }
}
