import { Buffer } from 'node:buffer';
import type { Clock, Session, SmuxChannel } from '../smux/index.js';
import { SmuxError } from '../smux/index.js';
import { type CallMessage, decodeTransportError, encodeMessage, Flag, Kind } from './call-codec.js';
import { ControlLink, FEATURE_CONTROL } from './control-link.js';
import { MessageReader } from './message-reader.js';
import { describeServerBytes } from './peer-diagnosis.js';

/*
 * The hello (docs/PROTOCOL.md §3): the first stream a ClientSmux opens is the connection's control stream. The
 * client writes HELLO; a nestjs-smux server answers HELLO at once. A connection is ready for calls only then, so
 * a client pointed at something else — an HTTP server, Nest's TCP transport, a TLS server without `tls` — fails
 * within a bound, with an error that says what it found, instead of hanging until keep-alive gives up.
 */

/** The call-protocol version of this package (the `protocol` field of HELLO). */
export const CALL_PROTOCOL = 1;

/** The longest a server may take to answer the hello (or `connectTimeout`, when smaller). */
export const HELLO_TIMEOUT = 2_000;

/** What a server says in its HELLO. */
export interface ServerHello {
  /** The server's call-protocol version. */
  readonly protocol: number;
  /** The largest call message it accepts, in bytes. */
  readonly maxMessageBytes?: number;
  /** The most calls it runs at once on one connection. */
  readonly maxCallsPerConnection?: number;
  /** What else it does: `control` — it answers PING and may send DRAIN on the control stream. */
  readonly features?: readonly string[];
}

/** What this version does beyond the basic hello, named in both HELLOs. */
export const FEATURES: readonly string[] = [FEATURE_CONTROL];

/** The body of a server's HELLO. */
export function serverHelloBody(maxMessageBytes: number, maxCallsPerConnection: number): ServerHello {
  return { protocol: CALL_PROTOCOL, maxMessageBytes, maxCallsPerConnection, features: FEATURES };
}

/** How a failed hello is described. */
export interface HelloContext {
  /** The server's address, as errors name it. */
  readonly where: string;
  /** The first bytes the server sent, if any (what it is when it is not smux). */
  firstBytes(): Buffer | null;
  /** True when the client speaks TLS (a close right after the handshake then points at its certificate). */
  readonly tls?: boolean;
  /** The server sent DRAIN after the hello: new calls belong on a fresh connection. */
  drain(reason: string): void;
  /** A ping on the control stream came back after `ms`. */
  measured?(ms: number): void;
  /** The server answered a hello of ours before: silence now means busy or stalled, not another transport. */
  readonly answeredBefore?: boolean;
  /** The features our HELLO names (default {@link FEATURES}). */
  readonly features?: readonly string[];
}

/** A connection's hello, done: what the server said, its control stream, and the link that talks on it. */
export interface Greeting {
  readonly hello: ServerHello;
  readonly control: SmuxChannel;
  readonly link: ControlLink;
}

/**
 * Opens the control stream, sends HELLO and waits for the server's; the control stream then stays open (it
 * is the connection's, not a call's) and carries PING, PONG and DRAIN ({@link ControlLink}). Rejects with a `SmuxError` that names what
 * the server turned out to be: `ERR_SMUX_PROTOCOL` for a server that does not speak this transport (or not
 * this protocol version), the server's own error when it refuses the connection (`ERR_SMUX_LIMIT`, …).
 */
