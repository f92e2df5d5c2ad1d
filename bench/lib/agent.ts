import { runCase } from '../cases/index.js';
import type { CaseSpec, Driver } from '../cases/spec.js';
import { serveCommands } from './process.js';

/**
 * The client side of a system, as a long-lived process (`node <system>.js client <port>`): it prints `READY`,
 * then runs each `RUN <spec json>` line on a fresh driver (a new client and connection, closed afterwards) and
 * prints the figures as a RESULT line. One process for all runs keeps Node's start-up and JIT out of the
 * figures; every run still warms up first.
 */
export function runAgent(create: (port: number) => Driver): void {
  const port = Number(process.argv[3]);
  if (!Number.isInteger(port) || port <= 0) throw new Error(`usage: ${process.argv[1]} client <port>`);
  serveCommands(async (line) => {
    if (!line.startsWith('RUN ')) throw new Error(`unknown command: ${line}`);
    const spec = JSON.parse(line.slice(4)) as CaseSpec;
    const driver = create(port);
    try {
      await driver.connect();
      return await runCase(driver, spec);
    } finally {
      await within(driver.close(), 3_000); // after a stall the close may hang: the orchestrator restarts us anyway
    }
  });
  process.stdout.write('READY\n');
}

/** Resolves when `promise` settles or after `ms`, whichever is first; never rejects. */
export function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.then(
      () => undefined,
      () => undefined,
    ),
    new Promise<void>((r) => (timer = setTimeout(r, ms))),
  ]).finally(() => clearTimeout(timer));
}
