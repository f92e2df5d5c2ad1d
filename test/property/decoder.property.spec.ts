import { createHash } from 'node:crypto';
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { Cmd, MAX_FRAME_PAYLOAD } from '../../lib/smux/constants.js';
import { type FrameSink, FrameDecoder } from '../../lib/smux/decoder.js';
import type { SmuxError } from '../../lib/smux/errors.js';
import { encodeFrame, encodeUpdPayload } from '../helpers/frames.js';
import { chunkIndexOf, splitAtFractions } from '../helpers/chunks.js';

/*
 * The decoder must produce the same frames however the bytes are cut into chunks and wherever it is paused.
 * Frames are compared per frame index (the decoder's framesDecoded while a callback runs), with PSH pieces
 * of one frame concatenated and payloads reduced to length + hash, so comparisons stay cheap.
 */

type Decoded =
  | { frame: number; type: 'syn' | 'fin' | 'psh'; streamId: number; data?: string }
  | { frame: number; type: 'nop' | 'error' }
  | { frame: number; type: 'upd'; streamId: number; consumed: number; window: number };

function digest(bytes: Uint8Array): string {
  return `${bytes.length}:${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}`;
}

/** A sink that merges PSH pieces per frame and checks the invariants every callback must hold. */
class Collector implements FrameSink {
  readonly frames: Decoded[] = [];
  readonly decoder: FrameDecoder;
  readonly #pieces = new Map<number, Buffer[]>();
  readonly #chunks: Buffer[];
  #calls = 0;
  violations: string[] = [];
  /** Runs after each callback with the callback's ordinal (0-based). */
  after: (call: number) => void = () => {};

  constructor(version: number, chunks: Buffer[]) {
    this.decoder = new FrameDecoder(version, this);
    this.#chunks = chunks;
  }

