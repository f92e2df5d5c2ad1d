import type { Clock } from './clock.js';
import { systemClock } from './clock.js';
import { MAX_FRAME_PAYLOAD, MAX_STREAM_ID, type ProtocolVersion } from './constants.js';
import { SmuxError } from './errors.js';
import { describeValue, nearestName } from '../util/describe.js';

/**
 * Session configuration. The first seven fields are Go's `smux.Config` in camelCase, with durations in
 * milliseconds and Go's defaults; nothing of it is sent to the peer, and only `version` must match the peer.
 */
export interface SmuxConfig {
  /**
   * Protocol version, 1 or 2. Version 2 adds per-stream windows (UPD frames). Default 1, as in Go.
   * `'auto'` (servers only) speaks whichever version the client's first frame has.
   */
  version: ProtocolVersion | 'auto';
  /** Turns off both the NOP sender and the dead-peer detector. Default false. */
  keepAliveDisabled: boolean;
  /** Milliseconds between keep-alive NOPs. Default 10 000. */
  keepAliveInterval: number;
  /** The session is destroyed when no frame arrived for this many milliseconds. Default 30 000. */
  keepAliveTimeout: number;
  /** Largest PSH payload this side sends, in bytes (1..65535). Receiving accepts up to 65535 regardless. Default 32 768. */
  maxFrameSize: number;
  /**
   * Session receive budget in bytes (Go's token bucket). Received data not yet consumed by the application
   * is charged to it — in v2 only the part beyond a stream's window allowance — and reading from the socket
   * pauses while it is exhausted. Default 4 MiB.
   */
  maxReceiveBuffer: number;
  /** v2 only: the receive window advertised per stream, in bytes; a UPD goes out every half of it consumed. Default 64 KiB. */
  maxStreamBuffer: number;
  /**
   * v2 only: receive-window auto-tuning. While a stream is bound by its window — its reader takes a window's
   * worth of data faster than the window allows per round trip, and holds nothing back — the window it
   * advertises in UPD doubles, up to this many bytes. Growth only comes from fast consumption (a slow reader,
   * or a peer that floods, never grows a window), is reserved from `maxReceiveBuffer` while at least half of
   * it stays free, and returns to it when the stream closes: the memory bound does not change. UPDs still go
   * out every `maxStreamBuffer / 2` consumed; the UPD frame carries the window, so this is wire-compatible
   * with Go. 0 (the default, as Go) turns it off; otherwise at least `maxStreamBuffer` and at most
   * `maxReceiveBuffer`.
   */
  maxStreamWindow: number;
  /**
   * v2 only: while other streams of the session receive data, the window a stream advertises is at most this
   * many bytes, and its UPDs go out every half of it (or of `maxStreamBuffer`, if smaller) consumed. A window is
   * what the peer may put in the socket ahead of every other stream's frames: a bulk stream at a large window
   * holds the small replies sharing the connection behind it. The window comes back (and auto-tuning resumes)
   * once the stream has consumed a full window with no other stream receiving anything. Wire-compatible: Go's
   * sender adopts the window of each UPD. 0 (the default, as Go) sets no limit; otherwise from 16 KiB to the
   * largest window a stream can have (`maxStreamWindow`, or `maxStreamBuffer` without auto-tuning).
   */
  contendedStreamWindow: number;
  /**
   * Most streams the peer may have open at once on this session (the accept-side limit; this side's own
   * `openChannel()` is held to the same number, counted separately). A stream the peer opens beyond it is
   * refused at a constant cost — no stream object, just a FIN for its id once the opener's first frame arrived —
   * and counted in `stats.streamsRefused`. A stream the peer opened counts until both FINs are through (or it is
   * destroyed). Default 65 536.
   */
  maxStreams: number;
  /**
   * Streams the peer may open past `maxStreams` in a row (no stream accepted in between) before the session is
   * destroyed with `ERR_SMUX_LIMIT`: a peer that keeps opening streams past the limit is flooding. Default 1024.
   */
  maxRefusedStreams: number;
  /**
   * v2: after the peer's FIN, how long (ms) data queued on a stream may wait for the peer's window with no UPD
   * arriving, before the stream is destroyed with `ERR_SMUX_TIMEOUT` and its queued bytes are released. A peer
   * that closed its end (Go's `Close`, or an accepted stream's GC finalizer) drops our data and never opens the
   * window again; newer Go versions (≥ 1.5.54) would wait forever there. A second FIN from the peer (Go's `Close`
   * after `CloseWrite`) fails such a stream at once with `ERR_SMUX_STREAM_CLOSED`. 0 waits forever. Default 5000.
   */
  peerFinWriteTimeout: number;
  /** Peer-opened streams waiting for `acceptStream()`; reading pauses while the backlog is full (as Go's recvLoop blocks). Default 1024. */
  acceptBacklog: number;
  /**
   * Bytes a stream buffers on each side before signalling backpressure: `write()` returns false beyond it, and
   * a {@link SmuxStream}'s readable side holds at most this much before the stream stops consuming. Default 64 KiB.
   */
  streamHighWaterMark: number;
  /**
   * On a stream the peer opened, send nothing (data, UPD, FIN) until the opener's first frame has arrived.
   * Go registers a stream it opens only after its SYN is written, so anything sent earlier can be dropped
   * (PROTOCOL.md §7). Turn off only if the peer is known not to be Go and the acceptor must speak first.
   * Default true.
   */
  waitForOpenerData: boolean;
  /**
   * The id of the first stream this side opens; later ones add 2. Defaults to Go's: 3 for a client, 2 for a
   * server. Must have the role's parity (odd for clients, even for servers). Mainly useful to exercise id
   * exhaustion, which otherwise takes 2^31 streams.
   */
  firstStreamId?: number;
  /** Time source for keep-alive and timeouts. Default: the system clock. */
  clock: Clock;
}

