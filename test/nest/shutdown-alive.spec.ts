/**
 * `await app.close()` must resolve in a process with nothing else alive (found by a new-user trial): the timers that
 * bound a close are unref'd, and a connection held at `maxEventsPerConnection` is not read, so neither kept the event
 * loop alive — the process exited (status 0 under CommonJS, 13 for an unsettled top-level await in ESM) before
 * close() resolved, and the code after it never ran. Only a process of its own shows it: Jest's worker stays alive.
 * The child is attacks/child/close-stays-alive.ts.
 */
import { expect, test } from '@jest/globals';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const child = fileURLToPath(new URL('./attacks/child/close-stays-alive.ts', import.meta.url));
const register = new URL('./attacks/child/ts-register.mjs', import.meta.url).href;

test('a close waiting out closeTimeout keeps the process alive: the line after `await app.close()` is printed', async () => {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // Jest's --experimental-vm-modules is not for the child
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', register, child], { env, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? null), stdout, stderr }),
    );
  });
  expect({ code, lines: stdout.trim().split('\n'), stderr }).toEqual({ code: 0, lines: ['closing', 'closed'], stderr: '' });
}, 90_000);
