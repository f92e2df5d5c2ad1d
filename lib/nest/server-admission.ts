import type * as net from 'node:net';
import { SmuxError } from '../smux/index.js';
import type { RateLimitedLog } from './log.js';
import type { ResolvedServerOptions } from './options.js';
import type { ServerConnections } from './server-connections.js';

/**
 * Connections refused at accept (over `maxConnections` or `maxConnectionsPerAddress`) kept open at once to answer
 * their first stream with the refusal; past this many, a new one is closed without an answer.
 */
const REFUSED_WAITING_MAX = 256;

/** {@link admission}'s answer for a socket to close at once, unanswered. */
export const CLOSE_AT_ONCE = 'close at once';

/**
 * Whether a socket the server accepted gets a slot: within `maxConnections` and `maxConnectionsPerAddress`, or the slot
 * of an idle or silent connection (evicted). @returns null (admitted); the refusal its first stream is answered with
 * (the connection waits to say it, then hangs up); or {@link CLOSE_AT_ONCE} when too many refused ones wait already.
 */
export function admission(
  socket: net.Socket,
  connections: ServerConnections,
  options: ResolvedServerOptions,
  warnings: RateLimitedLog,
): SmuxError | null | typeof CLOSE_AT_ONCE {
  const why = noSlot(socket.remoteAddress ?? 'unix', connections, options);
  if (why === null) return null;
  const remote = `${socket.remoteAddress}:${socket.remotePort}`;
  if (connections.refusedOpen >= REFUSED_WAITING_MAX) {
    // A refused connection stays open to tell its client why (up to 10 s for its first stream): a flood of them held
    // ≈ 6 – 10 KiB each, without bound. Past this many, one is closed at once — a bare close, as a full backlog
    // gives — and the memory they hold stays ≤ REFUSED_WAITING_MAX of them.
    warnings.warn(
      'refused at once',
      `Closed a connection from ${remote} at once: ${why}, and ${REFUSED_WAITING_MAX} refused connections wait to hang up`,
    );
    return CLOSE_AT_ONCE;
  }
  warnings.warn('refused', `Refused a connection from ${remote}: ${why}, none idle for ${options.evictIdleAfter} ms`);
  return new SmuxError('ERR_SMUX_LIMIT', `the server has reached its connection limit: ${why}`, { retryable: true });
}

/** @returns null when there is a slot for a connection from `address` (evicting one if need be), or why there is none */
function noSlot(address: string, connections: ServerConnections, options: ResolvedServerOptions): string | null {
  const { maxConnections, maxConnectionsPerAddress, evictIdleAfter } = options;
  if (connections.size >= maxConnections && !connections.evictIdle(evictIdleAfter)) {
    return `${connections.size} connections open (maxConnections ${maxConnections})`;
  }
  if (connections.from(address) >= maxConnectionsPerAddress && !connections.evictIdle(evictIdleAfter, address)) {
    return `${connections.from(address)} connections from ${address} (maxConnectionsPerAddress ${maxConnectionsPerAddress})`;
  }
  return null;
}
