/**
 * Stable error codes of {@link SmuxError}. Match on `code`, never on `message`.
 *
 * The smux core:
 * - `ERR_SMUX_PROTOCOL`: the peer sent something smux forbids (wrong version, unknown command, bad length,
 *   UPD in v1, a window it consumed beyond what was sent, in v2 data past a stream's window that spent the
 *   session's receive budget), or, in the Nest transport, a malformed call message. A session is destroyed with it.
 * - `ERR_SMUX_GOAWAY`: stream ids are exhausted on this session; open a new session.
 * - `ERR_SMUX_KEEPALIVE_TIMEOUT`: nothing arrived for a whole keep-alive timeout.
 * - `ERR_SMUX_SESSION_CLOSED`: the session is closed (locally, by the peer, or its socket ended or failed;
 *   a socket error is the `cause`).
 * - `ERR_SMUX_STREAM_CLOSED`: the stream is closed for the operation attempted.
 * - `ERR_SMUX_TIMEOUT`: a stream's idle timeout, or a call's deadline, passed.
 * - `ERR_SMUX_INVALID_CONFIG`: a configuration value or option is rejected; the message names it.
 * - `ERR_SMUX_LIMIT`: a configured limit was hit (streams per session, backlog, message size, calls, buffers).
 * - `ERR_SMUX_SHUTTING_DOWN`: refused because the owner is shutting down gracefully; safe to retry elsewhere.
 *
 * The Nest transport adds:
 * - `ERR_SMUX_UNAVAILABLE`: no connection to the server (the call was not sent); `cause` is the last
 *   connection error. Retryable.
 * - `ERR_SMUX_CANCELLED`: the call was cancelled (the caller unsubscribed, or the call's stream was closed).
 * - `ERR_SMUX_ENCODING`: a value could not be encoded or decoded (JSON cannot carry a BigInt or a cycle; a
 *   custom (de)serializer threw); `cause` is the underlying error.
 * - `ERR_SMUX_INVALID_ARGUMENT`: a call was made with an invalid argument (a missing pattern, a non-string
 *   header, a negative deadline).
 */
export type SmuxErrorCode =
  | 'ERR_SMUX_PROTOCOL'
  | 'ERR_SMUX_GOAWAY'
  | 'ERR_SMUX_KEEPALIVE_TIMEOUT'
  | 'ERR_SMUX_SESSION_CLOSED'
  | 'ERR_SMUX_STREAM_CLOSED'
  | 'ERR_SMUX_TIMEOUT'
  | 'ERR_SMUX_INVALID_CONFIG'
  | 'ERR_SMUX_LIMIT'
  | 'ERR_SMUX_SHUTTING_DOWN'
  | 'ERR_SMUX_UNAVAILABLE'
  | 'ERR_SMUX_CANCELLED'
  | 'ERR_SMUX_ENCODING'
  | 'ERR_SMUX_INVALID_ARGUMENT';

/** Codes whose operation certainly did not run, so retrying it (elsewhere, or later) is safe. */
const RETRYABLE: ReadonlySet<string> = new Set<SmuxErrorCode>(['ERR_SMUX_SHUTTING_DOWN', 'ERR_SMUX_UNAVAILABLE', 'ERR_SMUX_GOAWAY']);

/** `retryable` of a {@link SmuxError} of this code unless told otherwise (internal: not in the barrel). */
export function retryableByDefault(code: string): boolean {
  return RETRYABLE.has(code);
}

const kSmuxError = Symbol.for('nestjs-smux.SmuxError');

/** Options of a {@link SmuxError}. */
export interface SmuxErrorOptions {
  /** The underlying error. */
  cause?: unknown;
  /** Overrides the default for the code (see {@link SmuxError.retryable}). */
  retryable?: boolean;
}

/**
 * The one error type of nestjs-smux. `code` is stable; `cause` holds the underlying error, if any.
 * `instanceof` works across duplicate installs of the package and between its CommonJS and ESM builds (the
 * class is branded with a registered symbol).
 */
export class SmuxError extends Error {
  /** Stable machine-readable code. */
  readonly code: SmuxErrorCode;
  /**
   * True when the operation certainly did not take effect, so it is safe to retry: by default for
   * `ERR_SMUX_SHUTTING_DOWN`, `ERR_SMUX_UNAVAILABLE` and `ERR_SMUX_GOAWAY`.
   */
  readonly retryable: boolean;

  /**
   * @param code - stable code
   * @param message - human-readable description
   * @param options - `cause`: the underlying error; `retryable`: overrides the code's default
   */
  constructor(code: SmuxErrorCode, message: string, options?: SmuxErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options?.retryable ?? RETRYABLE.has(code);
  }

  override get name(): string {
    return 'SmuxError';
  }

  /** True when `value` is a {@link SmuxError}, also one created by another copy of this package. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[kSmuxError] === true;
  }

  /** Brand read by `instanceof`. */
  get [kSmuxError](): true {
    return true;
  }
}

/**
 * `error` as a SmuxError: itself, or one with `code` and its message, `error` as the cause (a Go user's
 * `destroy(new Error(…))`: what a session or stream ends with is always a SmuxError).
 */
export function asSmuxError(error: Error, code: SmuxErrorCode): SmuxError {
  return error instanceof SmuxError ? error : new SmuxError(code, error.message, { cause: error });
}

/** True when `value` is a {@link SmuxError}, optionally with the given code. */
export function isSmuxError(value: unknown, code?: SmuxErrorCode): value is SmuxError {
  return value instanceof SmuxError && (code === undefined || value.code === code);
}
