/** Per-call options carried by a {@link SmuxRecord}. */
export interface SmuxRecordOptions {
  /** Metadata for the handler (`ctx.getHeaders()`), string to string. */
  headers?: Record<string, string>;
  /** Deadline budget of this call, in ms (overrides the client's default `timeout`; 0 = none). */
  timeout?: number;
}

/** Data plus per-call options, as `client.send(pattern, record)` takes it. Build with {@link SmuxRecordBuilder}. */
export class SmuxRecord<TData = unknown> {
  /**
   * @param data - the payload the handler receives
   * @param options - headers and deadline of the call
   */
  constructor(
    readonly data: TData,
    readonly options: Readonly<SmuxRecordOptions> = {},
  ) {}
}

/**
 * Builds a {@link SmuxRecord}: `client.send('sum', new SmuxRecordBuilder([1, 2]).setHeaders({ auth: 't' }).setTimeout(500).build())`.
 */
export class SmuxRecordBuilder<TData = unknown> {
  #headers: Record<string, string> | undefined;
  #timeout: number | undefined;

  /** @param data - the payload */
  constructor(private readonly data?: TData) {}

  /** Sets (merges) string headers. */
  setHeaders(headers: Record<string, string>): this {
    this.#headers = { ...this.#headers, ...headers };
    return this;
  }

  /** Sets the call's deadline budget in ms (0 = none). */
  setTimeout(ms: number): this {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`timeout must be a non-negative number of ms, got ${ms}`);
    this.#timeout = ms;
    return this;
  }

  /** The record. */
  build(): SmuxRecord<TData> {
    const options: SmuxRecordOptions = {};
    if (this.#headers !== undefined) options.headers = Object.freeze({ ...this.#headers });
    if (this.#timeout !== undefined) options.timeout = this.#timeout;
    return new SmuxRecord(this.data as TData, Object.freeze(options));
  }
}
