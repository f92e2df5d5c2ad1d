/**
 * `npm test`: the whole suite in two phases. First every suite but the attacks, on Jest's two workers; then the
 * attacks (test/nest/attacks/), one at a time with nothing else running. Each attack checks that a well-behaved client
 * keeps ≥ 50 % of its calls/s while it runs: beside another worker's end-to-end suites on a 2-core machine that share
 * fell to 44 – 58 % from CPU contention alone (docs/NOTES.md, "The attacks run alone"), a red run caused by the test
 * setup, not by the server.
 *
 * Arguments go to Jest. With a test path or name (`npm test -- test/smux`, `npm test -- -t 'keep-alive'`) it is one
 * Jest run of what matches, as `npx jest` would be; with options only (`npm test -- --silent`) both phases get them.
 * Exits non-zero if either phase failed (the second runs even when the first failed).
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const jest = createRequire(import.meta.url).resolve('jest/bin/jest');
const args = process.argv.slice(2);
const selects = args.some((arg) => !arg.startsWith('-'));

/** Runs Jest with `phase` (read by jest.config.js; undefined: every suite); returns its exit status. */
function run(phase) {
  const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --experimental-vm-modules`.trim() };
  if (phase === undefined) delete env.SMUX_TEST_PHASE;
  else env.SMUX_TEST_PHASE = phase;
  const { status, signal } = spawnSync(process.execPath, [jest, ...args], { stdio: 'inherit', env });
  if (signal !== null) process.kill(process.pid, signal);
  return status ?? 1;
}

if (selects) process.exit(run(undefined));
const main = run('main');
console.log('\nnpm test: the attacks, one at a time with nothing else running (scripts/test.mjs says why)\n');
const attacks = run('attacks');
process.exit(main !== 0 ? main : attacks);
