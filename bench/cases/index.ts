import { runEcho } from './echo.js';
import { runEvents } from './events.js';
import { runHol } from './hol.js';
import { runMemory } from './memory.js';
import type { CaseSpec, Driver, RunResult } from './spec.js';
import { runUpload, runUploadHol } from './upload.js';

/** Runs one case on a connected driver (client agent side). */
export function runCase(driver: Driver, spec: CaseSpec): Promise<RunResult> {
  switch (spec.kind) {
    case 'echo':
      return runEcho(driver, spec);
    case 'events':
      return runEvents(driver, spec);
    case 'hol':
      return runHol(driver, spec);
    case 'memory':
      return runMemory(driver, spec);
    case 'upload':
      return runUpload(driver, spec);
    case 'upload-hol':
      return runUploadHol(driver, spec);
  }
}
