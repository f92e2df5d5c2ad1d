/**
 * `npm run test:compat`: the package as its users get it. Needs the npm registry (CI has it). Every check prints
 * `ok: ...`; a failing one prints the command and its output, the run goes on and exits 1 at the end.
 *
 *   runtime  The packed tarball installed next to Nest 11 and next to Nest 12 (one temporary project each): a
 *            CommonJS app (app.cjs, require) and an ES module app (app.mjs, import) run scenario.cjs, exit 0.
 *   exports  Every name the package exports (both entry points, read from both builds' declarations with the
 *            TypeScript API) is imported by name in types.ts, and both builds export the same names at run time.
 *   types    types.ts compiled with `strict` and `skipLibCheck: false` (our .d.ts files and Nest's are checked
 *            too) by several TypeScript versions side by side (npm aliases) and module settings, against Nest 11
 *            and Nest 12. The compiler's file list must show our CommonJS declarations (dist/cjs) for a CommonJS
 *            consumer and our ESM ones (dist/esm) for an ESM consumer, never both.
 *   jest     A project made the `nest new` way (Nest 11, CommonJS, ts-jest, the unchanged "jest" block that
 *            `nest new` writes): `npx jest` runs nest-new/app.spec.ts, a microservice on ServerSmux called
 *            through ClientsModule. Nest 12 is ESM-only: it cannot run under Jest's CommonJS mode on Node 20.
 *   cli      nest-cli.json at the repository's root: `npx nest build` compiles the sample, `npx nest start` runs
 *            it and it exits 0.
 *
 * Usage: node test/compat/run.mjs [runtime|exports|types|jest|cli ...] [11|12 ...] [--keep]
 * (no check named: all of them; no major: both; --keep leaves the temporary projects in place and names them).
 */
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const started = Date.now();

const CHECKS = ['runtime', 'exports', 'types', 'jest', 'cli'];
const argv = process.argv.slice(2);
const keep = argv.includes('--keep');
const checks = argv.filter((a) => CHECKS.includes(a)).length > 0 ? argv.filter((a) => CHECKS.includes(a)) : CHECKS;
const majors = argv.filter((a) => /^\d+$/.test(a)).length > 0 ? argv.filter((a) => /^\d+$/.test(a)) : ['11', '12'];
const unknown = argv.filter((a) => a !== '--keep' && !CHECKS.includes(a) && !/^\d+$/.test(a));
if (unknown.length > 0) {
  console.error(
    `unknown argument(s): ${unknown.join(' ')}\nusage: node test/compat/run.mjs [${CHECKS.join('|')} ...] [11|12 ...] [--keep]`,
  );
  process.exit(2);
}

/**
 * TypeScript versions, installed side by side in each temporary project as npm aliases (TypeScript 7 has no
 * JavaScript compiler API and no tsc in the `typescript` package: not here).
 * - 4.8.2: the oldest TypeScript a Nest 11 app compiles with, its own types checked (skipLibCheck false, module
 *   commonjs): @nestjs/schematics 11 declares `typescript >=4.8.2`, and with @types/node 20 (what a Node 20 app
 *   installs) 4.7.4 fails (`@types/node/stream/web.d.ts: error TS2502: 'ReadableByteStreamController' is
 *   referenced directly or indirectly in its own type annotation`). Nest 11's own .d.ts alone would go down to 4.6
 *   with an older @types/node 20.12, but they need its generic EventEmitter, which older @types/node lack.
 * - 5.9.3: the newest 5.x.  - 6.0.3: the newest (what @nestjs/schematics 12 requires, `>=6.0.0`).
 */
const TYPESCRIPTS = ['4.8.2', '5.9.3', '6.0.3'].map((version) => {
  const [major, minor] = version.split('.').map(Number);
  return { version, alias: `ts${major}${minor}`, n: major * 100 + minor };
});

/**
 * Module settings: each compiles types.ts in a folder whose package.json says "type": pkg, and must read our
 * declarations from dist/<build>. `since`: the first TypeScript (major*100+minor) that has the setting.
 */
