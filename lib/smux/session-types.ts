import type { SmuxChannel } from './channel.js';
import type { SmuxError } from './errors.js';
import type { SmuxStream } from './stream.js';

/** Counters of a session. */
export interface SessionStats {
  /** Bytes received from the socket. */
  bytesIn: number;
  /** Bytes handed to the socket. */
  bytesOut: number;
  /** Frames received. */
  framesIn: number;
  /** Frames handed to the socket. */
  framesOut: number;
  /** Streams this side opened. */
  streamsOpened: number;
  /** Streams the peer opened and this side accepted. */
  streamsAccepted: number;
  /** Streams the peer opened and this side refused (past `maxStreams`, or while closing). */
  streamsRefused: number;
  /**
   * Bytes left of the receive budget (`maxReceiveBuffer`): received data not yet consumed is charged to it (in
   * v2 only beyond each stream's window allowance). Reading from the socket pauses while it is ≤ 0; it can go
   * below zero by at most one frame.
   */
  receiveBudgetLeft: number;
  /**
   * v2 with `maxStreamWindow`: bytes of receive window auto-tuning granted to open streams beyond
   * `maxStreamBuffer`, reserved from the receive budget (so included in what `receiveBudgetLeft` lacks). At most
   * half of `maxReceiveBuffer`; back to 0 once the grown streams closed.
   */
  receiveWindowGrowth: number;
  /** True while the socket reports backpressure (`write()` returned false and no `'drain'` yet): the peer is slow to read. */
  writeBlocked: boolean;
  /** Bytes of write buffers the session holds: they grow with the batches written and are released when it is idle. */
  writeBufferBytes: number;
}

/** Events of a {@link Session}. */
export interface SessionEvents {
  /** The peer opened a stream. Emitted when there is no `'channel'` listener. */
  stream: [stream: SmuxStream];
  /** The peer opened a stream; with a listener here, peer streams arrive as lean channels instead of `'stream'`. */
  channel: [channel: SmuxChannel];
  /** The session is over. `error` is absent after a local `close()` / `destroy()` without error, and when the peer hung up with no stream open. */
  close: [error: SmuxError | undefined];
}

/**
 * What a layer built on a session (the Nest transport) hears of it: the streams the peer opens, as channels, and
 * its end. Added with `observeSession` (session-layer.ts), a package-internal path: the session's public events are the
 * application's too, and anyone holding the session could `emit()` them or remove their listeners.
 */
export interface SessionObserver {
  /** A stream the peer opened (the session's `'channel'` listeners get the same channel afterwards). */
  channel?: (channel: SmuxChannel) => void;
  /** The session closed; called before its public `'close'`. */
  close?: (error: SmuxError | undefined) => void;
}
