import type { Clock, SmuxError } from '../smux/index.js';
import type { CallMessage } from './call-codec.js';
import type { MetricsRecorder } from './metrics.js';
import type { PacketCodec } from './packet-codec.js';
import type { ServerCall } from './server-call.js';

/** What a {@link ServerCall} needs from the server. */
export interface CallHost {
  readonly clock: Clock;
  readonly maxMessageBytes: number;
  readonly maxReplyBufferBytes: number;
  readonly codec: PacketCodec;
  /** A REQUEST arrived: route it and run the handler (then `call.run(...)`), or fail it. */
  dispatchRequest(call: ServerCall, message: CallMessage): void;
  /** An EVENT of `size` bytes arrived (the stream is already closed). */
  dispatchEvent(call: ServerCall, message: CallMessage, size: number): void;
  /** A HELLO arrived: the stream is the connection's control stream, not a call. Answer it, or refuse it. */
  openControl(call: ServerCall, message: CallMessage): void;
  /** A message on the control stream after its HELLO (PING, PONG). */
  controlMessage(call: ServerCall, message: CallMessage): void;
  /** Converts a thrown value into what the caller receives as `err` (Nest's exception-filter defaults). */
  toRpcError(error: unknown): unknown;
  /** The call stopped running (answered, refused, cancelled or failed): a close waiting for running calls looks again. */
  callStopped(): void;
  /** The call is over and its handler returned: its slot on the connection is free. */
  callSettled(call: ServerCall): void;
  /** The call wrote its last message and FIN at `now` (the clock's time): watch for the caller's FIN for a while. */
  awaitCallerFin(call: ServerCall, now: number): void;
  /** The call's stream is gone. */
  callClosed(call: ServerCall): void;
  /** A reply could not be encoded (a BigInt, a cycle, a failing serializer): logged as Nest logs a handler's error. */
  replyUnencodable(call: ServerCall, error: unknown): void;
  /** The call failed on one of the server's limits (`ERR_SMUX_LIMIT`, `requestTimeout`): a rate-limited `warn`. */
  limitReached(call: ServerCall, error: SmuxError): void;
  /** Where calls are counted, when the server keeps metrics (on the same clock as `clock`). */
  readonly metrics?: MetricsRecorder;
}
