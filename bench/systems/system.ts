import type { CaseSpec, RunResult } from '../cases/spec.js';

/** One system under test, as the orchestrator sees it: a server and a client, each its own process. */
export interface System {
  /** Name in the tables (e.g. "nestjs-smux", "Nest TCP"). */
  readonly name: string;
  /** Why the system cannot run on this machine (then it is skipped), or null. */
  readonly unavailable: string | null;
  /** True when the system takes part in this case. */
  supports(spec: CaseSpec): boolean;
  /**
   * Runs one case and reports its figures with the server's peak RSS. Never rejects: a failure is a result
   * with `failed`; after a stall or a failure the system's processes are restarted before the next run.
   */
  run(spec: CaseSpec): Promise<RunResult>;
  /** Stops its processes. Idempotent. */
  stop(): Promise<void>;
}
