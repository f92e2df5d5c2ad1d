// `node --import <this file> child.ts`: runs TypeScript from source through ts-hooks.mjs (see there).
import { register } from 'node:module';

register('./ts-hooks.mjs', import.meta.url);
