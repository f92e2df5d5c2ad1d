// A CommonJS Nest app that require()s the ESM package (Node ^20.19 / ^22.12 / >=24 load ESM from require).
// Plain JavaScript: decorators are applied as functions, so no compiler is involved.
require('reflect-metadata');
const { run } = require('./scenario.cjs');
run(require('nestjs-smux'), require('nestjs-smux/smux'), 'cjs').catch((error) => {
  console.error(error);
  process.exit(1);
});
