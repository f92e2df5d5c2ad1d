/**
 * `npm run build`: the package's two builds from one source, so CommonJS projects (a `nest new` app with its
 * ts-jest setup) and ESM projects (Nest 12) each load their own format natively:
 *   dist/esm  ES modules (the package is "type": "module")
 *   dist/cjs  CommonJS, marked by dist/cjs/package.json {"type": "commonjs"}
 * Each has its declarations beside it. Module state that must be shared between the two when both load (the
 * SmuxError and SmuxRecord brands, the transport id) is keyed by Symbol.for, not held in module variables.
 */
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
rmSync(join(root, 'dist'), { recursive: true, force: true });
for (const project of ['tsconfig.build.json', 'tsconfig.build.cjs.json']) {
  execFileSync(process.execPath, [tsc, '-p', join(root, project)], { cwd: root, stdio: 'inherit' });
}
writeFileSync(join(root, 'dist', 'cjs', 'package.json'), `${JSON.stringify({ type: 'commonjs' }, null, 2)}\n`);
