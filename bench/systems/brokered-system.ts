import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe } from '../cases/closed-loop.js';
import type { CaseSpec, RunResult } from '../cases/spec.js';
import { type Peer, startAgent, startServer } from '../lib/process.js';
import { type Broker, type BrokerKind, brokerUnavailable, processCpuMs, startBroker } from './broker.js';
import type { System } from './system.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Longest a single run may take before its processes are killed (a stall is caught much sooner, in the client). */
const RUN_TIMEOUT_MS = 180_000;

/**
 * A Nest transport through a message broker (NATS, Redis): the broker (a program of its own, started here on a
 * free port), a Nest server process connected to it (`<script> server <broker port>`, which prints `LISTENING
 * <broker port>`) and a client agent connected to it (`<script> client <broker port>`). All three live across
 * runs; after a stall or a failure all three are stopped and started afresh. `stop()` stops the broker too.
 *
 * Each run also reports the CPU each process used during it (from /proc), in cores (CPU time ÷ the run's wall
 * time, its warm-up and connection included): `cpu: { broker, server, client }`.
 */
export class BrokeredSystem implements System {
  readonly unavailable: string | null;
  #broker: Broker | null = null;
  #server: Peer | null = null;
  #agent: Peer | null = null;

  /**
   * @param name - name in the tables
   * @param script - file name under systems/ (compiled)
   * @param broker - the broker it needs
   * @param kinds - the cases it takes part in
   * @param nodeArgs - extra Node flags for both Node processes, e.g. `--cpu-prof` (given `{role}` in place of the role)
   */
  constructor(
    readonly name: string,
    readonly script: string,
    readonly broker: BrokerKind,
    readonly kinds: ReadonlyArray<CaseSpec['kind']>,
    readonly nodeArgs: string[] = [],
  ) {
    this.unavailable = brokerUnavailable(broker);
  }

  supports(spec: CaseSpec): boolean {
    return this.unavailable === null && this.kinds.includes(spec.kind);
  }

  async run(spec: CaseSpec): Promise<RunResult> {
    try {
      const { broker, server, agent } = await this.#start();
      await server.request('PEAK', 10_000); // starts the peak over
      const pids = { broker: broker.pid, server: server.pid, client: agent.pid };
      const before = cpuOf(pids);
      const t0 = performance.now();
      const result = (await agent.request(`RUN ${JSON.stringify(spec)}`, RUN_TIMEOUT_MS)) as RunResult & { error?: string };
      const wallMs = performance.now() - t0;
      const cpu = cpuShares(before, cpuOf(pids), wallMs);
      if (typeof result.error === 'string') throw new Error(result.error);
      const { peakRss } = await server.request('PEAK', 10_000);
      // The rule: a stalled server is restarted (the broker too). A failed run restarts them as well: a
      // broker that dropped a client (Redis closes a subscriber whose output buffer passes its limit) leaves Nest's
      // client without a connection for good.
      if (result.stalled || result['failed'] !== undefined) await this.stop();
      return { ...result, peakRss: peakRss as number, ...(cpu === null ? {} : { cpu }) };
    } catch (error) {
      await this.stop();
      return { stalled: false, failed: describe(error) };
    }
  }

  async #start(): Promise<{ broker: Broker; server: Peer; agent: Peer }> {
    const script = join(here, this.script);
    const flags = (role: string): string[] => this.nodeArgs.map((a) => a.replaceAll('{role}', role));
    this.#broker ??= await startBroker(this.broker);
    const port = String(this.#broker.port);
    this.#server ??= await startServer(process.execPath, [...flags('server'), '--expose-gc', script, 'server', port]);
    this.#agent ??= await startAgent(process.execPath, [...flags('client'), script, 'client', port]);
    return { broker: this.#broker, server: this.#server, agent: this.#agent };
  }

  async stop(): Promise<void> {
    const peers = [this.#agent, this.#server];
    const broker = this.#broker;
    this.#agent = null;
    this.#server = null;
    this.#broker = null;
    try {
      await Promise.all(peers.filter((p) => p !== null).map((p) => p.stop()));
    } finally {
      await broker?.stop(); // after its clients, so that they leave without reconnecting
    }
  }
}

type Pids = Record<'broker' | 'server' | 'client', number>;
type CpuTimes = Record<keyof Pids, number | null>;

function cpuOf(pids: Pids): CpuTimes {
  return { broker: processCpuMs(pids.broker), server: processCpuMs(pids.server), client: processCpuMs(pids.client) };
}

/** Cores used by each process during the run (2 decimals), or null when /proc could not tell. */
function cpuShares(before: CpuTimes, after: CpuTimes, wallMs: number): Record<keyof Pids, number> | null {
  const share = (role: keyof Pids): number | null => {
    const [a, b] = [before[role], after[role]];
    return a === null || b === null || wallMs <= 0 ? null : Math.round(((b - a) / wallMs) * 100) / 100;
  };
  const [broker, server, client] = [share('broker'), share('server'), share('client')];
  return broker === null || server === null || client === null ? null : { broker, server, client };
}
