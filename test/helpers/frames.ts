/**
 * Building and reading whole frames by hand, for tests and raw peers. The library never uses these: its
 * writer packs headers into a slab (lib/smux/frame.ts `writeHeader`) and its decoder reads them in place.
 */
import { HEADER_SIZE, MAX_FRAME_PAYLOAD, UPD_PAYLOAD_SIZE } from '../../lib/smux/constants.js';
import { writeHeader } from '../../lib/smux/frame.js';

/** A decoded frame header. */
export interface FrameHeader {
  /** Protocol version byte. */
  version: number;
  /** Command byte (`Cmd`). */
  cmd: number;
  /** Payload length in bytes. */
  length: number;
  /** Stream id (0 for NOP). */
  streamId: number;
}

/** Reads the 8-byte header at `offset`. */
export function readHeader(buf: Uint8Array, offset = 0): FrameHeader {
  return {
    version: buf[offset],
    cmd: buf[offset + 1],
    length: buf[offset + 2] | (buf[offset + 3] << 8),
    streamId: (buf[offset + 4] | (buf[offset + 5] << 8) | (buf[offset + 6] << 16) | (buf[offset + 7] << 24)) >>> 0,
  };
}

/** Encodes one whole frame into a new buffer. */
export function encodeFrame(version: number, cmd: number, streamId: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) throw new RangeError(`payload of ${payload.length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  const buf = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  writeHeader(buf, 0, version, cmd, payload.length, streamId);
  buf.set(payload, HEADER_SIZE);
  return buf;
}

/** Encodes a UPD payload: `consumed` u32 LE then `window` u32 LE. */
export function encodeUpdPayload(consumed: number, window: number): Buffer {
  const buf = Buffer.allocUnsafe(UPD_PAYLOAD_SIZE);
  buf.writeUInt32LE(consumed >>> 0, 0);
  buf.writeUInt32LE(window >>> 0, 4);
  return buf;
}
