/**
 * Building and reading whole frames by hand, for tests and raw peers. The library never uses these: its
 * writer packs headers into a slab (lib/smux/frame.ts `writeHeader`) and its decoder reads them in place.
 */
import { Cmd, HEADER_SIZE, MAX_FRAME_PAYLOAD, UPD_PAYLOAD_SIZE } from '../../lib/smux/constants.js';
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

/** Parses a byte stream of frames, in pieces as they come, calling `onFrame` for each header (with a UPD's payload). */
export function frameParser(
  onFrame: (cmd: number, streamId: number, length: number, payload: Buffer | null) => void,
): (chunk: Buffer) => void {
  let pending = Buffer.alloc(0);
  let skip = 0; // payload bytes of the current frame still to pass over
  return (chunk) => {
    let buf = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
    for (;;) {
      if (skip > 0) {
        const n = Math.min(skip, buf.length);
        skip -= n;
        buf = buf.subarray(n);
        if (skip > 0) break;
      }
      if (buf.length < HEADER_SIZE) break;
      const cmd = buf[1];
      const length = buf.readUInt16LE(2);
      const streamId = buf.readUInt32LE(4);
      if (cmd === Cmd.UPD) {
        if (buf.length < HEADER_SIZE + length) break;
        onFrame(cmd, streamId, length, buf.subarray(HEADER_SIZE, HEADER_SIZE + length));
        buf = buf.subarray(HEADER_SIZE + length);
      } else {
        onFrame(cmd, streamId, length, null);
        buf = buf.subarray(HEADER_SIZE);
        skip = length;
      }
    }
    pending = Buffer.from(buf);
  };
}
