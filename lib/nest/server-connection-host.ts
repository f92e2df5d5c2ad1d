import type { Socket } from 'node:net';
import type { Clock, Session, SmuxError } from '../smux/index.js';
import type { ControlLink } from './control-link.js';
import type { ResolvedServerOptions } from './options.js';
import type { CallHost } from './server-call-host.js';
import type { ServerConnection } from './server-connection.js';

/** How a connection came about: a socket the server accepted, or a session it dialled (`connectTo`) over `socket`. */
export type ConnectionOrigin =
  | { readonly accepted: Socket }
  | { readonly dialled: Session; readonly socket: Socket; readonly remote: string; readonly link: () => ControlLink | null };

/** What a {@link ServerConnection} needs from its server. */
export interface ConnectionHost {
  readonly options: ResolvedServerOptions;
  readonly clock: Clock;
  readonly callHost: CallHost;
  /** True once the server is shutting down. */
  closing(): boolean;
  /** A warning about a peer, rate-limited by `kind`. */
  warn(kind: string, message: string): void;
  /** A debug line about a connection, rate-limited by `kind` as warnings are: a peer can open thousands. */
  debug(kind: string, message: string): void;
  /** The connection is established (`'connection'`): its peer said hello, or it says none and its first call came. */
  established(connection: ServerConnection): void;
  /** The connection is over: `failure` is why it failed, or undefined (a close on purpose, a routine leave: endFailure). */
  closed(connection: ServerConnection, failure: SmuxError | undefined): void;
  /** A fresh id for a connection. */
  nextConnectionId(): string;
}
