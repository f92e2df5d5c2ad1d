import type { SmuxConnection } from './smux-connection.js';
import type { SmuxError } from '../smux/index.js';
import type { Session } from '../smux/index.js';

/**
 * Connection status published by `client.status` and `server.status` (as Nest's transports do).
 * A string union, not an exported `const enum`, so consumers compiling with `isolatedModules` can use it.
 */
export type SmuxStatus = 'connected' | 'disconnected' | 'reconnecting';

/** Status values, for comparisons without string literals. */
export const SmuxStatus = Object.freeze({
  CONNECTED: 'connected',
  DISCONNECTED: 'disconnected',
  RECONNECTING: 'reconnecting',
} as const satisfies Record<string, SmuxStatus>);

/** Events of {@link ClientSmux} (`client.on(event, listener)`). */
export type SmuxClientEvents = {
  /** A session was established. */
  connect: (session: Session) => void;
  /** A session ended; `error` is set when it failed. */
  close: (error?: SmuxError) => void;
  /** A connection attempt failed. */
  error: (error: Error) => void;
};

/** Events of {@link ServerSmux} (`server.on(event, listener)`): connections, sessions, and the listening `net.Server`'s. */
export type SmuxServerEvents = {
  listening: () => void;
  /**
   * A peer connected: a hook for per-connection state in `connection.data`. It comes once the peer's hello is handled,
   * so `servesCalls` is known (a peer that says no hello, such as a Go caller of protocol 1: before its first call),
   * and the connection is then in `server.connections`.
   */
  connection: (connection: SmuxConnection) => void;
  /**
   * A connection ended; `error` is set when it failed — not for a close on purpose (either side's), nor for a client
   * that left while no call of its ran (its socket gone under the tail of a call it had cancelled: EPIPE, ECONNRESET),
   * which the server logs as a routine leave at debug level. A client that left with calls running carries the error.
   */
  disconnect: (connection: SmuxConnection, error?: SmuxError) => void;
  close: () => void;
  error: (error: Error) => void;
  /** A client's smux session started. */
  session: (session: Session) => void;
};
