/**
 * After a burst, a server's and a client's per-call objects must die young again (docs/NOTES.md, "The Map that
 * slowed a server for life"): V8's Map/Set link each outgrown hash table to the next, and once a burst put one in
 * the old generation every later call held in such a collection survived its scavenge — the server ran ≈ 1.6 ×
 * slower per call for life. A child process runs client and server (attacks/child/burst-retention.ts).
 *
 * It runs with `--no-allocation-site-pretenuring`: in one process holding both sides, V8's pretenuring also starts
 * allocating the calls' objects in the old generation after such a burst (a separate V8 decision, measured with no
 * effect on CPU per call with client and server in their own processes, as deployed); the flag keeps this test on
 * what our code controls. Measured: ≈ 0.6 MiB promoted during the calls; 41 MiB with the Map and Sets replaced.
 */
import { expect, test } from '@jest/globals';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const child = fileURLToPath(new URL('./attacks/child/burst-retention.ts', import.meta.url));
const register = new URL('./attacks/child/ts-register.mjs', import.meta.url).href;

test('after a burst of 20 000 events, 20 000 calls promote next to nothing to the old generation', async () => {
  const args = ['--expose-gc', '--no-allocation-site-pretenuring', '--import', register, child];
  const { stdout } = await promisify(execFile)(process.execPath, args, { timeout: 90_000 });
  const { promotedBytes, ticks } = JSON.parse(stdout.trim().split('\n').pop()!) as { promotedBytes: number; ticks: number };
  expect(ticks).toBe(20_000);
  expect(promotedBytes).toBeLessThan(4 * 1024 * 1024);
}, 120_000);