const SETTINGS = [
  { name: 'commonjs (node10)', pkg: 'commonjs', build: 'cjs', module: 'commonjs', resolution: 'node10' },
  { name: 'node16 from CJS', pkg: 'commonjs', build: 'cjs', module: 'node16', resolution: 'node16' },
  { name: 'node16 from ESM', pkg: 'module', build: 'esm', module: 'node16', resolution: 'node16' },
  { name: 'nodenext from CJS', pkg: 'commonjs', build: 'cjs', module: 'nodenext', resolution: 'nodenext' },
  { name: 'nodenext from ESM', pkg: 'module', build: 'esm', module: 'nodenext', resolution: 'nodenext' },
  { name: 'bundler (esnext)', pkg: 'module', build: 'esm', module: 'esnext', resolution: 'bundler', since: 500 },
  { name: 'bundler (preserve)', pkg: 'module', build: 'esm', module: 'preserve', resolution: 'bundler', since: 504 },
];

/**
 * Combinations that cannot work because of Nest itself, not of this package: Nest 12's packages are ES modules
 * only, and a CommonJS file cannot import them under module node16 (nor under nodenext before TypeScript 5.8,
 * which added require() of ESM there). tsc says, in types.ts and in Nest's own imports alike:
 *   error TS1479: The current file is a CommonJS module whose imports will produce 'require' calls; however, the
 *   referenced file is an ECMAScript module and cannot be imported with 'require'. Consider writing a dynamic
 *   'import("@nestjs/common")' call instead.
 * (module commonjs with node10 resolution does compile: it does not look at module formats, and Node ^20.19
 * loads ESM-only Nest 12 through require(esm), which the runtime check proves.)
 */
function nestConstraint(major, ts, setting, dir) {
  if (ts.n < 500 && nestUsesTypeStar(dir))
    return `Nest ${installedVersion(dir, '@nestjs/common')}'s own declarations use \`export type *\` (TypeScript 5.0 syntax): TypeScript ${ts.version} cannot read them (TS1383)`;
  if (major !== '12' || setting.pkg !== 'commonjs') return null;
  if (setting.module === 'node16') return 'Nest 12 is ESM-only: module node16 cannot require() it (TS1479)';
  if (setting.module === 'nodenext' && ts.n < 508)
    return `Nest 12 is ESM-only: TypeScript ${ts.version} cannot require() ESM under nodenext (TS1479)`;
  return null;
}

/**
 * Whether the installed Nest's declarations use `export type * from` (TypeScript 5.0 syntax; @nestjs/common 12.6
 * does, in e.g. serializer/index.d.ts): TypeScript 4.x then fails on Nest's own files (TS1383), whatever ours say.
 */
const typeStar = new Map();
function nestUsesTypeStar(dir) {
  if (!typeStar.has(dir)) {
    const common = join(dir, 'node_modules', '@nestjs', 'common');
    const files = ['serializer/index.d.ts', 'module-utils/index.d.ts', 'interfaces/index.d.ts', 'index.d.ts'];
    typeStar.set(
      dir,
      files.some((f) => existsSync(join(common, f)) && /^export type \*/m.test(readFileSync(join(common, f), 'utf8'))),
    );
  }
  return typeStar.get(dir);
}

const TIMEOUT = { install: 600_000, app: 60_000, tsc: 240_000, jest: 240_000, nestBuild: 240_000, nestStart: 120_000 };
const failures = [];
const temps = [];
const running = new Set(); // process groups of the commands still running
process.on('exit', () => {
  for (const pid of running) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (keep) return;
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));

/**
 * Runs a command in its own process group, with a timeout that kills the whole group. Resolves with
 * { code, output } (stdout and stderr interleaved); never rejects.
 */
