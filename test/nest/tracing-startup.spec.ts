/**
 * The first calls of a process are traced even when `@opentelemetry/api` is found late (a new-user trial: behind the
 * OpenTelemetry SDK's loader hooks an ESM app's lookup took 120 – 220 ms, longer than its start-up, and its first
 * calls had no spans). Only a process of its own shows it: in Jest's worker the lookup settled long ago. The child,
 * attacks/child/first-calls-traced.ts, makes its first call and byte stream at once and starts its server at once, while
 * slow-otel-lookup.mjs holds the lookup back for 400 ms.
 */
import { expect, test } from '@jest/globals';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const child = fileURLToPath(new URL('./attacks/child/first-calls-traced.ts', import.meta.url));
const register = new URL('./attacks/child/ts-register.mjs', import.meta.url).href;
const slowLookup = new URL('./attacks/child/slow-otel-lookup.mjs', import.meta.url).href;

function runChild(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // Jest's --experimental-vm-modules is not for the child
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', register, '--import', slowLookup, child, ...args],
      { env, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? null), stdout, stderr }),
    );
  });
}

test('a call and a byte stream held back for the lookup fail as queued calls do when the client closes meanwhile, and dial nothing', async () => {
  const { code, stdout, stderr } = await runChild('close');
  expect({ code, lines: stdout.trim().split('\n'), stderr }).toEqual({
    code: 0,
    lines: ['send: ERR_SMUX_SESSION_CLOSED the client was closed', 'openDuplex: ERR_SMUX_SESSION_CLOSED the client was closed'],
    stderr: '',
  });
}, 90_000);

test('a call and a byte stream made while @opentelemetry/api is still being found, and a server started then, are all traced', async () => {
  const { code, stdout, stderr } = await runChild();
  // SpanKind: SERVER 1, CLIENT 2. Before, neither: the call started, and the server listened, before the lookup.
  expect({ code, spans: stdout.trim().split('\n').sort(), stderr }).toEqual({
    code: 0,
    spans: ['bytes 1', 'bytes 2', 'first 1', 'first 2'],
    stderr: '',
  });
}, 90_000);
