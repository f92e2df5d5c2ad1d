import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { Cmd, HEADER_SIZE, INITIAL_PEER_WINDOW, MAX_FRAME_PAYLOAD, MAX_STREAM_ID, UPD_PAYLOAD_SIZE } from '../../lib/smux/constants.js';
import { headerError, writeHeader } from '../../lib/smux/frame.js';
import { encodeFrame, encodeUpdPayload, readHeader } from '../helpers/frames.js';

/** Hex with spaces and grouping removed, so vectors can be written as PROTOCOL.md §1 prints them. */
function hex(spaced: string): string {
  return spaced.replace(/\s+/g, '');
}

const u32 = fc.tuple(fc.nat(0xffff), fc.nat(0xffff)).map(([hi, lo]) => hi * 0x1_0000 + lo);

describe('wire constants', () => {
  // The CMD byte values are the wire (Go frame.go cmdSYN..cmdUPD); changing one breaks interop.
  test('Cmd values are the smux command bytes', () => {
    expect(Cmd).toEqual({ SYN: 0, FIN: 1, PSH: 2, NOP: 3, UPD: 4 });
  });

  test('sizes and limits are the Go constants', () => {
    expect([HEADER_SIZE, UPD_PAYLOAD_SIZE, MAX_FRAME_PAYLOAD, INITIAL_PEER_WINDOW, MAX_STREAM_ID]).toEqual([
      8, 8, 65_535, 262_144, 0xffff_ffff,
    ]);
  });
});

describe('writeHeader / readHeader', () => {
  // Go TestFrameString: header bytes 01 00 64 00 01 00 00 00.
  test('decodes the header of Go TestFrameString: version 1, SYN, length 100, stream 1', () => {
    expect(readHeader(Buffer.from(hex('01 00 6400 01000000'), 'hex'))).toEqual({ version: 1, cmd: Cmd.SYN, length: 100, streamId: 1 });
  });

  test('LENGTH and STREAMID are little-endian', () => {
    const buf = Buffer.alloc(HEADER_SIZE);
    writeHeader(buf, 0, 2, Cmd.PSH, 0x1234, 0x0a0b0c0d);
    expect(buf.toString('hex')).toBe(hex('02 02 3412 0d0c0b0a'));
    expect(readHeader(buf)).toEqual({ version: 2, cmd: Cmd.PSH, length: 0x1234, streamId: 0x0a0b0c0d });
  });

  test('the largest length and stream id round trip as unsigned numbers', () => {
    const buf = Buffer.alloc(HEADER_SIZE);
    writeHeader(buf, 0, 1, Cmd.PSH, MAX_FRAME_PAYLOAD, MAX_STREAM_ID);
    expect(buf.toString('hex')).toBe(hex('01 02 ffff ffffffff'));
    // A signed read would give -1 here.
    expect(readHeader(buf)).toEqual({ version: 1, cmd: Cmd.PSH, length: 65_535, streamId: 4_294_967_295 });
  });

  test('stream ids with the top bit set stay positive', () => {
    const buf = Buffer.alloc(HEADER_SIZE);
    writeHeader(buf, 0, 1, Cmd.FIN, 0, 0x8000_0000);
    expect(readHeader(buf).streamId).toBe(2_147_483_648);
  });

  test('writes at an offset without touching the bytes around the header', () => {
    const buf = Buffer.alloc(HEADER_SIZE + 6, 0xee);
    writeHeader(buf, 3, 1, Cmd.NOP, 0, 0);
    expect(buf.toString('hex')).toBe(hex('eeeeee 01 03 0000 00000000 eeeeee'));
    expect(readHeader(buf, 3)).toEqual({ version: 1, cmd: Cmd.NOP, length: 0, streamId: 0 });
  });

  test('any header round trips (property)', () => {
    fc.assert(
      fc.property(fc.nat(255), fc.nat(255), fc.nat(0xffff), u32, fc.nat(16), (version, cmd, length, streamId, offset) => {
        const buf = Buffer.alloc(offset + HEADER_SIZE);
        writeHeader(buf, offset, version, cmd, length, streamId);
        expect(readHeader(buf, offset)).toEqual({ version, cmd, length, streamId });
        // The same bytes Node's own little-endian writers give.
        expect(buf.readUInt16LE(offset + 2)).toBe(length);
        expect(buf.readUInt32LE(offset + 4)).toBe(streamId);
      }),
      { numRuns: 300 },
    );
  });

  test('readHeader accepts a plain Uint8Array', () => {
    expect(readHeader(new Uint8Array([2, 4, 8, 0, 3, 0, 0, 0]))).toEqual({ version: 2, cmd: Cmd.UPD, length: 8, streamId: 3 });
  });
});

