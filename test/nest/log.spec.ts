/** RateLimitedLog: five lines of a kind per 10 s at their level, then one line with the count of the rest. */
import { describe, expect, test } from '@jest/globals';
import type { LoggerService } from '@nestjs/common';
import { RateLimitedLog } from '../../lib/nest/log.js';
import { FakeClock } from '../helpers/fake-clock.js';

function recordingLogger(lines: Array<[string, string]>): LoggerService {
  return {
    log: (message: string) => void lines.push(['log', message]),
    warn: (message: string) => void lines.push(['warn', message]),
    error: (message: string) => void lines.push(['error', message]),
  };
}

describe('RateLimitedLog', () => {
  test('per kind and level: five lines per window, then a count at the end of the window, at the same level', () => {
    const clock = new FakeClock();
    const lines: Array<[string, string]> = [];
    const log = new RateLimitedLog(recordingLogger(lines), clock);
    for (let i = 0; i < 12; i++) log.error('unhandled event', `event ${i}`);
    for (let i = 0; i < 7; i++) log.warn('limit', `limit ${i}`);
    expect(lines).toEqual([
      ...[0, 1, 2, 3, 4].map((i): [string, string] => ['error', `event ${i}`]),
      ...[0, 1, 2, 3, 4].map((i): [string, string] => ['warn', `limit ${i}`]),
    ]);
    lines.length = 0;
    clock.advance(10_000);
    expect(lines).toEqual([
      ['error', '… and 7 more unhandled event errors like these within 10 s (not logged one by one)'],
      ['warn', '… and 2 more limit warnings like these within 10 s (not logged one by one)'],
    ]);
    lines.length = 0;
    log.error('unhandled event', 'a new window');
    expect(lines).toEqual([['error', 'a new window']]);
    log.close(); // nothing was suppressed in this window: no summary
    expect(lines).toHaveLength(1);
  });

  test('debug lines have the same budget and their own count; a logger without debug() gets none of them', () => {
    const clock = new FakeClock();
    const lines: Array<[string, string]> = [];
    const log = new RateLimitedLog({ ...recordingLogger(lines), debug: (message: string) => void lines.push(['debug', message]) }, clock);
    for (let i = 0; i < 8; i++) log.debug('connection', `connection ${i}`);
    log.close(); // the count goes out at once
    expect(lines).toEqual([
      ...[0, 1, 2, 3, 4].map((i): [string, string] => ['debug', `connection ${i}`]),
      ['debug', '… and 3 more connection debug lines like these within 10 s (not logged one by one)'],
    ]);
    const quiet = new RateLimitedLog(recordingLogger(lines), clock);
    for (let i = 0; i < 8; i++) quiet.debug('connection', `connection ${i}`);
    quiet.close();
    expect(lines).toHaveLength(6);
  });
});
