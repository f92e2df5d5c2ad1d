/** OutageLog: one warning per outage (and per new reason), the repeats at debug, and a line when it ends. */
import { describe, expect, test } from '@jest/globals';
import type { LoggerService } from '@nestjs/common';
import { RateLimitedLog } from '../../lib/nest/log.js';
import { OutageLog } from '../../lib/nest/outage-log.js';
import { FakeClock } from '../helpers/fake-clock.js';

function setup(): { clock: FakeClock; lines: Array<[string, string]>; outages: OutageLog } {
  const clock = new FakeClock();
  const lines: Array<[string, string]> = [];
  const logger: LoggerService = {
    log: (message: string) => void lines.push(['log', message]),
    warn: (message: string) => void lines.push(['warn', message]),
    error: (message: string) => void lines.push(['error', message]),
    debug: (message: string) => void lines.push(['debug', message]),
  };
  return { clock, lines, outages: new OutageLog(new RateLimitedLog(logger, clock), clock) };
}

const refused = new Error('connect ECONNREFUSED');
const reset = new Error('read ECONNRESET');

describe('OutageLog', () => {
  test('the first failure warns, the same failure again is debug, a new reason warns; the success counts them all', () => {
    const { clock, lines, outages } = setup();
    outages.failed('a:1', refused, true);
    clock.advance(1_000);
    outages.failed('a:1', refused, true);
    outages.failed('a:1', reset, true);
    clock.advance(1_500);
    outages.connected('a:1', 2);
    expect(lines).toEqual([
      ['warn', 'Could not connect to a:1: connect ECONNREFUSED (retrying in the background)'],
      ['debug', 'Could not connect to a:1: connect ECONNREFUSED (retrying in the background)'],
      ['warn', 'Could not connect to a:1: read ECONNRESET (retrying in the background)'],
      ['log', 'Connected to a:1 after 3 failed attempts over 2.5 s'],
    ]);
    lines.length = 0;
    outages.connected('a:1', 2); // no outage now: a routine connection
    expect(lines).toEqual([['debug', 'Connected to a:1 (smux protocol version 2)']]);
  });

  test('addresses have outages of their own', () => {
    const { lines, outages } = setup();
    outages.failed('a:1', refused, true);
    outages.failed('b:1', refused, true);
    outages.connected('b:1', 2);
    expect(lines.map(([level]) => level)).toEqual(['warn', 'warn', 'log']);
  });

  test('an attempt nobody asked for (retrying false) warns but starts no outage: a later success is routine', () => {
    const { clock, lines, outages } = setup();
    outages.failed('a:1', refused, false);
    clock.advance(3_600_000); // an idle hour: not an outage
    outages.connected('a:1', 2);
    expect(lines).toEqual([
      ['warn', 'Could not connect to a:1: connect ECONNREFUSED (the next call reconnects)'],
      ['debug', 'Connected to a:1 (smux protocol version 2)'],
    ]);
  });

  test("forget() drops one address's outage, clear() every one: the next failure there warns again", () => {
    const { lines, outages } = setup();
    outages.failed('a:1', refused, true);
    outages.failed('b:1', refused, true);
    outages.forget('a:1');
    outages.failed('a:1', refused, true); // forgotten: warns
    outages.failed('b:1', refused, true); // still in its outage: debug
    outages.clear();
    outages.failed('b:1', refused, true); // cleared: warns
    expect(lines.map(([level]) => level)).toEqual(['warn', 'warn', 'warn', 'debug', 'warn']);
  });
});
