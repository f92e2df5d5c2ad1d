import type { Duplex } from 'node:stream';
import { BaseRpcContext } from '@nestjs/microservices';
import { type Session, type SmuxChannel, SmuxError } from '../smux/index.js';
import { handlerFacing } from './handler-facing-error.js';
import { connectionOf, type SmuxConnection } from './smux-connection.js';

/** What a {@link SmuxContext} reads from the call it describes (the last of its `getArgs()`). */
export interface CallControl {
  /** Aborted when the caller cancels, the deadline passes, or the server shuts the call down. */
  readonly signal: AbortSignal;
  /** ms left of the call's deadline, or undefined without one. */
  readonly remainingMs: number | undefined;
  /** The Duplex of a byte-stream call, or null. */
  readonly duplex: Duplex | null;
}

type SmuxContextArgs = [channel: SmuxChannel, pattern: string, headers: Readonly<Record<string, string>>, control: CallControl];

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * The context of a call over smux: `@Ctx() ctx: SmuxContext` in a `@MessagePattern` or `@EventPattern`
 * handler, or `context.switchToRpc().getContext()` in guards, interceptors and filters.
 */
export class SmuxContext extends BaseRpcContext<SmuxContextArgs> {
  /** The pattern as a string (object patterns as JSON text). */
  getPattern(): string {
    return this.args[1];
  }

  /** Headers the caller sent (`SmuxRecordBuilder.setHeaders()` or Nest 12's dispatch hook `metadata`). */
  getHeaders(): Readonly<Record<string, string>> {
    return this.args[2];
  }

  /** The same headers under Nest 12's name (`TcpContext.getMetadata()`). */
  getMetadata(): Readonly<Record<string, string>> {
    return this.args[2];
  }

  /**
   * Aborted when the call is cancelled: the caller unsubscribed or timed out, the deadline passed, or the
   * server is shutting down. Pass it to `fetch`, timers, database drivers.
   */
  get signal(): AbortSignal {
    return this.args[3].signal;
  }

  /** ms left until the call's deadline, or undefined when it has none. */
  getRemainingTime(): number | undefined {
    return this.args[3].remainingMs;
  }

  /**
   * The call's byte stream, when the caller opened it with `client.openDuplex()`: a Node `Duplex` whose readable
   * side is what the caller writes and whose writable side reaches the caller's Duplex; the stream's window is the
   * backpressure, `stream.pipeline()` and `for await` work. The call completes once both sides ended their
   * writable sides — the handler must `end()` its side (what it returns is not sent: answer through the stream);
   * a handler that throws or rejects fails the call with its error, as Nest delivers it.
   * @throws SmuxError `ERR_SMUX_INVALID_ARGUMENT` for a call that is not a byte stream (the caller used `send()`): a
   *   handler that lets it propagate fails the call with it (typed at the caller), and Nest does not log it
   */
  getDuplex(): Duplex {
    const control = this.args[3];
    const duplex = control.duplex;
    if (duplex === null) {
      const refusal = new SmuxError(
        'ERR_SMUX_INVALID_ARGUMENT',
        `the call to ${this.getPattern()} is not a byte stream: the caller must use client.openDuplex()`,
      );
      // The caller's mistake (send() to a byte-stream handler): if the handler fails, the call fails with this error,
      // typed at the caller, and Nest does not log the exception as the handler's failure (it answered "Internal
      // server error", and the server logged an ERROR with a stack for every such call — a new-user trial). A handler
      // (or a guard) that catches it and goes on answers as it likes: reading the context changes nothing.
      noteNotByteStream(control, refusal);
      throw handlerFacing(refusal);
    }
    return duplex;
  }

  /**
   * The connection the call came on: who the caller is (`remoteAddress`, the TLS `peerCertificate`, the app's own
   * `data` about it) and, when it serves calls (a ServerSmux that dials out), a `ClientProxy` to call it back on the
   * same connection.
   * @throws SmuxError `ERR_SMUX_UNAVAILABLE` for a context that did not come from a connection (one made by hand)
   */
  getConnection(): SmuxConnection {
    const connection = connectionOf(this.args[0].session);
    if (connection === null) throw new SmuxError('ERR_SMUX_UNAVAILABLE', 'this context did not come from a smux connection');
    return connection;
  }

  /** The smux stream of this call (its lean channel face). */
  getStream(): SmuxChannel {
    return this.args[0];
  }

  /** The smux session (one client connection). */
  getSession(): Session {
    return this.args[0].session;
  }
}

/** The server's call, as a context reaches it: the readings, and the note of a `getDuplex()` it could not serve. */
interface ServerCallControl extends CallControl {
  /** `ctx.getDuplex()` threw `refusal`: should the handler fail, the call fails with it (a transport error). */
  notByteStream(refusal: SmuxError): void;
}

// Set by CallReadings' static block: tells a server's call that getDuplex() threw (a context made by hand: nothing).
let noteNotByteStream: (control: CallControl, refusal: SmuxError) => void;

/**
 * What a context holds of its call: the three readings {@link CallControl} names, and nothing else. The server's
 * call object has methods and a connection that are the transport's own; `ctx.getArgs()` must not hand them to
 * application code (docs/NOTES.md: a context's last argument was the call itself until 2026-12-03).
 */
class CallReadings implements CallControl {
  readonly #call: ServerCallControl;

  static {
    noteNotByteStream = (control, refusal) => {
      if (control instanceof CallReadings) control.#call.notByteStream(refusal);
    };
  }

  constructor(call: ServerCallControl) {
    this.#call = call;
  }

  get signal(): AbortSignal {
    return this.#call.signal;
  }

  get remainingMs(): number | undefined {
    return this.#call.remainingMs;
  }

  get duplex(): Duplex | null {
    return this.#call.duplex;
  }
}

/** Builds the context of a call (the server's use): `call` is read through {@link CallReadings}, never exposed. */
export function createSmuxContext(
  channel: SmuxChannel,
  pattern: string,
  headers: Readonly<Record<string, string>> | undefined,
  call: ServerCallControl,
): SmuxContext {
  return new SmuxContext([channel, pattern, headers ?? NO_HEADERS, new CallReadings(call)]);
}
