/**
 * `npm run check:readme`: the README's code must compile as a user would compile it. Every ```ts block whose
 * first line is `// file: <name>.ts` is written to build/readme/<name>.ts and the set is type-checked strictly
 * (skipLibCheck false) against the built package: `import … from 'nestjs-smux'` resolves through the package's
 * own `exports` (a package may import itself by name), so the shipped declarations are what is checked.
 * Blocks without that first line are fragments or shell commands and are not compiled.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build', 'readme');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

const files = new Map();
for (const match of readme.matchAll(/```ts\n([\s\S]*?)```/g)) {
  const body = match[1];
  const name = /^\/\/ file: (\S+\.ts)\n/.exec(body)?.[1];
  if (name === undefined) continue;
  if (files.has(name)) throw new Error(`README: two blocks claim the file ${name}`);
  files.set(name, body);
}
if (files.size === 0) throw new Error('README: no ```ts block starts with "// file: <name>.ts"');

execFileSync(process.execPath, [join(root, 'scripts', 'build.mjs')], { cwd: root, stdio: 'inherit' });
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const [name, body] of files) writeFileSync(join(out, name), body);
writeFileSync(
  join(out, 'tsconfig.json'),
  JSON.stringify(
    {
      compilerOptions: {
        target: 'es2022',
        module: 'nodenext',
        moduleResolution: 'nodenext',
        strict: true,
        skipLibCheck: false,
        experimentalDecorators: true,
        emitDecoratorMetadata: true,
        noEmit: true,
        types: ['node'],
      },
      include: ['*.ts'],
    },
    null,
    2,
  ),
);
try {
  execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', out], { cwd: root, stdio: 'inherit' });
} catch {
  console.error(`\nThe README's code does not compile (files in ${out}, errors above).`);
  process.exit(1);
}
console.log(`ok: the README's ${files.size} files compile strictly against the built package (${[...files.keys()].join(', ')})`);
