import { describe, expect, test } from '@jest/globals';
import { Cmd, DEFAULT_CONFIG, PROTOCOL_VERSIONS, SmuxError, systemClock, validateConfig } from '../../lib/smux/index.js';

function rejection(input: Record<string, unknown>): SmuxError {
  try {
    validateConfig(input);
  } catch (error) {
    expect(error).toBeInstanceOf(SmuxError);
    expect((error as SmuxError).code).toBe('ERR_SMUX_INVALID_CONFIG');
    return error as SmuxError;
  }
  throw new Error(`accepted ${JSON.stringify(input)}`);
}

describe('validateConfig', () => {
  test("defaults are Go's DefaultConfig", () => {
    const c = validateConfig();
    expect([
      c.version,
      c.keepAliveDisabled,
      c.keepAliveInterval,
      c.keepAliveTimeout,
      c.maxFrameSize,
      c.maxReceiveBuffer,
      c.maxStreamBuffer,
    ]).toEqual([1, false, 10_000, 30_000, 32_768, 4_194_304, 65_536]);
    expect(Object.isFrozen(c)).toBe(true);
    expect(c).toEqual({ ...DEFAULT_CONFIG });
  });

  // Every case Go's TestConfig rejects (PROTOCOL.md §8), plus negative durations and our own fields.
  test.each([
    [{ version: 3 }, 'version'],
    [{ version: 0 }, 'version'],
    [{ keepAliveInterval: 0 }, 'keepAliveInterval'],
    [{ keepAliveInterval: 100, keepAliveTimeout: 99 }, 'keepAliveTimeout'],
    [{ maxFrameSize: 0 }, 'maxFrameSize'],
    [{ maxFrameSize: 65_536 }, 'maxFrameSize'],
    [{ maxReceiveBuffer: 0 }, 'maxReceiveBuffer'],
    [{ maxReceiveBuffer: 2 ** 31 }, 'maxReceiveBuffer'],
    [{ maxStreamBuffer: 0 }, 'maxStreamBuffer'],
    [{ maxReceiveBuffer: 1000, maxStreamBuffer: 1001 }, 'maxStreamBuffer'],
    [{ maxStreamBuffer: 2 ** 31, maxReceiveBuffer: 2 ** 31 - 1 }, 'maxStreamBuffer'],
    [{ keepAliveInterval: -1 }, 'keepAliveInterval'],
    [{ keepAliveDisabled: true, keepAliveInterval: -5 }, 'keepAliveInterval'],
    [{ keepAliveTimeout: -1 }, 'keepAliveTimeout'],
    [{ keepAliveInterval: 1.5 }, 'keepAliveInterval'],
    [{ maxFrameSize: Number.NaN }, 'maxFrameSize'],
    [{ maxStreams: 0 }, 'maxStreams'],
    [{ peerFinWriteTimeout: -1 }, 'peerFinWriteTimeout'],
    [{ maxRefusedStreams: -1 }, 'maxRefusedStreams'],
    [{ peerFinWriteTimeout: 0.5 }, 'peerFinWriteTimeout'],
    [{ acceptBacklog: 0 }, 'acceptBacklog'],
    [{ streamHighWaterMark: 0 }, 'streamHighWaterMark'],
    [{ waitForOpenerData: 'yes' }, 'waitForOpenerData'],
    [{ firstStreamId: 1 }, 'firstStreamId'],
    [{ clock: {} }, 'clock'],
    [{ maxFrameSzie: 100 }, 'maxFrameSzie'],
    [{ maxStreamWindow: -1 }, 'maxStreamWindow'],
    [{ maxStreamWindow: 1.5 }, 'maxStreamWindow'],
    [{ maxStreamWindow: '1MiB' }, 'maxStreamWindow'],
    [{ maxStreamWindow: 2 ** 31 }, 'maxStreamWindow'],
    [{ maxStreamWindow: 65_535 }, 'maxStreamWindow'], // below maxStreamBuffer (64 KiB)
    [{ maxStreamWindow: 4_194_305 }, 'maxStreamWindow'], // above maxReceiveBuffer (4 MiB)
    [{ maxStreamBuffer: 262_144, maxStreamWindow: 131_072 }, 'maxStreamWindow'],
    [{ contendedStreamWindow: -1 }, 'contendedStreamWindow'],
    [{ contendedStreamWindow: 0.5 }, 'contendedStreamWindow'],
    [{ contendedStreamWindow: 1 }, 'contendedStreamWindow'], // below 16 KiB: tiny frames, a UPD per read
    [{ contendedStreamWindow: 16_383 }, 'contendedStreamWindow'],
    [{ contendedStreamWindow: 65_537 }, 'contendedStreamWindow'], // above maxStreamBuffer, no auto-tuning
    [{ maxStreamWindow: 1_048_576, contendedStreamWindow: 1_048_577 }, 'contendedStreamWindow'],
  ])('rejects %j naming %s', (input, field) => {
    expect(rejection(input).message).toContain(field);
  });

  test('accepts the boundaries Go accepts', () => {
    expect(() => validateConfig({ keepAliveInterval: 100, keepAliveTimeout: 100 })).not.toThrow();
    expect(() => validateConfig({ maxFrameSize: 65_535 })).not.toThrow();
    expect(() => validateConfig({ maxReceiveBuffer: 2 ** 31 - 1, maxStreamBuffer: 2 ** 31 - 1 })).not.toThrow();
    expect(() => validateConfig({ keepAliveDisabled: true, keepAliveInterval: 0, keepAliveTimeout: 0 })).not.toThrow();
    expect(validateConfig({ version: 2 }).version).toBe(2);
  });

  test('maxStreamWindow (auto-tuning): off (0) by default; 0, or from maxStreamBuffer to maxReceiveBuffer', () => {
    expect(validateConfig().maxStreamWindow).toBe(0);
    expect(validateConfig({ maxStreamWindow: 0 }).maxStreamWindow).toBe(0);
    expect(validateConfig({ maxStreamWindow: 65_536 }).maxStreamWindow).toBe(65_536);
    expect(validateConfig({ maxStreamWindow: 4_194_304 }).maxStreamWindow).toBe(4_194_304);
    expect(validateConfig({ maxStreamBuffer: 262_144, maxStreamWindow: 1_048_576 }).maxStreamWindow).toBe(1_048_576);
    const message = rejection({ maxStreamWindow: 1000 }).message;
    expect(message).toContain('maxStreamBuffer (65536)');
    expect(message).toContain('maxReceiveBuffer (4194304)');
  });
});

