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

test('a call and a byte stream made while @opentelemetry/api is still being found, and a server started then, are all traced', async () => {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // Jest's --experimental-vm-modules is not for the child
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', register, '--import', slowLookup, child], { env, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? null), stdout, stderr }),
    );
  });
  // SpanKind: SERVER 1, CLIENT 2. Before, neither: the call started, and the server listened, before the lookup.
  expect({ code, spans: stdout.trim().split('\n').sort(), stderr }).toEqual({
    code: 0,
    spans: ['bytes 1', 'bytes 2', 'first 1', 'first 2'],
    stderr: '',
  });
}, 90_000);
