import * as net from 'node:net';
import { clearInterval, setInterval } from 'node:timers';
import * as tls from 'node:tls';
import { type Clock, Session, SmuxError, type TimerHandle } from '../smux/index.js';
import type { ResolvedClientOptions } from './options.js';

/** A client session just dialled, with the first bytes the server sent (kept: they say what a non-smux server is). */
export interface DialedSession {
  readonly session: Session;
  /** The session's socket (a dialling server watches its errors: server-connection.ts). */
  readonly socket: net.Socket;
  readonly firstBytes: () => Buffer | null;
}

/**
 * Connects to the client's address (TLS handshake included) within `connectTimeout` and starts the session in the
 * same tick, so no byte the server sends can arrive before the session listens. `where` names the address in errors.
 */
export function dialSession(options: ResolvedClientOptions, clock: Clock, where: string): Promise<DialedSession> {
  const { address, tls: tlsOptions, connectTimeout } = options;
  return new Promise((resolve, reject) => {
    const target = 'path' in address ? { path: address.path } : { host: address.host, port: address.port };
    const socket = tlsOptions !== undefined ? tls.connect({ ...tlsOptions, ...target }) : net.connect(target);
    const ready = tlsOptions !== undefined ? 'secureConnect' : 'connect';
    const timer = clock.setTimeout(
      () => fail(new SmuxError('ERR_SMUX_TIMEOUT', `could not connect to ${where} within ${connectTimeout} ms`)),
      connectTimeout,
    );
    const fail = (error: Error): void => {
      clock.clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    const failed = (error: Error): void => fail(tlsOptions === undefined ? error : closedDuringTlsHandshake(error, where));
    socket.once('error', failed);
    socket.once(ready, () => {
      clock.clearTimeout(timer);
      socket.off('error', failed);
      let first: Buffer | null = null;
      socket.once('data', (chunk: Buffer) => (first = chunk));
      resolve({ session: Session.client(socket, options.smux), socket, firstBytes: () => first });
    });
  });
}

/**
 * A TLS client whose server closed the connection during the handshake learns from Node only "Client network socket
 * disconnected before secure TLS connection was established" (ECONNRESET; EPIPE when its hello was still being
 * written). A plain-text server closes a TLS client this way — a ServerSmux without `tls`, once it sees the handshake
 * — so the error asks, as a plain-text client of a TLS server is told (hello.ts). Node's error is the cause; a
 * certificate error, a refusal or a timeout stays as it is.
 */
function closedDuringTlsHandshake(error: Error, where: string): Error {
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== 'ECONNRESET' && code !== 'EPIPE') return error;
  return new SmuxError(
    'ERR_SMUX_SESSION_CLOSED',
    `${where} closed the connection during the TLS handshake (is the server using TLS? a plain-text server closes a TLS ` +
      'client this way: remove the `tls` option if it does not)',
    { cause: error },
  );
}

/** Lingering after our side of a close, how long the peer's input must stay quiet before the socket is closed. */
const QUIET_MS = 50;

/** The closes {@link closeWithin} runs: a second call on the same session joins the first (and its lingering). */
const closings = new WeakMap<Session, Promise<void>>();

/**
 * Graceful session close, bounded: everything queued is flushed and our side ended (TCP half-close); destroyed when
 * that takes longer than `ms`.
 *
 * With `linger` (the default: a server ending a connection it answered on), the session then reads on until the peer
 * hangs up or its input has been quiet for {@link QUIET_MS} — all of it read: not while the session's receive budget
 * holds reading — within the same `ms`. Closing a socket with input not yet read makes the kernel reset the connection
 * and drop what it has not sent yet: destroyed as soon as our side was flushed, a peer that sent a window update while
 * reading a long last reply lost the reply's tail (found 2026-12-05, docs/NOTES.md "A graceful close that lost the
 * tail"). A second call on a session being closed here joins that close, bounded by its own `ms` (a drained
 * connection closing when the server's close comes). A client's own close passes false: its calls are failed with the
 * session, and the peer (ours) answers its FIN at once.
 */
export async function closeWithin(session: Session, clock: Clock, ms: number, linger = true): Promise<void> {
  let timer: TimerHandle | null = null;
  const over = new Promise<void>((resolve) => (timer = clock.setTimeout(resolve, ms)));
  let closing = closings.get(session);
  if (closing === undefined) {
    // A session closing or closed already (not here): its close is someone else's, or over; only the bound is ours.
    closing = linger && !session.isClosed ? session.close().then(() => hungUpOrQuiet(session)) : session.close();
    closings.set(session, closing);
  }
  await Promise.race([closing, over]);
  if (timer !== null) clock.clearTimeout(timer);
  session.destroy();
}

/**
 * Resolves once the peer hangs up (the session's `'close'`), or once no input has arrived for {@link QUIET_MS} while
 * the session could read it (its receive budget not spent: a spent one holds reading, and input then waits unread in
 * the socket). On real time (`node:timers`, which a test's fake timers do not replace): it watches the socket, not a
 * deadline of the app's clock.
 */
function hungUpOrQuiet(session: Session): Promise<void> {
  return new Promise<void>((resolve) => {
    let seen = session.stats.bytesIn;
    const done = (): void => {
      clearInterval(watch);
      session.off('close', done);
      resolve();
    };
    const watch = setInterval(() => {
      const { bytesIn, receiveBudgetLeft } = session.stats;
      if (bytesIn === seen && receiveBudgetLeft > 0) done();
      seen = bytesIn;
    }, QUIET_MS);
    watch.unref();
    session.once('close', done);
  });
}
