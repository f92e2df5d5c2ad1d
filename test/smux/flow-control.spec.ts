import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { INITIAL_PEER_WINDOW } from '../../lib/smux/constants.js';
import {
  extendGrant,
  ReceiveBucket,
  sendWindow,
  shouldSendUpdate,
  streamAllowance,
  u32Add,
  u32After,
  windowOverrunError,
} from '../../lib/smux/flow-control.js';

const TWO_32 = 2 ** 32;

describe('u32Add', () => {
  test('adds modulo 2^32, as Go uint32 counters do', () => {
    expect(u32Add(1, 2)).toBe(3);
    expect(u32Add(0xffff_ffff, 1)).toBe(0);
    expect(u32Add(0xffff_fff0, 0x20)).toBe(0x10);
    expect(u32Add(0x8000_0000, 0x8000_0000)).toBe(0);
  });

  test('always gives a non-negative integer below 2^32 (property)', () => {
    fc.assert(
      fc.property(fc.nat(0xffff_ffff), fc.nat(0x7fff_ffff), (a, b) => {
        const sum = u32Add(a >>> 0, b);
        expect(sum).toBe(((a >>> 0) + b) % TWO_32);
      }),
      { numRuns: 200 },
    );
  });
});

describe('sendWindow', () => {
  test('before any UPD a v2 sender may send the assumed 256 KiB', () => {
    expect(sendWindow(0, 0, INITIAL_PEER_WINDOW)).toBe(262_144);
    expect(sendWindow(100_000, 0, INITIAL_PEER_WINDOW)).toBe(162_144);
  });

  // numWritten wrapped past 0 while peerConsumed is still just below 2^32: 26 bytes are in flight.
  test('stays correct when numWritten has wrapped past 2^32 and peerConsumed has not', () => {
    const numWritten = u32Add(0xffff_fff0, 0x20); // 0x10
    expect(sendWindow(numWritten, 0xffff_fff0 + 6, 65_536)).toBe(65_536 - 26);
    expect(sendWindow(5, 0xffff_ffff, 100)).toBe(94);
  });

  test('is 0 when exactly a window is in flight, and negative beyond it (the peer shrank its window)', () => {
    expect(sendWindow(65_536, 0, 65_536)).toBe(0);
    expect(sendWindow(u32Add(0xffff_0000, 65_536), 0xffff_0000, 65_536)).toBe(0);
    expect(sendWindow(262_144, 0, 65_536)).toBe(65_536 - 262_144);
  });

  test('is NaN when the peer claims to have consumed more than was sent (Go ErrConsumed)', () => {
    expect(sendWindow(100, 101, 65_536)).toBeNaN();
    // Across the wrap: consumed already past 0, written not yet.
    expect(sendWindow(0xffff_fff0, 5, 65_536)).toBeNaN();
  });

  // Go: win := int32(peerWindow) - inflight. A window ≥ 2^31 is negative as an int32: nothing may be sent.
  test.each([
    [0x8000_0000, 0],
    [0xffff_ffff, 0],
    [0xffff_ffff, 100],
    [0x8000_0000, 1],
    [0x9000_0000, 65_536],
  ])('a peer window of %d with %d bytes in flight allows no sending', (window, inflight) => {
    expect(sendWindow(inflight, 0, window)).toBeLessThanOrEqual(0);
  });

  test('a peer window of 2^31 - 1 is the largest that allows sending', () => {
    expect(sendWindow(0, 0, 0x7fff_ffff)).toBe(0x7fff_ffff);
  });

  test('equals window - inflight for any position of the counters (property)', () => {
    fc.assert(
      fc.property(fc.nat(0xffff_ffff), fc.nat(0x7fff_ffff), fc.nat(0x7fff_ffff), (consumed, inflight, window) => {
        const numWritten = u32Add(consumed >>> 0, inflight);
        expect(sendWindow(numWritten, consumed >>> 0, window)).toBe(window - inflight);
      }),
      { numRuns: 300 },
    );
  });
});

