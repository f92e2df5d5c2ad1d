/**
 * `nestjs-smux/smux`: a Go-compatible smux (xtaci/smux wire format, protocol versions 1 and 2) for Node,
 * with no Nest dependency.
 *
 * @packageDocumentation
 */
export { Session } from './session.js';
export type { SessionEvents, SessionStats } from './session-types.js';
export { SmuxStream } from './stream.js';
export { SmuxChannel, type SmuxChannelHandler, type StreamTimeoutOptions } from './channel.js';
export { type SmuxConfig, DEFAULT_CONFIG, validateConfig } from './config.js';
export { SmuxError, type SmuxErrorCode, type SmuxErrorOptions, isSmuxError } from './errors.js';
export { type Clock, type TimerHandle, systemClock } from './clock.js';
export {
  Cmd,
  HEADER_SIZE,
  UPD_PAYLOAD_SIZE,
  MAX_FRAME_PAYLOAD,
  INITIAL_PEER_WINDOW,
  MAX_STREAM_ID,
  PROTOCOL_VERSIONS,
  type ProtocolVersion,
} from './constants.js';
