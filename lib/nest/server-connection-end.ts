import { type Clock, type Session, SmuxError } from '../smux/index.js';
import { observeSession } from '../smux/session-layer.js';
import { describeClientBytes } from './peer-diagnosis.js';
import type { ConnectionHost } from './server-connection-host.js';
import { STREAM_BAND } from './options.js';
import { connectionFailure } from './smux-connection.js';

/*
 * How a server connection is turned away, and how its end is told: the version policy that refuses a client, the
 * hang-up of a refused connection once its clear error went out, and the log line for how a connection ended.
 * Functions over the connection's parts, so a connection holds nothing more for them.
 */

/**
 * The first stream shows the client's protocol version: a server that pins one refuses the other (warned here).
 * @returns the error every stream of the connection is answered with, or null when the version is welcome
 */
export function versionRefusal(host: ConnectionHost, version: number | null, remote: string): SmuxError | null {
  const pinned = host.options.pinnedVersion;
  if (pinned === null || version === pinned) return null;
  const message = `smux protocol version mismatch: this server speaks version ${pinned} (its smux.version option), the client version ${version}`;
  const refusal = new SmuxError('ERR_SMUX_PROTOCOL', message);
  host.warn('protocol', `Refused the connection from ${remote}: ${message}`);
  return refusal;
}

/**
 * A refused connection answers what arrives with its error (a clear error, never a bare close): it hangs up `ms`
 * after its first stream arrived (or after the connection opened, if none does).
 */
export function hangUpAfter(session: Session, clock: Clock, ms: number): void {
  const timer = clock.setTimeout(() => {
    void Promise.race([session.close(), new Promise((resolve) => clock.setTimeout(resolve as () => void, 2_000))]).then(() =>
      session.destroy(),
    );
  }, ms);
  observeSession(session, { close: () => clock.clearTimeout(timer) });
}

/**
 * Why a connection failed, as its `'disconnect'` and `'close'` events tell it — the same judgement as its log line:
 * undefined for a close on purpose, and for a client that left while nothing of its ran (its socket gone under the
 * tail of a call it had cancelled or answered: EPIPE, ECONNRESET), a routine leave logged at debug level.
 * @param running - the calls the client still waited for when the socket failed
 */
export function endFailure(closedWith: SmuxError | undefined, running: number): SmuxError | undefined {
  const error = connectionFailure(closedWith);
  return error === undefined || (running === 0 && peerLeft(error)) ? undefined : error;
}

/**
 * The log line for how a connection ended: a client leaving is routine, anything else is worth a warning.
 * @param where - `from <address>` for a connection we accepted, `to <address>` for one we dialled
 * @param firstBytes - what the client sent first (a client that is not smux is named by it), or null
 * @param running - the calls the client still waited for when the socket failed (see {@link endFailure})
 * @param disconnected - this layer closed it with an error of its own (a caller that does not read), and warned then
 * @param ownCutOff - calls this server made on the connection that its end failed
 */
export function logConnectionEnd(
  host: ConnectionHost,
  where: string,
  session: Session,
  firstBytes: Buffer | null,
  running: number,
  closedWith: SmuxError | undefined,
  disconnected: boolean,
  ownCutOff: number,
): void {
  if (ownCutOff > 0 && closedWith !== undefined) {
    // The peer left, or died, with calls of ours in flight: whatever its reason, they are lost.
    const calls = `${ownCutOff} call${ownCutOff === 1 ? '' : 's'} this server made on it`;
    host.warn('connection', `Lost the connection ${where}: ${closedWith.message} (${calls} failed with it)`);
    return;
  }
  const error = connectionFailure(closedWith);
  if (error === undefined) {
    host.debug('connection', `Connection ${where} closed`);
    return;
  }
  if (disconnected) {
    host.debug('connection', `Connection ${where} closed: ${error.message}`); // its WARN went out as it was disconnected
    return;
  }
  if (cutOffForStreams(session, error)) {
    host.warn('streams', `Closed the connection ${where}: ${streamFloodReason(host, session)}`);
    return;
  }
  if (error.code === 'ERR_SMUX_PROTOCOL') {
    const what = firstBytes === null ? null : describeClientBytes(firstBytes);
    const why = what !== null && session.version === null ? `it sent ${what}, not nestjs-smux` : error.message;
    host.warn('protocol', `Closed the connection ${where}: ${why}`);
    return;
  }
  // A client that left while nothing of its ran — its socket gone under our last FIN or UPD (EPIPE, ECONNRESET):
  // routine, like a clean close (found by a new-user trial: a client closing in the tick of its last emit()).
  if (running === 0 && peerLeft(error)) {
    host.debug('connection', `Connection ${where} closed by the ${where.startsWith('to ') ? 'server' : 'client'}: ${error.message}`);
    return;
  }
  // A peer that connected and never sent a byte (a scan, a stuck client, a flood of sockets) is not a lost client.
  if (session.stats.bytesIn === 0) return host.warn('silent', `Closed the connection ${where}: it sent nothing (${error.message})`);
  host.warn('connection', `Lost the connection ${where}: ${error.message}`);
}

/** The socket error of a peer that closed or reset its end (what writing to it then fails with). */
function peerLeft(error: SmuxError): boolean {
  const code = (error.cause as { code?: unknown } | undefined)?.code;
  return code === 'EPIPE' || code === 'ECONNRESET';
}

/**
 * The session cut the peer off for opening streams past `maxStreams`, `maxRefusedStreams` in a row (a SYN flood): the
 * one `ERR_SMUX_LIMIT` a session closes with by itself (SmuxConfig.maxRefusedStreams), after refusing that many. Told
 * by its code and the session's count, not by its message: the core's words are its own.
 */
function cutOffForStreams(session: Session, error: SmuxError): boolean {
  return error.code === 'ERR_SMUX_LIMIT' && session.stats.streamsRefused >= session.config.maxRefusedStreams;
}

/**
 * Why a stream flood was cut off, in the options a Nest user set: the core names its `maxStreams`, which this transport
 * derives from `maxCallsPerConnection` (found by a new-user trial: "maxStreams (1064 open)", an option they never set).
 */
function streamFloodReason(host: ConnectionHost, session: Session): string {
  const { maxStreams, maxRefusedStreams } = session.config;
  const { maxCallsPerConnection } = host.options;
  const limit =
    maxStreams === maxCallsPerConnection + STREAM_BAND
      ? `maxCallsPerConnection (${maxCallsPerConnection}, and ${STREAM_BAND} more streams the transport allows)`
      : `smux.maxStreams (${maxStreams})`;
  const opened = maxRefusedStreams + 1;
  return `it opened ${opened} stream${opened === 1 ? '' : 's'} in a row beyond ${limit}, more than smux.maxRefusedStreams (${maxRefusedStreams})`;
}
