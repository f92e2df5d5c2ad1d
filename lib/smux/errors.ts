/**
 * Stable error codes of {@link SmuxError}. Match on `code`, never on `message`.
 *
 * - `ERR_SMUX_PROTOCOL`: the peer sent something smux forbids (wrong version, unknown command, bad length,
 *   UPD in v1, a window it consumed beyond what was sent). The session is destroyed with it.
 * - `ERR_SMUX_GOAWAY`: stream ids are exhausted on this session; open a new session.
 * - `ERR_SMUX_KEEPALIVE_TIMEOUT`: nothing arrived for a whole keep-alive timeout.
 * - `ERR_SMUX_SESSION_CLOSED`: the session is closed (locally, by the peer, or its socket ended or failed;
 *   a socket error is the `cause`).
 * - `ERR_SMUX_STREAM_CLOSED`: the stream is closed for the operation attempted.
 * - `ERR_SMUX_TIMEOUT`: a stream's idle read or write timeout passed.
 * - `ERR_SMUX_INVALID_CONFIG`: a configuration value is rejected; the message names the field.
 * - `ERR_SMUX_LIMIT`: a configured limit was hit (streams per session, backlog, message size).
 * - `ERR_SMUX_SHUTTING_DOWN`: refused because the owner is shutting down gracefully; safe to retry elsewhere.
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
  | 'ERR_SMUX_SHUTTING_DOWN';

const kSmuxError = Symbol.for('nestjs-smux.SmuxError');

/**
 * The one error type of the smux core. `code` is stable; `cause` holds the underlying error, if any.
 * `instanceof` works across duplicate installs of the package (the class is branded with a registered symbol).
 */
export class SmuxError extends Error {
  /** Stable machine-readable code. */
  readonly code: SmuxErrorCode;

  /**
   * @param code - stable code
   * @param message - human-readable description
   * @param options - `cause`: the underlying error
   */
  constructor(code: SmuxErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
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

/** True when `value` is a {@link SmuxError}, optionally with the given code. */
export function isSmuxError(value: unknown, code?: SmuxErrorCode): value is SmuxError {
  return value instanceof SmuxError && (code === undefined || value.code === code);
}
