/**
 * The well-behaved client that measures itself during an attack, in a child process of its own: the attacker's
 * CPU use in the test process must not show up as this client's gaps (node --import ./ts-register.mjs client.ts
 * <port>). It keeps CONCURRENCY calls of `ping` in flight on one ClientSmux from the start; `window-start` and
 * `window-end` bracket a measurement. `new-clients` also starts (or stops) a fresh ClientSmux every so often that
 * connects, makes one call and closes — what a client arriving during the attack sees.
 */
import 'reflect-metadata';
import { performance } from 'node:perf_hooks';
import { Logger } from '@nestjs/common';
import { firstValueFrom } from 'rxjs';
import { ClientSmux } from '../../../../lib/index.js';
import { type ClientWindow, countingLogger, cpuMicros, serveCommands } from './ipc.js';

const CONCURRENCY = 4;
const port = Number(process.argv[2]);
const log = countingLogger();
Logger.overrideLogger(log.logger);

const describe = (error: unknown): string => {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return `${typeof code === 'string' ? code : 'error'}: ${typeof message === 'string' ? message : JSON.stringify(error)}`;
};

interface Window {
  start: number;
  last: number;
  calls: number;
  errors: number;
  errorSamples: string[];
  maxGapMs: number;
  newClients: ClientWindow['newClients'];
}

const fresh = (): Window => ({
  start: performance.now(),
  last: performance.now(),
  calls: 0,
  errors: 0,
  errorSamples: [],
  maxGapMs: 0,
  newClients: { ok: 0, failed: 0, samples: [] },
});
let window = fresh();

function completed(): void {
  const now = performance.now();
  window.maxGapMs = Math.max(window.maxGapMs, now - window.last);
  window.last = now;
  window.calls++;
}

function failed(error: unknown): void {
  window.errors++;
  if (window.errorSamples.length < 5) window.errorSamples.push(describe(error));
}

const client = new ClientSmux({ host: '127.0.0.1', port });
await client.connect();
let n = 0;
async function caller(): Promise<void> {
  for (;;) {
    try {
      await firstValueFrom(client.send<number, number>('ping', n++));
      completed();
    } catch (error) {
      failed(error);
      await new Promise((resolve) => setTimeout(resolve, 20)); // no hot loop on a connection that fails fast
    }
  }
}
for (let i = 0; i < CONCURRENCY; i++) void caller();

let probing: { stop: boolean } | null = null;
async function newClients(everyMs: number, state: { stop: boolean }): Promise<void> {
  while (!state.stop) {
    const newcomer = new ClientSmux({ host: '127.0.0.1', port, connectTimeout: 5_000, timeout: 5_000 });
    const counts = window.newClients;
    try {
      await firstValueFrom(newcomer.send<number, number>('ping', 0));
      counts.ok++;
    } catch (error) {
      counts.failed++;
      if (counts.samples.length < 3) counts.samples.push(describe(error));
    } finally {
      await newcomer.close();
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

serveCommands(null, {
  'window-start': () => void (window = fresh()),
  'window-end': (): ClientWindow => {
    const now = performance.now();
    const ms = now - window.start;
    const { calls, errors, errorSamples, newClients: counts } = window;
    return {
      calls,
      errors,
      errorSamples,
      ms,
      perSecond: (calls * 1000) / ms,
      maxGapMs: Math.max(window.maxGapMs, now - window.last),
      newClients: counts,
    };
  },
  'new-clients': (everyMs: number | null) => {
    if (probing !== null) probing.stop = true;
    probing = null;
    if (everyMs !== null) void newClients(everyMs, (probing = { stop: false }));
  },
  logs: () => log.figures(),
  cpu: () => cpuMicros(),
});