/** Go's defaults (mux.go `DefaultConfig`) plus ours. */
export const DEFAULT_CONFIG: Readonly<SmuxConfig> = Object.freeze({
  version: 1,
  keepAliveDisabled: false,
  keepAliveInterval: 10_000,
  keepAliveTimeout: 30_000,
  maxFrameSize: 32_768,
  maxReceiveBuffer: 4_194_304,
  maxStreamBuffer: 65_536,
  maxStreamWindow: 0,
  contendedStreamWindow: 0,
  maxStreams: 65_536,
  maxRefusedStreams: 1024,
  peerFinWriteTimeout: 5000,
  acceptBacklog: 1024,
  streamHighWaterMark: 65_536,
  waitForOpenerData: true,
  clock: systemClock,
});

const INT32_MAX = 0x7fff_ffff;
/** The smallest `contendedStreamWindow`: below it the peer sends tiny frames and every read sends a UPD. */
export const MIN_CONTENDED_WINDOW = 16_384;
const KNOWN_FIELDS = [...Object.keys(DEFAULT_CONFIG), 'firstStreamId'];

/**
 * Fills defaults and validates a configuration: everything Go's `VerifyConfig` rejects is rejected, and
 * also negative or non-integer durations, unknown fields (with the nearest known name as a hint) and limits
 * of our own. The error is a {@link SmuxError} `ERR_SMUX_INVALID_CONFIG` whose message names the field, the
 * value with its type, and what is allowed.
 *
 * @param input - fields to override; others take {@link DEFAULT_CONFIG}
 * @param label - how messages name the configuration (default `smux config: `; the Nest transport passes
 *   `ServerSmux option smux.` and the like)
 * @returns a complete, frozen configuration
 */
