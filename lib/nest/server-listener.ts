import * as net from 'node:net';
import * as tls from 'node:tls';
import type { ResolvedServerOptions } from './options.js';
import { watchTlsFailures } from './tls-failures.js';

/**
 * ms a TLS client has to finish its handshake unless the `tls` options say (Node's default, 120 s, let a peer that
 * connects and says nothing hold a socket and its TLS state, ≈ 12 KiB, for two minutes): a ClientSmux gives up sooner
 * anyway, at its `connectTimeout` (10 s by default).
 */
const TLS_HANDSHAKE_TIMEOUT = 10_000;

/** The server a ServerSmux listens with: a `net.Server`, or with `tls` a `tls.Server` with our handshake timeout. */
export function createListener(options: ResolvedServerOptions, accept: (socket: net.Socket) => void): net.Server {
  const { tls: tlsOptions } = options;
  if (tlsOptions === undefined) return net.createServer(accept);
  return tls.createServer({ ...tlsOptions, handshakeTimeout: tlsOptions.handshakeTimeout ?? TLS_HANDSHAKE_TIMEOUT }, accept);
}

/**
 * Reports each failed TLS handshake of a `tls.Server` through `warn`, and closes that connection (tls-failures.ts);
 * nothing for a plain `net.Server`. Called after the app's own listeners are attached, so they hear of a failure first.
 */
export function watchListener(server: net.Server, warn: (message: string) => void): void {
  if (server instanceof tls.Server) watchTlsFailures(server, warn);
}
