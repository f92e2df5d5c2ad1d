/**
 * What a paused stream holds (held-pieces.ts): every byte in order, large pieces as they are, small pieces — and
 * views of a small part of a read — copied into buffers of their own, so nothing held pins the reads it came in.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { HeldPieces, HOLD_VIEW_MIN_BYTES } from '../../lib/smux/held-pieces.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** `length` bytes of value `fill` at `offset` in a read of `readBytes` (a view, as a PSH payload is). */
function pieceOf(readBytes: number, offset: number, length: number, fill: number): Buffer {
  return Buffer.alloc(readBytes, fill).subarray(offset, offset + length);
}

function drain(held: HeldPieces): Buffer[] {
  const out: Buffer[] = [];
  for (let piece = held.shift(); piece !== undefined; piece = held.shift()) out.push(piece);
  return out;
}

describe('held pieces', () => {
  test('every byte comes out in order, whatever the mix of pieces and takes', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ take: fc.constant(true) }),
            fc.record({ length: fc.integer({ min: 0, max: 5_000 }), slack: fc.integer({ min: 0, max: 70_000 }) }),
          ),
          { maxLength: 80 },
        ),
        (steps) => {
          const held = new HeldPieces();
          const pushed: Buffer[] = [];
          const taken: Buffer[] = [];
          let next = 0;
          for (const step of steps) {
            if ('take' in step) {
              const piece = held.shift();
              if (piece !== undefined) taken.push(Buffer.from(piece)); // a copy: what it was when delivered
            } else {
              const bytes = Buffer.from(Array.from({ length: step.length }, () => next++ & 0xff));
              const read = Buffer.alloc(step.length + step.slack);
              bytes.copy(read, step.slack);
              pushed.push(bytes);
              held.push(read.subarray(step.slack));
            }
          }
          taken.push(...drain(held));
          expect(held.length).toBe(0);
          expect(Buffer.concat(taken).equals(Buffer.concat(pushed))).toBe(true);
        },
      ),
    );
  });

  test('a large piece that is most of its read is held as it is; small pieces are copied together', () => {
    const held = new HeldPieces();
    const large = pieceOf(40_000, 100, 39_000, 1);
    held.push(large);
    for (let i = 0; i < 1_000; i++) held.push(pieceOf(64 * 1024, i, 1, 2));
    expect(held.length).toBe(1 + 3); // 1 000 bytes in buffers of 256, 512 and 1 024 B
    const [first, ...runs] = drain(held);
    expect(first).toBe(large);
    expect(Buffer.concat(runs).equals(Buffer.alloc(1_000, 2))).toBe(true);
    for (const run of runs) expect(run.buffer.byteLength).toBeLessThanOrEqual(16 * 1024);
  });

  test('a piece of a small part of its read, however large, is copied', () => {
    const held = new HeldPieces();
    const piece = pieceOf(64 * 1024, 0, HOLD_VIEW_MIN_BYTES * 4, 3);
    held.push(piece);
    const [out] = drain(held);
    expect(out.buffer).not.toBe(piece.buffer);
    expect(out.equals(piece)).toBe(true);
  });

  test('small pieces between large ones cost a small buffer each, not a large one', () => {
    const held = new HeldPieces();
    let bytes = 0;
    for (let i = 0; i < 100; i++) {
      held.push(pieceOf(1, 0, 1, 4));
      held.push(pieceOf(HOLD_VIEW_MIN_BYTES, 0, HOLD_VIEW_MIN_BYTES, 5));
      bytes += 1 + HOLD_VIEW_MIN_BYTES;
    }
    const pieces = drain(held);
    expect(pieces).toHaveLength(200);
    const memory = pieces.reduce((sum, piece) => sum + piece.buffer.byteLength, 0);
    expect(memory).toBeLessThanOrEqual(1.3 * bytes); // 256 B per one-byte piece beside 1 KiB ones
  });

  test('the reads small pieces came in can be collected while they are held', async () => {
    const held = new HeldPieces();
    const reads: Array<WeakRef<ArrayBuffer>> = [];
    for (let i = 0; i < 500; i++) {
      const read = Buffer.alloc(64 * 1024);
      reads.push(new WeakRef(read.buffer));
      held.push(read.subarray(i, i + 1));
    }
    await new Promise((resolve) => setImmediate(resolve)); // WeakRef targets are kept until the job ends
    gc();
    expect(held.length).toBeGreaterThan(0);
    // Held as views they pinned all 500 reads (32 MiB for 500 bytes); the last may still be on this function's stack.
    expect(reads.filter((read) => read.deref() !== undefined).length).toBeLessThanOrEqual(1);
  });
});
