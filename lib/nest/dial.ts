import * as net from 'node:net';
import * as tls from 'node:tls';
import { type Clock, Session, SmuxError, type TimerHandle } from '../smux/index.js';
import type { ResolvedClientOptions } from './options.js';

/** A client session just dialled, with the first bytes the server sent (kept: they say what a non-smux server is). */
export interface DialedSession {
  readonly session: Session;
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
    socket.once('error', fail);
    socket.once(ready, () => {
      clock.clearTimeout(timer);
      socket.off('error', fail);
      let first: Buffer | null = null;
      socket.once('data', (chunk: Buffer) => (first = chunk));
      resolve({ session: Session.client(socket, options.smux), firstBytes: () => first });
    });
  });
}

/** Graceful session close, bounded: destroyed when it takes longer than `ms`. */
export async function closeWithin(session: Session, clock: Clock, ms: number): Promise<void> {
  let timer: TimerHandle | null = null;
  await Promise.race([session.close(), new Promise<void>((resolve) => (timer = clock.setTimeout(resolve, ms)))]);
  if (timer !== null) clock.clearTimeout(timer);
  session.destroy();
}
