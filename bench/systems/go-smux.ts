import { goAvailability, type GoServer, runGo, startGoServer } from '../../test/interop/go-peer.js';
import type { CaseSpec, RunResult } from '../cases/spec.js';
import type { System } from './system.js';

/** Smux protocol version of the Go pair: v2, as nestjs-smux uses by default. */
const VERSION = '2';

/**
 * Go xtaci/smux (Debian's package) on both ends, through the interop peer: `peer serve` as the server and
 * `peer bench-rr -addr` as the client, which makes every call a new stream carrying 64 B each way (ECHO
 * command) — what nestjs-smux does per call, without Nest. Echo 64 B only (bench-rr's fixed payload); it
 * reports calls/s only (no latencies), and its server RSS is not sampled.
 */
export class GoSmuxSystem implements System {
  readonly name = 'Go smux';
  readonly unavailable: string | null;
  #server: GoServer | null = null;

  constructor() {
    const go = goAvailability();
    this.unavailable = go.ok ? null : go.reason;
  }

  supports(spec: CaseSpec): boolean {
    return this.unavailable === null && spec.kind === 'echo' && spec.size === 64;
  }

  async run(spec: CaseSpec): Promise<RunResult> {
    if (spec.kind !== 'echo') return { stalled: false, failed: 'Go smux runs echo 64 B only' };
    try {
      this.#server ??= await startGoServer(['-v', VERSION]);
      const args = [
        'bench-rr',
        '-v',
        VERSION,
        '-count',
        String(spec.count),
        '-concurrency',
        String(spec.inFlight),
        '-addr',
        `127.0.0.1:${this.#server.port}`,
      ];
      const run = await runGo(args, 120_000);
      const result = run.results.at(-1);
      if (run.code !== 0 || result === undefined || result.ok !== true)
        throw new Error(`bench-rr: ${JSON.stringify(result?.error ?? '')} ${run.stderr.slice(-500)}`);
      return { stalled: false, rate: result.rps as number, completed: spec.count };
    } catch (error) {
      await this.stop();
      return { stalled: false, failed: error instanceof Error ? error.message : String(error) };
    }
  }

  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    await server?.stop();
  }
}
