import { describe, expect, test } from '@jest/globals';
import { SmuxError } from '../../lib/smux/errors.js';
import { StreamIdAllocator } from '../../lib/smux/stream-ids.js';

function errorOf(fn: () => unknown): SmuxError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SmuxError);
    return error as SmuxError;
  }
  throw new Error('did not throw');
}

function take(ids: StreamIdAllocator, n: number): number[] {
  return Array.from({ length: n }, () => ids.next());
}

describe('StreamIdAllocator', () => {
  // Go: the counter starts at 1 (client) / 0 (server) and OpenStream adds 2 before use (PROTOCOL.md §2).
  test('a client opens 3, 5, 7, …', () => {
    expect(take(new StreamIdAllocator('client'), 4)).toEqual([3, 5, 7, 9]);
  });

  test('a server opens 2, 4, 6, …', () => {
    expect(take(new StreamIdAllocator('server'), 4)).toEqual([2, 4, 6, 8]);
  });

  test('each side has 2^31 - 1 ids per session', () => {
    expect(new StreamIdAllocator('client').remaining).toBe(2_147_483_647);
    expect(new StreamIdAllocator('server').remaining).toBe(2_147_483_647);
  });

  test('firstStreamId sets the first id and later ones add 2', () => {
    expect(take(new StreamIdAllocator('client', 101), 3)).toEqual([101, 103, 105]);
    expect(take(new StreamIdAllocator('server', 1000), 3)).toEqual([1000, 1002, 1004]);
  });

  test.each([
    ['client', 4],
    ['client', 0xffff_fffe],
    ['server', 3],
    ['server', 0xffff_ffff],
  ] as const)('a %s refuses firstStreamId %d of the wrong parity with ERR_SMUX_INVALID_CONFIG', (role, first) => {
    const error = errorOf(() => new StreamIdAllocator(role, first));
    expect(error.code).toBe('ERR_SMUX_INVALID_CONFIG');
    expect(error.message).toContain('firstStreamId');
  });

  test('a client ends at 0xFFFFFFFF, then fails with ERR_SMUX_GOAWAY', () => {
    const ids = new StreamIdAllocator('client', 0xffff_fffd);
    expect(ids.remaining).toBe(2);
    expect(ids.next()).toBe(0xffff_fffd);
    expect(ids.remaining).toBe(1);
    expect(ids.next()).toBe(0xffff_ffff);
    expect(ids.remaining).toBe(0);
    expect(errorOf(() => ids.next()).code).toBe('ERR_SMUX_GOAWAY');
  });

  test('a server ends at 0xFFFFFFFE, then fails with ERR_SMUX_GOAWAY', () => {
    const ids = new StreamIdAllocator('server', 0xffff_fffc);
    expect(ids.remaining).toBe(2);
    expect(take(ids, 2)).toEqual([0xffff_fffc, 0xffff_fffe]);
    expect(ids.remaining).toBe(0);
    expect(errorOf(() => ids.next()).code).toBe('ERR_SMUX_GOAWAY');
  });

  test('the last id of each side can also be the first', () => {
    expect(new StreamIdAllocator('client', 0xffff_ffff).next()).toBe(0xffff_ffff);
    expect(new StreamIdAllocator('server', 0xffff_fffe).next()).toBe(0xffff_fffe);
  });

  test('GOAWAY is sticky: every later call fails the same way and nothing is handed out', () => {
    const ids = new StreamIdAllocator('client', 0xffff_ffff);
    ids.next();
    for (let i = 0; i < 3; i++) expect(errorOf(() => ids.next()).code).toBe('ERR_SMUX_GOAWAY');
    expect(ids.remaining).toBe(0);
  });

  test('remaining counts down by one per id to 0', () => {
    const ids = new StreamIdAllocator('server', 0xffff_fff0);
    const seen: number[] = [ids.remaining];
    while (ids.remaining > 0) {
      ids.next();
      seen.push(ids.remaining);
    }
    expect(seen).toEqual([8, 7, 6, 5, 4, 3, 2, 1, 0]);
    expect(errorOf(() => ids.next()).code).toBe('ERR_SMUX_GOAWAY');
  });
});