  onSyn(streamId: number): void {
    this.#add({ frame: this.decoder.framesDecoded, type: 'syn', streamId });
  }
  onFin(streamId: number): void {
    this.#add({ frame: this.decoder.framesDecoded, type: 'fin', streamId });
  }
  onNop(): void {
    this.#add({ frame: this.decoder.framesDecoded, type: 'nop' });
  }
  onUpd(streamId: number, consumed: number, window: number): void {
    this.#add({ frame: this.decoder.framesDecoded, type: 'upd', streamId, consumed, window });
  }
  onProtocolError(error: SmuxError): void {
    if (error.code !== 'ERR_SMUX_PROTOCOL') this.violations.push(`error code ${error.code}`);
    this.#add({ frame: this.decoder.framesDecoded, type: 'error' });
  }
  onPsh(streamId: number, data: Buffer): void {
    const frame = this.decoder.framesDecoded;
    if (data.length === 0) this.violations.push(`empty piece in frame ${frame}`);
    if (chunkIndexOf(data, this.#chunks) < 0) this.violations.push(`piece of frame ${frame} is a copy`);
    const pieces = this.#pieces.get(frame);
    if (pieces !== undefined) {
      pieces.push(data);
      this.#called(frame);
    } else {
      this.#pieces.set(frame, [data]);
      this.#add({ frame, type: 'psh', streamId });
    }
  }

  /** The frames, with PSH payloads joined and digested. */
  result(): Decoded[] {
    return this.frames.map((f) => (f.type === 'psh' ? { ...f, data: digest(Buffer.concat(this.#pieces.get(f.frame)!)) } : f));
  }

  #add(frame: Decoded): void {
    if (this.frames.at(-1)?.type === 'error') this.violations.push('callback after the protocol error');
    this.frames.push(frame);
    this.#called(frame.frame);
  }

  #called(frame: number): void {
    if (this.decoder.paused) this.violations.push(`callback while paused (frame ${frame})`);
    this.after(this.#calls++);
  }
}

/** An independent reading of PROTOCOL.md §1-§2 over one contiguous buffer: the oracle. */
function referenceDecode(bytes: Buffer, version: number): Decoded[] {
  const out: Decoded[] = [];
  let at = 0;
  let frame = 0;
  while (bytes.length - at >= 8) {
    const [ver, cmd] = [bytes[at], bytes[at + 1]];
    const length = bytes.readUInt16LE(at + 2);
    const streamId = bytes.readUInt32LE(at + 4);
    at += 8;
    frame++;
    const valid =
      ver === version &&
      (cmd === Cmd.PSH ||
        ((cmd === Cmd.SYN || cmd === Cmd.FIN || cmd === Cmd.NOP) && length === 0) ||
        (cmd === Cmd.UPD && version === 2 && length === 8));
    if (!valid) return [...out, { frame, type: 'error' }];
    if (cmd === Cmd.PSH) {
      const n = Math.min(length, bytes.length - at); // a truncated payload is delivered as far as it came
      if (n > 0) out.push({ frame, type: 'psh', streamId, data: digest(bytes.subarray(at, at + n)) });
      at += n;
    } else if (cmd === Cmd.UPD) {
      if (bytes.length - at < 8) break;
      out.push({ frame, type: 'upd', streamId, consumed: bytes.readUInt32LE(at), window: bytes.readUInt32LE(at + 4) });
      at += 8;
    } else if (cmd === Cmd.NOP) out.push({ frame, type: 'nop' });
    else out.push({ frame, type: cmd === Cmd.SYN ? 'syn' : 'fin', streamId });
  }
  return out;
}

/** Deterministic pseudo-random bytes (xorshift32): cheap large payloads from a small seed. */
function bytesFrom(seed: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const u32 = fc.oneof(
  fc.constantFrom(0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff),
  fc.tuple(fc.nat(0xffff), fc.nat(0xffff)).map(([hi, lo]) => hi * 0x1_0000 + lo),
);
const payloadLength = fc.oneof(
  fc.nat(16),
  fc.nat(4096),
  fc.nat(70_000).map((n) => Math.min(n, MAX_FRAME_PAYLOAD)),
);

function frameArb(version: 1 | 2) {
  const cmds = version === 2 ? [Cmd.SYN, Cmd.FIN, Cmd.PSH, Cmd.PSH, Cmd.NOP, Cmd.UPD] : [Cmd.SYN, Cmd.FIN, Cmd.PSH, Cmd.PSH, Cmd.NOP];
  return fc.record({ cmd: fc.constantFrom(...cmds), streamId: u32, length: payloadLength, seed: fc.nat(), consumed: u32, window: u32 });
}
type FrameSpec = { cmd: number; streamId: number; length: number; seed: number; consumed: number; window: number };

/** Encodes the frames and lists what the decoder must report for them (an empty PSH reports nothing). */
function build(version: number, specs: FrameSpec[]): { bytes: Buffer; expected: Decoded[] } {
  const parts: Buffer[] = [];
  const expected: Decoded[] = [];
  specs.forEach((f, i) => {
    const frame = i + 1;
    if (f.cmd === Cmd.PSH) {
      const payload = bytesFrom(f.seed, f.length);
      parts.push(encodeFrame(version, Cmd.PSH, f.streamId, payload));
      if (f.length > 0) expected.push({ frame, type: 'psh', streamId: f.streamId, data: digest(payload) });
    } else if (f.cmd === Cmd.UPD) {
      parts.push(encodeFrame(version, Cmd.UPD, f.streamId, encodeUpdPayload(f.consumed, f.window)));
      expected.push({ frame, type: 'upd', streamId: f.streamId, consumed: f.consumed, window: f.window });
    } else {
      parts.push(encodeFrame(version, f.cmd, f.streamId));
      expected.push(f.cmd === Cmd.NOP ? { frame, type: 'nop' } : { frame, type: f.cmd === Cmd.SYN ? 'syn' : 'fin', streamId: f.streamId });
    }
  });
  return { bytes: Buffer.concat(parts), expected };
}

const version = fc.constantFrom<1 | 2>(1, 2);
const framesOf = (v: 1 | 2) => fc.array(frameArb(v), { maxLength: 12 });
const cuts = fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { maxLength: 40 });

describe('FrameDecoder properties', () => {
  test('valid frames cut into random chunks are reassembled exactly, as views of the chunks', () => {
    fc.assert(
      fc.property(
        version.chain((v) => fc.tuple(fc.constant(v), framesOf(v))),
        cuts,
        ([v, specs], fractions) => {
          const { bytes, expected } = build(v, specs);
          const chunks = splitAtFractions(bytes, fractions);
          const sink = new Collector(v, chunks);
          for (const chunk of chunks) sink.decoder.push(chunk);
          expect(sink.violations).toEqual([]);
          expect(sink.result()).toEqual(expected);
          expect([sink.decoder.framesDecoded, sink.decoder.bufferedBytes, sink.decoder.failed]).toEqual([specs.length, 0, false]);
        },
      ),
      { numRuns: 250 },
    );
  });

  test('arbitrary bytes never throw and decode as the reference does: frames, then at most one protocol error', () => {
    // Half random noise, half valid streams with a few bytes overwritten (so errors also come late).
    const input = fc.oneof(
      fc.tuple(
        version,
        fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
      ),
      version.chain((v) =>
        fc.tuple(
          fc.constant(v),
          fc
            .tuple(
              fc.array(frameArb(v), { maxLength: 6 }),
              fc.array(fc.tuple(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.nat(255)), { maxLength: 3 }),
            )
            .map(([specs, edits]) => {
              const { bytes } = build(
                v,
                specs.map((s) => ({ ...s, length: s.length % 300 })),
              );
              for (const [where, value] of edits) if (bytes.length > 0) bytes[Math.floor(where * bytes.length)] = value;
              return bytes;
            }),
        ),
      ),
    );
    fc.assert(
      fc.property(input, cuts, ([v, bytes], fractions) => {
        const chunks = splitAtFractions(bytes, fractions);
        const sink = new Collector(v, chunks);
        expect(() => {
          for (const chunk of chunks) sink.decoder.push(chunk);
        }).not.toThrow();
        expect(sink.violations).toEqual([]);
        const result = sink.result();
        expect(result).toEqual(referenceDecode(bytes, v));
        expect(result.filter((f) => f.type === 'error').length).toBeLessThanOrEqual(1);
        expect(sink.decoder.failed).toBe(result.at(-1)?.type === 'error');
      }),
      { numRuns: 500 },
    );
  });

  test('pausing and resuming at random points (inside callbacks and between pushes) yields the same frames', () => {
    const action = fc.constantFrom('none', 'none', 'pause', 'pause-resume');
    fc.assert(
      fc.property(
        version.chain((v) => fc.tuple(fc.constant(v), framesOf(v))),
        cuts,
        fc.array(action, { minLength: 1, maxLength: 20 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 20 }),
        ([v, specs], fractions, actions, resumeAfterPush) => {
          const { bytes, expected } = build(v, specs);
          const chunks = splitAtFractions(bytes, fractions);
          const sink = new Collector(v, chunks);
          const { decoder } = sink;
          sink.after = (call) => {
            const todo = actions[call % actions.length];
            if (todo === 'pause' || todo === 'pause-resume') decoder.pause();
            if (todo === 'pause-resume') decoder.resume();
          };
          chunks.forEach((chunk, i) => {
            decoder.push(chunk); // while paused, this only buffers
            if (resumeAfterPush[i % resumeAfterPush.length]) decoder.resume();
          });
          for (let guard = 0; decoder.paused && guard < 1_000_000; guard++) decoder.resume();
          expect(sink.violations).toEqual([]);
          expect(sink.result()).toEqual(expected);
          expect(decoder.bufferedBytes).toBe(0);
        },
      ),
      { numRuns: 250 },
    );
  });
});
