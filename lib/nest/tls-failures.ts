import type * as net from 'node:net';
import type * as tls from 'node:tls';

/**
 * Reports each failed TLS handshake on `server` through `warn`: the peer's address and why — a plain-text client,
 * a refused client certificate (mutual TLS: Node's TLS 1.3 server closes without an alert and keeps the reason in
 * `socket.authorizationError`), or the TLS error's code — and ends that connection.
 */
export function watchTlsFailures(server: tls.Server, warn: (message: string) => void): void {
  // By 'tlsClientError' the TLS socket may be destroyed already, without an address: keep it from the raw socket's
  // 'connection'.
  const peers = new WeakMap<net.Socket, string>();
  server.on('connection', (raw: net.Socket) => peers.set(raw, `${raw.remoteAddress}:${raw.remotePort}`));
  server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    const raw = (socket as unknown as { _parent?: net.Socket })._parent; // Node's raw socket under the TLS one
    const peer = (raw === undefined ? undefined : peers.get(raw)) ?? `${socket.remoteAddress}:${socket.remotePort}`;
    const refused = socket.authorizationError as unknown as string | null | undefined;
    const code = error.code ?? error.message.trim();
    const why =
      refused !== undefined && refused !== null
        ? `(its client certificate was refused: ${String(refused)})`
        : `(${code})${code === 'ERR_SSL_WRONG_VERSION_NUMBER' ? ': a plain-text client? it needs the tls option' : ''}`;
    warn(`TLS handshake with ${peer} failed ${why}`);
    // Node reports a handshake timeout here but leaves the socket open (checked on Node 20): a peer that connected and
    // said nothing was held for good. Every failure before the handshake ends the connection.
    socket.destroy();
  });
}
