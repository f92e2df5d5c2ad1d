import type { Duplex } from 'node:stream';
import { clearInterval, clearTimeout, setImmediate, setInterval, setTimeout } from 'node:timers';

/**
 * Closing a socket after our FIN: how long the peer's input must stay quiet, and how long after our FIN went out the
 * socket may stay open at most (a linger before the destroy counts).
 */
const DISCARD_QUIET_MS = 50;
const DISCARD_MAX_MS = 2_000;

/**
 * Closes the socket of a session destroyed after our side of a graceful close went out (everything flushed, our FIN
 * included): its streams are gone already, but the socket reads on and discards until the peer hangs up, or its input
 * has been quiet for {@link DISCARD_QUIET_MS}, within {@link DISCARD_MAX_MS} of our FIN (`lingeredMs` of it spent
 * already) — a socket closed with input unread makes the kernel reset the connection, and the peer, still sending (a
 * reply we no longer want, a keep-alive), sees `EPIPE`/`ECONNRESET` instead of our FIN. Real timers (`node:timers`,
 * which a test's fake timers do not replace), unref'd: this watches the socket, not an application deadline.
 */
export function closeAfterPeer(socket: Duplex, lingeredMs: number): void {
  // The peer hung up already, or the session lingered for the whole bound (a peer that never hangs up).
  if (socket.readableEnded || socket.destroyed || lingeredMs >= DISCARD_MAX_MS) return void socket.destroy();
  let quiet = true;
  const close = (): void => {
    clearInterval(watch);
    clearTimeout(bound);
    socket.destroy();
  };
  // Quiet is judged after the loop's next poll, not in the timer: after an event-loop stall the timers run before the
  // socket's waiting bytes are read, and closing there would reset the connection under them.
  const judge = (): void => {
    if (quiet) close();
  };
  const watch = setInterval(() => (quiet ? setImmediate(judge) : (quiet = true)), DISCARD_QUIET_MS);
  const bound = setTimeout(close, DISCARD_MAX_MS - lingeredMs);
  watch.unref();
  bound.unref();
  socket.on('data', () => (quiet = false)); // the session's own listener discards: its decoder is stopped
  socket.once('end', close);
  socket.once('close', close);
  socket.resume();
}