export function greet(session: Session, clock: Clock, ms: number, context: HelloContext): Promise<Greeting> {
  return new Promise((resolve, reject) => {
    let channel: SmuxChannel | null = null;
    let link: ControlLink | null = null;
    let settled = false;
    const silent = (): void =>
      settle(
        context.answeredBefore === true
          ? new SmuxError(
              'ERR_SMUX_TIMEOUT',
              `${context.where} did not answer the nestjs-smux hello within ${ms} ms; it answered before, so it is busy or stalled`,
              { retryable: true },
            )
          : new SmuxError(
              'ERR_SMUX_PROTOCOL',
              `${context.where} did not answer the nestjs-smux hello within ${ms} ms: it does not speak this transport ` +
                "(Nest's TCP transport, for one, waits silently)",
            ),
      );
    // After a stall of our own event loop, timers run before the socket is read: an answer that arrived meanwhile
    // is read first (the poll phase comes before setImmediate's), so a live server is not blamed for our stall.
    const timer = clock.setTimeout(() => setImmediate(silent), ms);
    const settle = (outcome: ServerHello | SmuxError): void => {
      if (settled) return;
      settled = true;
      clock.clearTimeout(timer);
      if (outcome instanceof SmuxError) {
        channel?.destroy();
        return reject(outcome);
      }
      const control = channel!;
      link = new ControlLink(
        {
          clock,
          write: (buffers) => {
            for (const buffer of buffers) control.write(buffer);
          },
          get queuedBytes() {
            return control.writableLength;
          },
          get open() {
            return !control.isEnded && !control.isClosed;
          },
          drain: (reason) => context.drain(reason),
          measured: (ms) => context.measured?.(ms),
        },
        outcome.features,
      );
      resolve({ hello: outcome, control, link });
    };
    const reader = new MessageReader(64 * 1024);
    const sink = {
      onMessage(message: CallMessage): void {
        if (link !== null) link.receive(message);
        else if (message.kind === Kind.HELLO) settle(parseHello(message, context.where));
        else if (message.kind === Kind.RESPONSE && (message.flags & Flag.TRANSPORT) !== 0) settle(decodeTransportError(message.body));
        else settle(new SmuxError('ERR_SMUX_PROTOCOL', `${context.where} answered the hello with a message of kind ${message.kind}`));
      },
    };
    try {
      channel = session.openChannel({
        onData(data) {
          try {
            reader.push(data, sink);
          } catch (error) {
            settle(new SmuxError('ERR_SMUX_PROTOCOL', `${context.where} answered the hello with malformed bytes`, { cause: error }));
          }
        },
        onEnd: () => settle(new SmuxError('ERR_SMUX_PROTOCOL', `${context.where} ended the hello stream without answering`)),
        onClose: (error) => {
          settle(closedDuringHello(session, error, context)); // after the hello: the session is ending
          link?.close(error ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed'));
        },
      });
      channel.write(Buffer.concat(encodeMessage(Kind.HELLO, 0, { protocol: CALL_PROTOCOL, features: context.features ?? FEATURES })));
    } catch (error) {
      settle(error instanceof SmuxError ? error : new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed', { cause: error }));
    }
  });
}

function parseHello(message: CallMessage, where: string): ServerHello | SmuxError {
  const body = message.body as Partial<ServerHello> | null;
  if (typeof body !== 'object' || body === null || typeof body.protocol !== 'number') {
    return new SmuxError('ERR_SMUX_PROTOCOL', `${where} sent a malformed HELLO: ${JSON.stringify(message.body)}`);
  }
  return body as ServerHello;
}

/** Why the connection ended before the server's HELLO, in the words a user needs. */
function closedDuringHello(session: Session, error: SmuxError | undefined, context: HelloContext): SmuxError {
  const cause = session.error ?? error;
  const bytes = context.firstBytes();
  const diagnosis = bytes === null ? null : describeServerBytes(bytes);
  if (diagnosis !== null)
    return new SmuxError('ERR_SMUX_PROTOCOL', `${context.where} is not a nestjs-smux server: ${diagnosis}`, { cause });
  if (cause?.code === 'ERR_SMUX_PROTOCOL') {
    return new SmuxError('ERR_SMUX_PROTOCOL', `${context.where} is not a nestjs-smux server: ${cause.message}`, { cause });
  }
  const why =
    context.tls === true
      ? // A TLS 1.3 server checks the client certificate after the handshake, and closes without an alert.
        'the server is shutting down, or it refused our client certificate (mutual TLS: the `tls` option needs a `cert` and `key` its CA trusts)'
      : 'the server is shutting down, or it does not speak this transport (a TLS server closes a plain-text client this way: set the `tls` option if it uses TLS)';
  return new SmuxError(
    'ERR_SMUX_SESSION_CLOSED',
    `${context.where} closed the connection during the nestjs-smux hello, without answering: ${why}`,
    {
      cause,
    },
  );
}
