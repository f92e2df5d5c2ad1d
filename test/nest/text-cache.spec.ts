/**
 * The decoded-text cache the server reads patterns through: whatever the bytes (invalid UTF-8, texts that share a
 * slot, lengths beyond the cache), it returns exactly what `toString('utf8')` would.
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { cachedText, MAX_CACHED_TEXT } from '../../lib/nest/text-cache.js';

describe('cachedText', () => {
  test('equals toString for any bytes at any offset, over a sequence of lookups that share and steal slots', () => {
    // A small alphabet and short lengths make repeats and slot collisions common.
    const bytes = fc
      .uint8Array({ minLength: 0, maxLength: MAX_CACHED_TEXT + 8 })
      .map((a) => a.map((b) => [0x61, 0x62, 0xc3, 0xa9, 0xff][b % 5]));
    fc.assert(
      fc.property(fc.array(fc.tuple(bytes, fc.nat(3)), { maxLength: 200 }), (lookups) => {
        for (const [text, pad] of lookups) {
          const buf = Buffer.concat([Buffer.alloc(pad, 0x7a), Buffer.from(text), Buffer.alloc(2, 0x7a)]);
          expect(cachedText(buf, pad, text.length)).toBe(buf.toString('utf8', pad, pad + text.length));
        }
      }),
      { numRuns: 300 },
    );
  });

  test('a text in the same slot (same length, first, middle and last byte) that differs elsewhere is decoded anew', () => {
    expect(cachedText(Buffer.from('xxmath.sumyy'), 2, 8)).toBe('math.sum');
    expect(cachedText(Buffer.from('mbth.sum'), 0, 8)).toBe('mbth.sum');
    expect(cachedText(Buffer.from('math.sum'), 0, 8)).toBe('math.sum');
  });
});
