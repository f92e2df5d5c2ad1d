import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe } from '../cases/closed-loop.js';
import type { CaseSpec, RunResult } from '../cases/spec.js';
import { type Peer, startAgent, startServer } from '../lib/process.js';
import type { System } from './system.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Longest a single run may take before its processes are killed (a stall is caught much sooner, in the client). */
const RUN_TIMEOUT_MS = 180_000;

/**
 * A system whose server and client are Node processes of one script (`<script> server`, `<script> client <port>`).
 * Both live across runs; after a stall or a failure both are killed and started afresh.
 */
export class NodeSystem implements System {
  readonly unavailable = null;
  #server: Peer | null = null;
  #agent: Peer | null = null;

  /**
   * @param name - name in the tables
   * @param script - file name under systems/ (compiled)
   * @param kinds - the cases it takes part in
   * @param nodeArgs - extra Node flags for both processes, e.g. `--cpu-prof` (given `{role}` in place of the role)
   */
  constructor(
    readonly name: string,
    readonly script: string,
    readonly kinds: ReadonlyArray<CaseSpec['kind']>,
    readonly nodeArgs: string[] = [],
  ) {}

  supports(spec: CaseSpec): boolean {
    return this.kinds.includes(spec.kind);
  }

  async run(spec: CaseSpec): Promise<RunResult> {
    try {
      const { server, agent } = await this.#start();
      await server.request('PEAK', 10_000); // starts the peak over
      const result = (await agent.request(`RUN ${JSON.stringify(spec)}`, RUN_TIMEOUT_MS)) as RunResult & { error?: string };
      if (typeof result.error === 'string') throw new Error(result.error);
      const { peakRss } = await server.request('PEAK', 10_000);
      if (result.stalled) await this.stop(); // the rule: a stalled server is restarted
      return { ...result, peakRss: peakRss as number };
    } catch (error) {
      await this.stop();
      return { stalled: false, failed: describe(error) };
    }
  }

  async #start(): Promise<{ server: Peer; agent: Peer }> {
    const script = join(here, this.script);
    const flags = (role: string): string[] => this.nodeArgs.map((a) => a.replaceAll('{role}', role));
    this.#server ??= await startServer(process.execPath, [...flags('server'), '--expose-gc', script, 'server']);
    this.#agent ??= await startAgent(process.execPath, [...flags('client'), script, 'client', String(this.#server.port)]);
    return { server: this.#server, agent: this.#agent };
  }

  async stop(): Promise<void> {
    const peers = [this.#agent, this.#server];
    this.#agent = null;
    this.#server = null;
    await Promise.all(peers.filter((p) => p !== null).map((p) => p.stop()));
  }
}