export function validateConfig(input: Partial<SmuxConfig> = {}, label = 'smux config: '): Readonly<SmuxConfig> {
  const fail = (field: string, why: string): never => {
    throw new SmuxError('ERR_SMUX_INVALID_CONFIG', `${label}${field} ${why}`);
  };
  const checkInteger = (config: SmuxConfig, field: keyof SmuxConfig, min: number, max: number, unit: string): void => {
    const value = config[field];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      fail(field, `must be an integer from ${min} to ${max} (${unit}), got ${describeValue(value)}`);
    }
  };
  if (typeof input !== 'object' || input === null) {
    throw new SmuxError('ERR_SMUX_INVALID_CONFIG', `${label.replace(/[.:]\s*$/, '')} must be an object, got ${describeValue(input)}`);
  }
  for (const key of Object.keys(input)) {
    if (KNOWN_FIELDS.includes(key)) continue;
    const hint = nearestName(key, KNOWN_FIELDS);
    fail(key, `is not a known field${hint === undefined ? '' : ` (did you mean ${hint}?)`}; known: ${KNOWN_FIELDS.join(', ')}`);
  }
  const config: SmuxConfig = { ...DEFAULT_CONFIG };
  for (const [key, value] of Object.entries(input)) {
    if (value !== undefined) (config as unknown as Record<string, unknown>)[key] = value;
  }

  // Go VerifyConfig, in its order.
  if (config.version !== 1 && config.version !== 2 && config.version !== 'auto') {
    fail('version', `must be 1, 2 or 'auto' (a server detecting the client's), got ${describeValue(config.version)}`);
  }
  if (typeof config.keepAliveDisabled !== 'boolean')
    fail('keepAliveDisabled', `must be a boolean, got ${describeValue(config.keepAliveDisabled)}`);
  // Durations are checked even when keep-alive is off: a negative one is a mistake either way
  // (Go accepts a negative interval and then panics in time.NewTicker).
  checkInteger(config, 'keepAliveInterval', 0, INT32_MAX, 'ms');
  checkInteger(config, 'keepAliveTimeout', 0, INT32_MAX, 'ms');
  if (!config.keepAliveDisabled) {
    if (config.keepAliveInterval === 0)
      fail('keepAliveInterval', 'must be positive while keep-alive is on (keepAliveDisabled: false), got 0');
    if (config.keepAliveTimeout < config.keepAliveInterval) {
      fail(
        'keepAliveTimeout',
        `(${config.keepAliveTimeout} ms) must not be less than keepAliveInterval (${config.keepAliveInterval} ms): the peer's NOPs come every interval`,
      );
    }
  }
  checkInteger(config, 'maxFrameSize', 1, MAX_FRAME_PAYLOAD, 'bytes');
  checkInteger(config, 'maxReceiveBuffer', 1, INT32_MAX, 'bytes');
  checkInteger(config, 'maxStreamBuffer', 1, INT32_MAX, 'bytes');
  if (config.maxStreamBuffer > config.maxReceiveBuffer) {
    fail('maxStreamBuffer', `(${config.maxStreamBuffer}) must not be larger than maxReceiveBuffer (${config.maxReceiveBuffer})`);
  }

  // Ours.
  checkInteger(config, 'maxStreamWindow', 0, INT32_MAX, 'bytes; 0 turns auto-tuning off');
  if (
    config.maxStreamWindow !== 0 &&
    (config.maxStreamWindow < config.maxStreamBuffer || config.maxStreamWindow > config.maxReceiveBuffer)
  ) {
    fail(
      'maxStreamWindow',
      `(${config.maxStreamWindow}) must be 0 (no auto-tuning) or from maxStreamBuffer (${config.maxStreamBuffer}) to maxReceiveBuffer (${config.maxReceiveBuffer})`,
    );
  }
  const largestWindow = Math.max(config.maxStreamBuffer, config.maxStreamWindow);
  checkInteger(config, 'contendedStreamWindow', 0, INT32_MAX, 'bytes; 0 sets no limit');
  const contended = config.contendedStreamWindow;
  if (contended !== 0 && (contended < MIN_CONTENDED_WINDOW || contended > largestWindow)) {
    fail(
      'contendedStreamWindow',
      `(${contended}) must be 0 (no limit) or from ${MIN_CONTENDED_WINDOW} to the largest window a stream can have, ${largestWindow} (maxStreamWindow, or maxStreamBuffer without auto-tuning; both at most maxReceiveBuffer, ${config.maxReceiveBuffer})`,
    );
  }
  checkInteger(config, 'maxStreams', 1, INT32_MAX, 'streams');
  checkInteger(config, 'maxRefusedStreams', 0, INT32_MAX, 'streams');
  checkInteger(config, 'peerFinWriteTimeout', 0, INT32_MAX, 'ms');
  checkInteger(config, 'acceptBacklog', 1, INT32_MAX, 'streams');
  checkInteger(config, 'streamHighWaterMark', 1, INT32_MAX, 'bytes');
  if (typeof config.waitForOpenerData !== 'boolean')
    fail('waitForOpenerData', `must be a boolean, got ${describeValue(config.waitForOpenerData)}`);
  if (config.firstStreamId !== undefined) checkInteger(config, 'firstStreamId', 2, MAX_STREAM_ID, 'a stream id');
  const clock = config.clock as Partial<Clock> | null;
  if (
    typeof clock !== 'object' ||
    clock === null ||
    typeof clock.now !== 'function' ||
    typeof clock.setTimeout !== 'function' ||
    typeof clock.clearTimeout !== 'function'
  ) {
    fail('clock', `must implement now(), setTimeout() and clearTimeout(), got ${describeValue(clock)}`);
  }
  return Object.freeze(config);
}
