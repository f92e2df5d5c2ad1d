import { IntrinsicException } from '@nestjs/common';
import { SmuxError } from '../smux/index.js';

/** SmuxError's brand (errors.ts): `instanceof SmuxError` reads it, so that copies of the package recognise each other. */
const SMUX_ERROR_BRAND = Symbol.for('nestjs-smux.SmuxError');

/**
 * The error the transport raises into handler code when it stops a call — `ctx.signal`'s reason, a streamed
 * `@Payload()`'s error, a byte stream's: the same code, message, `retryable`, `cause` and stack as `reason`, and a
 * `SmuxError` by `instanceof` and `isSmuxError()`, but also Nest's `IntrinsicException`. A handler that lets it
 * propagate — a `for await` over the payload of a call its caller cancelled, the README's own pattern — is then not
 * logged by Nest's exception filter as an error with its stack: the call's end is not the handler's failure, and the
 * transport has said what happened already (a rate-limited warning for a limit, nothing for a cancellation). Without
 * this, every cancelled client stream logged an ERROR, and a peer could make the server log one per call.
 */
class HandlerFacingError extends IntrinsicException {
  static {
    // `util.inspect` and stack readers name an error by its constructor: this one shows as the SmuxError it stands for.
    Object.defineProperty(this, 'name', { value: 'SmuxError' });
  }

  readonly code: SmuxError['code'];
  readonly retryable: boolean;

  constructor(reason: SmuxError) {
    super(reason.message, reason.cause === undefined ? undefined : { cause: reason.cause });
    this.code = reason.code;
    this.retryable = reason.retryable;
    if (reason.stack !== undefined) this.stack = reason.stack;
  }

  override get name(): string {
    return 'SmuxError';
  }

  get [SMUX_ERROR_BRAND](): true {
    return true;
  }
}

/** `reason` as handler code receives it: a SmuxError that Nest's exception filters do not log (see above). */
export function handlerFacing(reason: SmuxError): SmuxError {
  return reason instanceof HandlerFacingError ? reason : (new HandlerFacingError(reason) as unknown as SmuxError);
}

/**
 * What a handler's input fails with when the caller's direction ends with `END` + `ERROR` (its source failed;
 * PROTOCOL.md §5, §6): a message of ours, the caller's error body (as sent) only as `cause`. The body is the peer's
 * text: thrown on as it was, Nest's exception filter logged it verbatim — one ERROR line per call, as long as the
 * body, with its ANSI escapes and forged `[Nest]` lines (found by a hostile-peer trial). Handler-facing, it is not
 * logged at all. `ERR_SMUX_CANCELLED`: the caller's side ended the call's input before its end, as a ClientSmux
 * whose source fails does with its FIN — so a handler sees the same code whichever caller's source failed.
 */
export function callerSourceFailed(body: unknown): SmuxError {
  return handlerFacing(new SmuxError('ERR_SMUX_CANCELLED', "the caller's source failed", { cause: body }));
}