describe('shouldSendUpdate', () => {
  test('the first read on a stream sends a UPD (numRead === n)', () => {
    expect(shouldSendUpdate(100, 100, 100, 65_536)).toBe(true);
  });

  test('later small reads do not, until half the window was consumed since the last UPD', () => {
    expect(shouldSendUpdate(200, 100, 100, 65_536)).toBe(false);
    expect(shouldSendUpdate(32_867, 100, 32_767, 65_536)).toBe(false);
    expect(shouldSendUpdate(32_868, 1, 32_768, 65_536)).toBe(true);
    expect(shouldSendUpdate(1_000_000, 50_000, 50_000, 65_536)).toBe(true);
  });

  test('after exactly 2^32 bytes consumed, the next read counts as a first read again (Go quirk)', () => {
    const before = u32Add(0xffff_ff00, 0x100); // 2^32 consumed: the counter is back at 0
    const numRead = u32Add(before, 50);
    expect(numRead).toBe(50);
    expect(shouldSendUpdate(numRead, 50, 50, 65_536)).toBe(true);
  });

  test('a read ending just past a wrap is not a first read', () => {
    expect(shouldSendUpdate(u32Add(0xffff_fff0, 0x20), 0x20, 0x20, 65_536)).toBe(false);
  });

  // Go: `incr >= uint32(MaxStreamBuffer/2)` with integer division, so an odd window rounds the threshold down.
  test("an odd window uses Go's integer half: window 65535 sends at 32767 bytes pending", () => {
    expect(shouldSendUpdate(40_000, 100, 32_766, 65_535)).toBe(false);
    expect(shouldSendUpdate(40_000, 100, 32_767, 65_535)).toBe(true);
    expect(shouldSendUpdate(10, 1, 1, 3)).toBe(true); // Go: 3/2 = 1
  });
});

describe('streamAllowance', () => {
  test('is 0 in v1: every unconsumed byte is charged to the session', () => {
    expect(streamAllowance(1, 65_536)).toBe(0);
    expect(streamAllowance(1, 1_000_000)).toBe(0);
  });

  test('is max(256 KiB, maxStreamBuffer) in v2', () => {
    expect(streamAllowance(2, 65_536)).toBe(262_144);
    expect(streamAllowance(2, 262_144)).toBe(262_144);
    expect(streamAllowance(2, 1_000_000)).toBe(1_000_000);
  });
});

