// The same scenario from an ES module app.
import 'reflect-metadata';
import { createRequire } from 'node:module';
import * as smux from 'nestjs-smux';
import * as core from 'nestjs-smux/smux';

const { run } = createRequire(import.meta.url)('./scenario.cjs');
await run(smux, core, 'esm');
