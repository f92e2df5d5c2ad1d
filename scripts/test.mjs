/**
 * `npm test`: the whole suite in two phases. First every suite but the attacks, on Jest's two workers; then the
 * attacks (test/nest/attacks/), one at a time with nothing else running. Each attack checks that a well-behaved client
 * keeps ≥ 50 % of its calls/s while it runs: beside another worker's end-to-end suites on a 2-core machine that share
 * fell to 44 – 58 % from CPU contention alone (docs/NOTES.md, "The attacks run alone"), a red run caused by the test
 * setup, not by the server.
 *
 * Arguments go to Jest. With a test path or name (`npm test -- test/smux`, `npm test -- -t 'keep-alive'`) it is one
 * Jest run of what matches, as `npx jest` would be; with options only (`npm test -- --silent`; give an option its value
 * as `--opt=value`) both phases get them. Exits non-zero if either phase failed (the second runs even when the first
 * failed); SIGINT and SIGTERM go to the running Jest.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

const jest = createRequire(import.meta.url).resolve('jest/bin/jest');
const args = process.argv.slice(2);
const selects = args.some((arg) => !arg.startsWith('-'));

/** Runs Jest with `phase` (read by jest.config.js; undefined: every suite); resolves with its exit status. */
function run(phase, extra = []) {
  const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --experimental-vm-modules`.trim() };
  if (phase === undefined) delete env.SMUX_TEST_PHASE;
  else env.SMUX_TEST_PHASE = phase;
  const child = spawn(process.execPath, [jest, ...args, ...extra], { stdio: 'inherit', env });
  const forward = (signal) => child.kill(signal);
  process.on('SIGINT', forward).on('SIGTERM', forward);
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward).off('SIGTERM', forward);
      if (signal !== null) {
        process.kill(process.pid, signal); // end as Jest did
        process.exit(1); // if that signal is ignored here
      }
      resolve(code ?? 1);
    });
  });
}

if (selects) process.exit(await run(undefined));
const main = await run('main');
console.log('\nnpm test: the attacks, one at a time with nothing else running (scripts/test.mjs says why)\n');
const attacks = await run('attacks', ['--passWithNoTests']); // an option that filters may leave no attack
process.exit(main !== 0 ? main : attacks);
