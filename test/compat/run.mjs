/**
 * `npm run test:compat`: installs the packed package next to Nest 11 and Nest 12 in temporary folders and
 * runs the same app as CommonJS (require) and as ESM, then type-checks an import under `node10` resolution.
 * Needs the npm registry (CI has it). Usage: node test/compat/run.mjs [11|12 ...]
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const majors = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['11', '12'];
const npm = (args, cwd) => execFileSync('npm', args, { cwd, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });

execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
const packDir = mkdtempSync(join(tmpdir(), 'nestjs-smux-pack-'));
const tarball = join(packDir, npm(['pack', '--silent', '--pack-destination', packDir], root).trim().split('\n').at(-1));

for (const major of majors) {
  const dir = mkdtempSync(join(tmpdir(), `nestjs-smux-nest${major}-`));
  try {
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `compat-nest${major}`, private: true }));
    npm(
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
        tarball,
        `@nestjs/common@^${major}`,
        `@nestjs/core@^${major}`,
        `@nestjs/microservices@^${major}`,
        'rxjs@^7',
        'reflect-metadata@^0.2',
      ],
      dir,
    );
    for (const file of ['app.cjs', 'app.mjs', 'scenario.cjs', 'types-node10.ts']) cpSync(join(here, file), join(dir, file));
    execFileSync(process.execPath, ['app.cjs'], { cwd: dir, stdio: 'inherit', timeout: 60_000 });
    execFileSync(process.execPath, ['app.mjs'], { cwd: dir, stdio: 'inherit', timeout: 60_000 });
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const tsArgs = [
      '--noEmit',
      '--strict',
      '--moduleResolution',
      'node10',
      '--module',
      'commonjs',
      '--ignoreDeprecations',
      '6.0',
      '--skipLibCheck',
      '--target',
      'es2022',
      '--types',
      'node',
      '--typeRoots',
      join(root, 'node_modules', '@types'),
      'types-node10.ts',
    ];
    execFileSync(process.execPath, [tsc, ...tsArgs], { cwd: dir, stdio: 'inherit' });
    console.log(`ok: types resolve under node10 resolution (Nest ${major})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
rmSync(packDir, { recursive: true, force: true });