describe('ReceiveBucket', () => {
  test('v1 (allowance 0) charges every unconsumed byte and refunds it when consumed', () => {
    const bucket = new ReceiveBucket(1000, streamAllowance(1, 65_536));
    bucket.update(0, 300);
    expect(bucket.tokens).toBe(700);
    bucket.update(300, 450);
    expect(bucket.tokens).toBe(550);
    bucket.update(450, 0);
    expect(bucket.tokens).toBe(1000);
  });

  test('is exhausted at 0 tokens and below, not above', () => {
    const bucket = new ReceiveBucket(1000, 0);
    bucket.update(0, 999);
    expect([bucket.tokens, bucket.exhausted]).toEqual([1, false]);
    bucket.update(999, 1000);
    expect([bucket.tokens, bucket.exhausted]).toEqual([0, true]);
    // Go checks before each header, so one frame can overshoot.
    bucket.update(1000, 66_535);
    expect([bucket.tokens, bucket.exhausted]).toEqual([-65_535, true]);
    bucket.update(66_535, 0);
    expect([bucket.tokens, bucket.exhausted]).toEqual([1000, false]);
  });

  test('v2 charges only the bytes beyond the stream allowance', () => {
    const bucket = new ReceiveBucket(1000, 300);
    bucket.update(0, 300); // within the allowance: a compliant peer's in-flight data costs nothing
    expect(bucket.tokens).toBe(1000);
    bucket.update(300, 500);
    expect(bucket.tokens).toBe(800);
    bucket.update(500, 250); // back below the allowance: the whole charge is refunded
    expect(bucket.tokens).toBe(1000);
    bucket.update(250, 900);
    expect(bucket.tokens).toBe(400);
    bucket.update(900, 600);
    expect(bucket.tokens).toBe(700);
  });

  test('streams are accounted independently: each has its own allowance', () => {
    const bucket = new ReceiveBucket(1000, 300);
    bucket.update(0, 400); // stream A: 100 over
    bucket.update(0, 400); // stream B: 100 over
    expect(bucket.tokens).toBe(800);
    bucket.update(400, 0); // A consumed
    expect(bucket.tokens).toBe(900);
  });

  test('any sequence of changes that returns to 0 unconsumed restores the capacity (property)', () => {
    fc.assert(
      fc.property(fc.nat(300_000), fc.array(fc.nat(500_000), { maxLength: 20 }), (allowance, levels) => {
        const bucket = new ReceiveBucket(4_194_304, allowance);
        let before = 0;
        for (const after of [...levels, 0]) {
          bucket.update(before, after);
          expect(bucket.tokens).toBe(4_194_304 - Math.max(0, after - allowance));
          before = after;
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('extendGrant: the furthest a v2 peer may send on a stream, from the UPDs we send', () => {
  const W = 65_536;

  test('our first UPD: consumed + window, or consumed + the 262 144 the peer assumed (Go may read the new consumed with the old window)', () => {
    expect(extendGrant(INITIAL_PEER_WINDOW, 10_000, W, INITIAL_PEER_WINDOW)).toBe(10_000 + INITIAL_PEER_WINDOW);
    expect(extendGrant(INITIAL_PEER_WINDOW, 10_000, 1_048_576, INITIAL_PEER_WINDOW)).toBe(10_000 + 1_048_576);
  });

  test('grows with what is consumed, and with a grown window (auto-tuning)', () => {
    expect(extendGrant(272_144, 300_000, W, W)).toBe(300_000 + W);
    expect(extendGrant(365_536, 400_000, 2 * W, W)).toBe(400_000 + 2 * W);
  });

  test('a smaller window later does not take back the larger grant; the UPD that shrinks it grants what the old window would', () => {
    expect(extendGrant(1_000_000, 900_000, 16_384, 16_384)).toBe(1_000_000);
    expect(extendGrant(1_000_000, 980_000, 16_384, W)).toBe(980_000 + W); // torn read: new consumed, old window
    expect(extendGrant(1_100_000, 1_090_000, 16_384, 16_384)).toBe(1_106_384);
  });

  test('wraps at 2^32 as the counters do: a grant past 2^32 is further than one just below it, never the reverse', () => {
    expect(extendGrant(0xffff_0000, 0xffff_fff0, W, W)).toBe(0xfff0);
    expect(extendGrant(0xfff0, 0xffff_0000, 16, 16)).toBe(0xfff0);
    expect(u32After(0x10, 0xffff_fff0)).toBe(true);
    expect(u32After(0xffff_fff0, 0x10)).toBe(false);
    expect(u32After(5, 5)).toBe(false);
  });

  test('matches a model on unwrapped counters across any wrap: the furthest of the old grant and consumed + max(window, previous) (property)', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 3n * 2n ** 32n }), // the grant so far, in bytes from the stream's start (not wrapped)
        fc.integer({ min: -(2 ** 30), max: 2 ** 20 }), // where consumption stands against it
        fc.nat(16 * 1_048_576),
        fc.nat(16 * 1_048_576),
        (grantedAbs, offset, w, prev) => {
          const numReadAbs = grantedAbs + BigInt(offset) < 0n ? 0n : grantedAbs + BigInt(offset);
          const reach = numReadAbs + BigInt(Math.max(w, prev));
          const expected = reach > grantedAbs ? reach : grantedAbs;
          const wrap = (n: bigint): number => Number(n % 2n ** 32n);
          expect(extendGrant(wrap(grantedAbs), wrap(numReadAbs), w, prev)).toBe(wrap(expected));
        },
      ),
      { numRuns: 1_000 },
    );
  });
});

describe('windowOverrunError', () => {
  test('ERR_SMUX_PROTOCOL naming the stream, the bytes received, how far past the grant, and the budget', () => {
    const error = windowOverrunError(3, 327_680, 262_144, 65_536);
    expect(error.code).toBe('ERR_SMUX_PROTOCOL');
    expect(error.message).toBe(
      "the peer ignored the window of stream 3: it sent 327680 bytes, 65536 past the 262144 granted, and spent the session's receive budget (maxReceiveBuffer 65536 bytes)",
    );
  });

  test('says the counts are modulo 2^32 when the bytes received wrapped past the grant', () => {
    expect(windowOverrunError(5, 0x10, 0xffff_fff0, 65_536).message).toContain(
      'it sent 16 bytes, 32 past the 4294967280 granted, counted modulo 2^32',
    );
  });
});
