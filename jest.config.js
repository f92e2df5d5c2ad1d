// Jest 30 in ESM mode (npm test sets NODE_OPTIONS=--experimental-vm-modules): Nest 12 is ESM-only and
// Jest's CommonJS mode cannot load it on Node 20 (../shared/NEST-NOTES.md §1). @swc/jest strips types
// and keeps decorator metadata, which Nest's dependency injection needs.
//
// `npm test` (scripts/test.mjs) runs two phases: SMUX_TEST_PHASE=main is every suite but the attacks, on two workers;
// SMUX_TEST_PHASE=attacks is test/nest/attacks/ on one. Without it (`npx jest …`) every suite is a candidate.
const phase = process.env.SMUX_TEST_PHASE;
const attacks = '<rootDir>/test/nest/attacks/';

/** @type {import('jest').Config} */
export default {
  testEnvironment: 'node',
  roots: [phase === 'attacks' ? attacks : '<rootDir>/test'],
  testMatch: ['**/*.spec.ts'],
  // test/compat holds projects that test:compat runs in their own installs (a `nest new` app's spec among them).
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/compat/', ...(phase === 'main' ? [attacks] : [])],
  setupFilesAfterEnv: ['<rootDir>/test/setup-logger.ts'],
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': [
      '@swc/jest',
      {
        jsc: {
          parser: { syntax: 'typescript', decorators: true },
          transform: { legacyDecorator: true, decoratorMetadata: true },
          target: 'es2022',
        },
        module: { type: 'es6' },
      },
    ],
  },
  testTimeout: 30000,
  // The interop and end-to-end suites start real servers and Go processes; two workers match the machine. An attack
  // measures a client's share of the CPU, so the attacks' phase runs alone on one.
  maxWorkers: phase === 'attacks' ? 1 : 2,
  // A worker that ran half the suites holds 550 – 800 MiB of their module graphs when Jest ends it: it reaches 'exit'
  // 2 ms after Jest's END, but Node's teardown of that heap took longer than Jest's 500 ms default, and Jest printed
  // "A worker process has failed to exit gracefully" — with no handle left open (docs/NOTES.md).
  workerGracefulExitTimeout: 5_000,
};
