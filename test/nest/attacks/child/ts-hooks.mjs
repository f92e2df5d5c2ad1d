/**
 * Module hooks that let a plain `node` child run this repository's TypeScript from source, the way Jest does:
 * `.ts` files are compiled by @swc/core (a devDependency) with the options of jest.config.js (decorators and
 * their metadata, for Nest), and a relative `./x.js` import from a `.ts` file finds `./x.ts` (the tests'
 * moduleNameMapper). Registered by ts-register.mjs: `node --import ./ts-register.mjs child.ts`.
 */
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { fileURLToPath, URL } from 'node:url';
import swc from '@swc/core';

const options = {
  jsc: {
    parser: { syntax: 'typescript', decorators: true },
    transform: { legacyDecorator: true, decoratorMetadata: true },
    target: 'es2022',
  },
  module: { type: 'es6' },
  sourceMaps: 'inline',
};

export async function resolve(specifier, context, next) {
  const parent = context.parentURL;
  if (parent !== undefined && parent.endsWith('.ts') && /^\.{1,2}\/.*\.js$/.test(specifier)) {
    const ts = new URL(specifier.replace(/\.js$/, '.ts'), parent);
    if (!existsSync(new URL(specifier, parent)) && existsSync(ts)) return { url: ts.href, shortCircuit: true };
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const filename = fileURLToPath(url);
  const source = await readFile(filename, 'utf8');
  const { code } = swc.transformSync(source, { ...options, filename });
  return { format: 'module', source: code, shortCircuit: true };
}
