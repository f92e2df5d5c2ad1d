import { describe, test } from '@jest/globals';
import { goAvailability } from './go-peer.js';

/**
 * `describe` that needs the Go peer. Without Go it skips loudly, or, when `SMUX_REQUIRE_GO=1`
 * (CI), registers a failing test that says why, so a broken CI image cannot pass by skipping.
 */
export function describeWithGo(name: string, fn: () => void): void {
  const go = goAvailability();
  if (go.ok) {
    describe(name, fn);
  } else if (process.env.SMUX_REQUIRE_GO === '1') {
    describe(name, () => {
      test('Go peer is available (SMUX_REQUIRE_GO=1)', () => {
        throw new Error(`Go interop required but unavailable: ${go.reason}`);
      });
    });
  } else {
    console.warn(`\n*** SKIPPED Go interop: ${name}: ${go.reason} ***\n`);
    describe.skip(name, fn);
  }
}
