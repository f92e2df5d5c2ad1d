/**
 * Wire constants of the smux protocol (xtaci/smux `frame.go`, `mux.go`; see docs in README "Wire format").
 *
 * Frame layout, 8-byte header then payload:
 *
 * ```
 *  0        1        2                 4                                 8
 *  +--------+--------+--------+--------+--------+--------+--------+--------+---------------+
 *  |VERSION |  CMD   |  LENGTH (u16 LE)|         STREAM ID (u32 LE)        | PAYLOAD ...   |
 *  +--------+--------+--------+--------+--------+--------+--------+--------+---------------+
 * ```
 */

/** Frame commands. Values are the CMD byte on the wire (frozen: the decoder and writer read them). */
export const Cmd = Object.freeze({
  /** Open a stream (no payload). */
  SYN: 0,
  /** The sender will send no more data on this stream (EOF mark, no payload). */
  FIN: 1,
  /** Stream data (1..65535 payload bytes). */
  PSH: 2,
  /** Keep-alive (stream id 0, no payload). */
  NOP: 3,
  /** Window update, protocol version 2 only: `consumed` u32 LE, then `window` u32 LE. */
  UPD: 4,
} as const);

/** A frame command byte. */
export type Cmd = (typeof Cmd)[keyof typeof Cmd];

/** Bytes in a frame header. */
export const HEADER_SIZE = 8;

/** Bytes in a UPD payload (`consumed` u32 LE + `window` u32 LE). */
export const UPD_PAYLOAD_SIZE = 8;

/** Largest payload a frame can carry: LENGTH is a uint16. Receivers accept any length up to this. */
export const MAX_FRAME_PAYLOAD = 0xffff;

/**
 * The window a v2 sender assumes for its peer until the peer's first UPD arrives (Go `initialPeerWindow`).
 * It is larger than Go's default receive window (64 KiB), which matters for memory bounds.
 */
export const INITIAL_PEER_WINDOW = 262_144;

/** Largest stream id; ids are uint32 and never reused within a session. */
export const MAX_STREAM_ID = 0xffff_ffff;

/** Protocol versions spoken by Go smux. Both ends must use the same one: there is no negotiation. */
export const PROTOCOL_VERSIONS = Object.freeze([1, 2] as const);

/** A protocol version. */
export type ProtocolVersion = (typeof PROTOCOL_VERSIONS)[number];