function exec(cmd, args, { cwd, timeout, env }) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    if (child.pid) running.add(child.pid);
    let output = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeout);
    child.on('error', (error) => {
      clearTimeout(timer);
      running.delete(child.pid);
      resolve({ code: -1, output: `${output}\n${error.stack}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child.pid);
      if (timedOut) output += `\n[timed out after ${timeout / 1000} s: process group killed]`;
      resolve({ code: timedOut ? -1 : (code ?? (signal ? -1 : 0)), output });
    });
  });
}

const shown = (cmd, args, cwd) => `$ (cd ${cwd} && ${[cmd, ...args].map((a) => (/[\s'"$]/.test(a) ? `'${a}'` : a)).join(' ')})`;

function fail(label, detail) {
  failures.push(label);
  console.log(`FAIL: ${label}\n${detail.trimEnd()}\n`);
}

/** Runs a command as a check: `ok: label` on exit 0 (and `verify(output)` returning nothing), else FAIL with the output. */
async function check(label, cmd, args, { cwd, timeout, env, verify, filter = (o) => o }) {
  const t0 = Date.now();
  const { code, output } = await exec(cmd, args, { cwd, timeout, env });
  const problem = [code !== 0 ? `exit code ${code}` : undefined, verify?.(output)].filter(Boolean).join('\n');
  if (problem) {
    const lines = filter(output).trimEnd().split('\n');
    const text = lines.length > 300 ? [...lines.slice(0, 300), `[... ${lines.length - 300} more lines]`].join('\n') : lines.join('\n');
    fail(label, `${shown(cmd, args, cwd)}\n${problem}\n${text}`);
    return false;
  }
  console.log(`ok: ${label} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  return true;
}

async function pool(tasks, size) {
  const queue = [...tasks];
  await Promise.all(
    Array.from({ length: Math.min(size, queue.length) }, async () => {
      while (queue.length > 0) await queue.shift()();
    }),
  );
}

const npmArgs = ['--no-audit', '--no-fund', '--loglevel=error', '--prefer-offline'];
const node = process.execPath;

// ---------------------------------------------------------------------------------------------------------
// The package: built and packed once.
const needsProjects = checks.some((c) => ['runtime', 'types', 'jest'].includes(c));
const build = await exec('npm', ['run', 'build'], { cwd: root, timeout: 300_000 });
if (build.code !== 0) {
  fail('npm run build', build.output);
  process.exit(1);
}
let tarball;
if (needsProjects) {
  const packDir = mkdtempSync(join(tmpdir(), 'nestjs-smux-pack-'));
  temps.push(packDir);
  const pack = await exec('npm', ['pack', '--silent', '--pack-destination', packDir], { cwd: root, timeout: 120_000 });
  if (pack.code !== 0) {
    fail('npm pack', pack.output);
    process.exit(1);
  }
  tarball = join(
    packDir,
    pack.output
      .trim()
      .split('\n')
      .findLast((l) => l.endsWith('.tgz')) ?? 'no tarball',
  );
  console.log(`ok: built and packed ${relative(packDir, tarball)}`);
}

// ---------------------------------------------------------------------------------------------------------
// One temporary project per Nest major, installed in parallel.
const projects = new Map();
if (needsProjects) {
  await Promise.all(
    majors.map(async (major) => {
      const dir = mkdtempSync(join(tmpdir(), `nestjs-smux-nest${major}-`));
      temps.push(dir);
      // No "type": CommonJS, as `nest new` makes it (the type tests set their own type in subfolders).
      writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name: `compat-nest${major}`, private: true }, null, 2)}\n`);
      const deps = [
        tarball,
        `@nestjs/common@^${major}`,
        `@nestjs/core@^${major}`,
        `@nestjs/microservices@^${major}`,
        'rxjs@^7',
        'reflect-metadata@^0.2',
        '@types/node@^20',
        ...TYPESCRIPTS.map((ts) => `${ts.alias}@npm:typescript@${ts.version}`),
      ];
      if (major === '11' && checks.includes('jest')) {
        // What `nest new` (@nestjs/schematics 11) puts in devDependencies for tests; jest 29 (the 11.0 template's)
        // beside it under an alias.
        deps.push('@nestjs/testing@^11', 'jest@^30', 'jest29@npm:jest@^29.7.0', '@types/jest@^30', 'ts-jest@~29.4.15', 'typescript@~5.9.3');
      }
      const ok = await check(`npm install (Nest ${major} project)`, 'npm', ['install', ...npmArgs, ...deps], {
        cwd: dir,
        timeout: TIMEOUT.install,
      });
      if (ok) projects.set(major, dir);
      if (keep) console.log(`   kept: ${dir}`);
    }),
  );
}

function installedVersion(dir, name) {
  return JSON.parse(readFileSync(join(dir, 'node_modules', ...name.split('/'), 'package.json'), 'utf8')).version;
}

// ---------------------------------------------------------------------------------------------------------
// runtime
if (checks.includes('runtime')) {
  for (const [major, dir] of projects) {
    for (const file of ['app.cjs', 'app.mjs', 'scenario.cjs']) cpSync(join(here, file), join(dir, file));
    for (const app of ['app.cjs', 'app.mjs']) {
      await check(
        `runtime: ${app} on Nest ${major} (@nestjs/microservices ${installedVersion(dir, '@nestjs/microservices')})`,
        node,
        [app],
        {
          cwd: dir,
          timeout: TIMEOUT.app,
          verify: (o) => (o.includes(`ok: ${app === 'app.cjs' ? 'cjs' : 'esm'} app`) ? undefined : 'the scenario did not report ok'),
        },
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// exports: every exported name is imported by types.ts; both builds export the same names.
if (checks.includes('exports')) {
  const ts = createRequire(join(root, 'package.json'))('typescript');
  const declared = (file) => {
    const program = ts.createProgram([file], {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      noEmit: true,
      skipLibCheck: true,
      types: [],
    });
    const checker = program.getTypeChecker();
    const symbol = checker.getSymbolAtLocation(program.getSourceFile(file));
    return symbol
      ? checker
          .getExportsOfModule(symbol)
          .map((s) => s.name)
          .sort()
      : [];
  };
  const typeTest = ts.createSourceFile('types.ts', readFileSync(join(here, 'types.ts'), 'utf8'), ts.ScriptTarget.Latest);
  const imported = new Map();
  for (const statement of typeTest.statements) {
    if (!ts.isImportDeclaration(statement)) continue;
    const from = statement.moduleSpecifier.text;
    const bindings = statement.importClause?.namedBindings;
    const names = bindings && ts.isNamedImports(bindings) ? bindings.elements.map((e) => (e.propertyName ?? e.name).text) : [];
    imported.set(from, [...(imported.get(from) ?? []), ...names]);
  }
  for (const [specifier, sub] of [
    ['nestjs-smux', 'index'],
    ['nestjs-smux/smux', 'smux/index'],
  ]) {
    const esm = declared(join(root, 'dist', 'esm', `${sub}.d.ts`));
    const cjs = declared(join(root, 'dist', 'cjs', `${sub}.d.ts`));
    const problems = [];
    if (esm.length === 0) problems.push(`no exports found in dist/esm/${sub}.d.ts`);
    if (esm.join() !== cjs.join()) problems.push(`dist/esm/${sub}.d.ts exports [${esm}]\ndist/cjs/${sub}.d.ts exports [${cjs}]`);
    const missing = esm.filter((name) => !(imported.get(specifier) ?? []).includes(name));
    if (missing.length > 0) problems.push(`types.ts does not import from '${specifier}': ${missing.join(', ')}`);
    const runtimeEsm = Object.keys(await import(pathToFileURL(join(root, 'dist', 'esm', `${sub}.js`)).href)).sort();
    const runtimeCjs = Object.keys(createRequire(import.meta.url)(join(root, 'dist', 'cjs', `${sub}.js`))).sort();
    if (runtimeEsm.join() !== runtimeCjs.join())
      problems.push(`run time: ESM build exports [${runtimeEsm}]\nCJS build exports [${runtimeCjs}]`);
    const notDeclared = runtimeEsm.filter((name) => !esm.includes(name));
    if (notDeclared.length > 0) problems.push(`exported at run time but not declared: ${notDeclared.join(', ')}`);
    if (problems.length > 0) fail(`exports of '${specifier}'`, problems.join('\n'));
    else console.log(`ok: exports of '${specifier}': ${esm.length} names, the same in both builds, all imported by types.ts`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// types
if (checks.includes('types')) {
  const tasks = [];
  for (const [major, dir] of projects) {
    for (const pkg of ['commonjs', 'module']) {
      const folder = join(dir, `types-${pkg}`);
      mkdirSync(folder, { recursive: true });
      writeFileSync(join(folder, 'package.json'), `${JSON.stringify({ type: pkg }, null, 2)}\n`);
      cpSync(join(here, 'types.ts'), join(folder, 'types.ts'));
    }
    for (const ts of TYPESCRIPTS) {
      for (const setting of SETTINGS) {
        const label = `types: Nest ${major}, TypeScript ${ts.version}, ${setting.name}`;
        if (setting.since && ts.n < setting.since) continue;
        const constraint = nestConstraint(major, ts, setting, dir);
        if (constraint) {
          console.log(`skip: ${label}: ${constraint}`);
          continue;
        }
        const folder = join(dir, `types-${setting.pkg}`);
        const config = `tsconfig.${ts.alias}.${setting.module}.json`;
        const compilerOptions = {
          module: setting.module,
          // TypeScript 4.x knows node10 resolution as "node"; TypeScript 6 deprecates it (and so wants ignoreDeprecations).
          moduleResolution: setting.resolution === 'node10' && ts.n < 500 ? 'node' : setting.resolution,
          ...(setting.resolution === 'node10' && ts.n >= 600 ? { ignoreDeprecations: '6.0' } : {}),
          target: 'es2022',
          strict: true,
          skipLibCheck: false,
          experimentalDecorators: true,
          emitDecoratorMetadata: true,
          types: ['node'],
          noEmit: true,
        };
        writeFileSync(join(folder, config), `${JSON.stringify({ compilerOptions, files: ['types.ts'] }, null, 2)}\n`);
        const tsc = join(dir, 'node_modules', ts.alias, 'bin', 'tsc');
        tasks.push(() =>
          check(label, node, [tsc, '-p', config, '--listFiles'], {
            cwd: folder,
            timeout: TIMEOUT.tsc,
            // --listFiles prints every file read (absolute paths); which of our builds was read is the check.
            verify: (output) => {
              const ours = output.split('\n').filter((l) => l.includes('/node_modules/nestjs-smux/dist/'));
              const wrong = ours.filter((l) => !l.includes(`/dist/${setting.build}/`)); // tsc prints / on every OS
              if (ours.length === 0) return 'tsc read none of our declarations';
              if (wrong.length > 0) {
                const consumer = setting.pkg === 'commonjs' ? 'CommonJS' : 'ESM';
                return `${consumer === 'ESM' ? 'an' : 'a'} ${consumer} consumer must read dist/${setting.build} only; tsc also read:\n${wrong.join('\n')}`;
              }
              return undefined;
            },
            filter: (output) =>
              output
                .split('\n')
                .filter((l) => !/^\/.*\.(d\.)?[cm]?ts$/.test(l))
                .join('\n'),
          }),
        );
      }
    }
  }
  await pool(tasks, Math.max(2, availableParallelism()));
}

// ---------------------------------------------------------------------------------------------------------
// jest: a `nest new` project (Nest 11). Its package.json "jest" block, as @nestjs/schematics 11 writes it.
const NEST_NEW_JEST = {
  moduleFileExtensions: ['js', 'json', 'ts'],
  rootDir: 'src',
  testRegex: '.*\\.spec\\.ts$',
  transform: { '^.+\\.(t|j)s$': 'ts-jest' },
  collectCoverageFrom: ['**/*.(t|j)s'],
  coverageDirectory: '../coverage',
  testEnvironment: 'node',
};
// Its tsconfig.json: the classic one (module commonjs, loose null checks; ts-jest type-checks every spec with it)
// and the one @nestjs/schematics 11.0.9+ writes (module nodenext in a CommonJS package, isolatedModules, so
// ts-jest only transpiles).
const NEST_NEW_TSCONFIGS = {
  'module commonjs': {
    module: 'commonjs',
    declaration: true,
    removeComments: true,
    emitDecoratorMetadata: true,
    experimentalDecorators: true,
    allowSyntheticDefaultImports: true,
    target: 'ES2021',
    sourceMap: true,
    outDir: './dist',
    baseUrl: './',
    incremental: true,
    skipLibCheck: true,
    strictNullChecks: false,
    noImplicitAny: false,
    strictBindCallApply: false,
    forceConsistentCasingInFileNames: false,
    noFallthroughCasesInSwitch: false,
  },
  'module nodenext': {
    module: 'nodenext',
    moduleResolution: 'nodenext',
    resolvePackageJsonExports: true,
    esModuleInterop: true,
    isolatedModules: true,
    declaration: true,
    removeComments: true,
    emitDecoratorMetadata: true,
    experimentalDecorators: true,
    allowSyntheticDefaultImports: true,
    target: 'ES2023',
    sourceMap: true,
    outDir: './dist',
    baseUrl: './',
    incremental: true,
    skipLibCheck: true,
    strictNullChecks: true,
    forceConsistentCasingInFileNames: true,
    noImplicitAny: false,
    strictBindCallApply: false,
    noFallthroughCasesInSwitch: false,
  },
};
if (checks.includes('jest')) {
  const dir = projects.get('11');
  if (!majors.includes('11')) console.log('skip: jest: needs the Nest 11 project (Nest 12 is ESM-only, no Jest CommonJS mode)');
  else if (dir) {
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ ...pkg, scripts: { test: 'jest' }, jest: NEST_NEW_JEST }, null, 2)}\n`);
    mkdirSync(join(dir, 'src'), { recursive: true });
    cpSync(join(here, 'nest-new', 'app.spec.ts'), join(dir, 'src', 'app.spec.ts'));
    const runs = [
      ['module commonjs', 'npx', ['--no', 'jest'], `jest ${installedVersion(dir, 'jest')}`],
      ['module nodenext', 'npx', ['--no', 'jest'], `jest ${installedVersion(dir, 'jest')}`],
      ['module commonjs', node, [join(dir, 'node_modules', 'jest29', 'bin', 'jest.js')], `jest ${installedVersion(dir, 'jest29')}`],
    ];
    for (const [i, [tsconfig, cmd, args, jest]] of runs.entries()) {
      writeFileSync(join(dir, 'tsconfig.json'), `${JSON.stringify({ compilerOptions: NEST_NEW_TSCONFIGS[tsconfig] }, null, 2)}\n`);
      // A fresh Jest cache for each run (Jest keeps it under the temporary directory), so nothing is reused.
      const cache = join(dir, `.tmp-${i}`);
      mkdirSync(cache);
      await check(
        `jest: nest new project, Nest ${installedVersion(dir, '@nestjs/microservices')}, ${jest}, ts-jest ${installedVersion(dir, 'ts-jest')}, tsconfig ${tsconfig}`,
        cmd,
        args,
        {
          cwd: dir,
          timeout: TIMEOUT.jest,
          env: { TMPDIR: cache, CI: 'true' },
          verify: (o) => (/Tests:\s+2 passed, 2 total/.test(o) ? undefined : 'expected "Tests: 2 passed, 2 total"'),
        },
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// cli: nest-cli.json runs the sample.
if (checks.includes('cli')) {
  const entry = join(root, 'build', 'sample', 'main.js');
  rmSync(entry, { force: true });
  const built = await check('cli: npx nest build (nest-cli.json: sample/tsconfig.json)', 'npx', ['--no', 'nest', 'build'], {
    cwd: root,
    timeout: TIMEOUT.nestBuild,
    verify: () => (existsSync(entry) ? undefined : `no ${relative(root, entry)} after the build`),
  });
  if (built) {
    await check('cli: npx nest start (runs build/sample/main.js, exits 0)', 'npx', ['--no', 'nest', 'start'], {
      cwd: root,
      timeout: TIMEOUT.nestStart,
      verify: (o) => (o.includes('two calls at once') ? undefined : 'the sample did not get to its last call'),
    });
  }
}

const seconds = ((Date.now() - started) / 1000).toFixed(0);
if (failures.length > 0) {
  console.log(`test:compat: ${failures.length} check(s) failed in ${seconds} s:\n${failures.map((f) => `  - ${f}`).join('\n')}`);
  process.exit(1);
}
console.log(`test:compat: all checks passed in ${seconds} s`);
