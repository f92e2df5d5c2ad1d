/**
 * Type tests of `client.connections`, compiled by `tsc --noEmit -p .` (lint, CI) and never run.
 */
import type { ClientSmux } from '../../lib/index.js';

declare const client: ClientSmux;

// Found by a new-user trial: `lastError.code` needed a cast (the type said only `Error`), though the value is a
// SmuxError or Node's own error, whose code is a string.
const code: string | undefined = client.connections[0]?.lastError?.code;
if (client.connections[0]?.lastError?.code === 'ECONNREFUSED') void code;
// @ts-expect-error a code is a string, not a number
const numeric: number | undefined = client.connections[0]?.lastError?.code;
void numeric;