describe('encodeFrame / encodeUpdPayload', () => {
  // The exact bytes captured from Go (PROTOCOL.md §1, identical in 1.5.16 and 1.5.57).
  test.each([
    ['v1 SYN sid 3', () => encodeFrame(1, Cmd.SYN, 3), '01 00 0000 03000000'],
    ['v1 PSH sid 3 "ping"', () => encodeFrame(1, Cmd.PSH, 3, Buffer.from('ping')), '01 02 0400 03000000 70696e67'],
    ['v1 FIN sid 3', () => encodeFrame(1, Cmd.FIN, 3), '01 01 0000 03000000'],
    [
      'v2 UPD sid 3 consumed=4 window=65536',
      () => encodeFrame(2, Cmd.UPD, 3, encodeUpdPayload(4, 65_536)),
      '02 04 0800 03000000 04000000 00000100',
    ],
    ['v2 NOP', () => encodeFrame(2, Cmd.NOP, 0), '02 03 0000 00000000'],
  ])('%s matches the bytes Go sends', (_name, encode, expected) => {
    expect(encode().toString('hex')).toBe(hex(expected));
  });

  test('UPD fields are u32 little-endian and wrap modulo 2^32', () => {
    expect(encodeUpdPayload(0xffff_ffff, 0x0102_0304).toString('hex')).toBe(hex('ffffffff 04030201'));
    expect(encodeUpdPayload(2 ** 32 + 5, 0).toString('hex')).toBe(hex('05000000 00000000'));
  });

  test('a 65535-byte payload fits and its LENGTH is ffff', () => {
    const frame = encodeFrame(1, Cmd.PSH, 7, Buffer.alloc(MAX_FRAME_PAYLOAD, 0xab));
    expect(frame.length).toBe(HEADER_SIZE + MAX_FRAME_PAYLOAD);
    expect(frame.subarray(0, HEADER_SIZE).toString('hex')).toBe(hex('01 02 ffff 07000000'));
    expect(frame.subarray(HEADER_SIZE).every((b) => b === 0xab)).toBe(true);
  });

  test('a payload beyond 65535 bytes is refused: LENGTH cannot hold it', () => {
    expect(() => encodeFrame(1, Cmd.PSH, 3, Buffer.alloc(MAX_FRAME_PAYLOAD + 1))).toThrow(RangeError);
  });

  test('the payload is copied: changing the source later does not change the frame', () => {
    const payload = Buffer.from('abc');
    const frame = encodeFrame(1, Cmd.PSH, 3, payload);
    payload.fill(0);
    expect(frame.subarray(HEADER_SIZE).toString()).toBe('abc');
  });
});

describe('headerError', () => {
  // Go v1.5.57 recvLoop's rules (PROTOCOL.md §2): every case is a protocol error.
  test.each([
    ['a v2 frame in a v1 session', 2, Cmd.PSH, 4, 1],
    ['a v1 frame in a v2 session', 1, Cmd.NOP, 0, 2],
    ['version 0', 0, Cmd.SYN, 0, 1],
    ['version 255', 255, Cmd.SYN, 0, 1],
    ['SYN with a payload', 1, Cmd.SYN, 1, 1],
    ['FIN with a payload', 1, Cmd.FIN, 4, 1],
    ['NOP with a payload', 2, Cmd.NOP, 65_535, 2],
    ['UPD in a v1 session', 1, Cmd.UPD, 8, 1],
    ['UPD with 7 bytes', 2, Cmd.UPD, 7, 2],
    ['UPD with 9 bytes', 2, Cmd.UPD, 9, 2],
    ['UPD with no payload', 2, Cmd.UPD, 0, 2],
    ['unknown command 5', 1, 5, 0, 1],
    ['unknown command 255', 2, 255, 0, 2],
  ])('rejects %s', (_name, version, cmd, length, sessionVersion) => {
    expect(headerError(version, cmd, length, sessionVersion)).toEqual(expect.any(String));
  });

  test.each([
    ['SYN', 1, Cmd.SYN, 0, 1],
    ['FIN', 2, Cmd.FIN, 0, 2],
    ['NOP', 1, Cmd.NOP, 0, 1],
    ['UPD of 8 bytes in v2', 2, Cmd.UPD, 8, 2],
    // PSH of any length is valid: Go ignores an empty one, and a receiver accepts up to 65535 whatever its own maxFrameSize.
    ['empty PSH', 1, Cmd.PSH, 0, 1],
    ['1-byte PSH', 2, Cmd.PSH, 1, 2],
    ['65535-byte PSH', 1, Cmd.PSH, 65_535, 1],
  ])('accepts %s', (_name, version, cmd, length, sessionVersion) => {
    expect(headerError(version, cmd, length, sessionVersion)).toBeNull();
  });
});
