import { type CoreCase, coreCases, type CoreRatio, coreRatios, coreSettings } from '../core/cases.js';

/** The core cases `npm run bench` takes from `bench:core` (bench/core): bulk v1/v2 (and v2 at the Nest transport's defaults) vs raw and Go, stream per request vs Go. */
const PICKED = [
  'raw TCP bulk MB/s',
  'TS↔TS v1 bulk MB/s',
  'TS↔TS v2 bulk MB/s',
  'TS↔TS v2 bulk (Nest defaults) MB/s',
  'Go↔Go v2 bulk MB/s',
  'TS↔TS v2 stream per request/s',
  'Go↔Go v2 stream per request/s',
  'TS↔TS v1 stream per request/s',
  'Go↔Go v1 stream per request/s',
];

/** The picked core cases (Go ones left out when Go is unavailable) and the ratios between them. */
export function corePlan(quick: boolean, withGo: boolean): { cases: CoreCase[]; ratios: CoreRatio[] } {
  const cases = coreCases(coreSettings(quick)).filter(([name]) => PICKED.includes(name) && (withGo || !name.includes('Go')));
  const names = new Set(cases.map(([name]) => name));
  return { cases, ratios: coreRatios.filter(([, a, b]) => names.has(a) && names.has(b)) };
}
