import { SmuxError } from '../smux/index.js';
import { describeValue } from '../util/describe.js';

/** Per-call options carried by a {@link SmuxRecord}. */
export interface SmuxRecordOptions {
  /** Metadata for the handler (`ctx.getHeaders()`), string to string. */
  headers?: Readonly<Record<string, string>>;
  /** Deadline budget of this call, in ms (overrides the client's default `timeout`; 0 = none). */
  timeout?: number;
  /** Wait for a connection instead of failing fast while there is none (overrides the client's `waitForReady`). */
  waitForReady?: boolean;
}

const kRecord = Symbol.for('nestjs-smux.SmuxRecord');

/**
 * Data plus per-call options, as `client.send(pattern, record)` takes it. Build with {@link SmuxRecordBuilder}.
 * Recognised across copies of the package and between its CommonJS and ESM builds.
 */
export class SmuxRecord<TData = unknown> {
  /**
   * @param data - the payload the handler receives
   * @param options - headers, deadline and waiting of the call
   */
  constructor(
    readonly data: TData,
    readonly options: Readonly<SmuxRecordOptions> = {},
  ) {}

  /** True when `value` is a {@link SmuxRecord}, also one made by another copy of this package. */
  static [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[kRecord] === true;
  }

  /** Brand read by `instanceof`. */
  get [kRecord](): true {
    return true;
  }
}

/**
 * Builds a {@link SmuxRecord}:
 * `client.send('sum', new SmuxRecordBuilder([1, 2]).setHeaders({ auth: 't' }).setTimeout(500).build())`.
 */
export class SmuxRecordBuilder<TData = unknown> {
  #headers: Record<string, string> | undefined;
  #timeout: number | undefined;
  #waitForReady: boolean | undefined;

  /** @param data - the payload */
  constructor(private readonly data?: TData) {}

  /**
   * Sets (merges) headers; values must be strings.
   * @throws SmuxError `ERR_SMUX_INVALID_ARGUMENT` for a value that is not a string
   */
  setHeaders(headers: Record<string, string>): this {
    for (const [name, value] of Object.entries(headers)) {
      if (typeof value !== 'string') {
        throw new SmuxError(
          'ERR_SMUX_INVALID_ARGUMENT',
          `SmuxRecordBuilder: header "${name}" must be a string, got ${describeValue(value)}`,
        );
      }
    }
    this.#headers = { ...this.#headers, ...headers };
    return this;
  }

  /**
   * Sets the call's deadline budget in ms (0 = none).
   * @throws SmuxError `ERR_SMUX_INVALID_ARGUMENT` for a negative, fractional or non-number value
   */
  setTimeout(ms: number): this {
    assertDeadline(ms, 'SmuxRecordBuilder: setTimeout() takes');
    this.#timeout = ms;
    return this;
  }

  /** Makes the call wait for a connection (up to its deadline) instead of failing fast while there is none. */
  setWaitForReady(wait = true): this {
    this.#waitForReady = wait;
    return this;
  }

  /** The record. */
  build(): SmuxRecord<TData> {
    const options: SmuxRecordOptions = {};
    if (this.#headers !== undefined) options.headers = Object.freeze({ ...this.#headers });
    if (this.#timeout !== undefined) options.timeout = this.#timeout;
    if (this.#waitForReady !== undefined) options.waitForReady = this.#waitForReady;
    return new SmuxRecord(this.data as TData, Object.freeze(options));
  }
}

/**
 * Throws `ERR_SMUX_INVALID_ARGUMENT` unless `ms` is a deadline: an integer from 0 to 4294967295 (0: none). `what`
 * starts the message ("… takes").
 */
export function assertDeadline(ms: unknown, what: string): asserts ms is number {
  if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 0 || ms > 0xffff_ffff) {
    throw new SmuxError(
      'ERR_SMUX_INVALID_ARGUMENT',
      `${what} an integer from 0 to 4294967295 (ms; 0 = no deadline), got ${describeValue(ms)}`,
    );
  }
}