test('contendedStreamWindow: no limit (0) by default; 0, or up to the largest window a stream can have', () => {
  expect(validateConfig().contendedStreamWindow).toBe(0);
  expect(validateConfig({ contendedStreamWindow: 16_384 }).contendedStreamWindow).toBe(16_384);
  expect(validateConfig({ contendedStreamWindow: 65_536 }).contendedStreamWindow).toBe(65_536);
  expect(validateConfig({ maxStreamWindow: 1_048_576, contendedStreamWindow: 1_048_576 }).contendedStreamWindow).toBe(1_048_576);
  const message = rejection({ contendedStreamWindow: 100_000 }).message;
  expect(message).toContain('must be 0 (no limit) or from 16384 to the largest window a stream can have, 65536');
});

describe('shared constants', () => {
  test('what every session reads is frozen: a change would reach every session of the process', () => {
    for (const shared of [Cmd, PROTOCOL_VERSIONS, systemClock, DEFAULT_CONFIG]) expect(Object.isFrozen(shared)).toBe(true);
    expect(() => void ((Cmd as { PSH: number }).PSH = 9)).toThrow(TypeError);
    expect(() => void ((systemClock as { now: () => number }).now = () => 0)).toThrow(TypeError);
    expect(Cmd.PSH).toBe(2);
  });
});
