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

/**
 * The server a ServerSmux listens with: a `net.Server`, or with `tls` a `tls.Server` whose failed handshakes are
 * reported through `warn` and closed (tls-failures.ts).
 */
export function createListener(
  options: ResolvedServerOptions,
  accept: (socket: net.Socket) => void,
  warn: (message: string) => void,
): net.Server {
  const { tls: tlsOptions } = options;
  if (tlsOptions === undefined) return net.createServer(accept);
  const server = tls.createServer({ ...tlsOptions, handshakeTimeout: tlsOptions.handshakeTimeout ?? TLS_HANDSHAKE_TIMEOUT }, accept);
  watchTlsFailures(server, warn);
  return server;
}
