import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NATS, REDIS } from './broker.js';
import { BrokeredSystem } from './brokered-system.js';
import { GoSmuxSystem } from './go-smux.js';
import { NodeSystem } from './node-system.js';
import type { System } from './system.js';

/** The system every ratio is about. */
export const SUBJECT = 'nestjs-smux';

const results = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');

/** Node flags writing a CPU profile per process to bench/results/<script>-<role>.cpuprofile. */
function cpuProfile(script: string): string[] {
  return ['--cpu-prof', `--cpu-prof-dir=${results}`, `--cpu-prof-name=${script.replace('.js', '')}-{role}.cpuprofile`];
}

/**
 * Every system of `npm run bench`, nestjs-smux first; `names` keeps only those.
 * @throws Error naming what `names` holds that is no system
 */
export function allSystems(options: { cpuProf: boolean; names: string[] | null }): System[] {
  const node = (name: string, script: string, kinds: ConstructorParameters<typeof NodeSystem>[2]): NodeSystem =>
    new NodeSystem(name, script, kinds, options.cpuProf ? cpuProfile(script) : []);
  // Nest's brokered transports: each starts its broker (Debian's nats-server, redis-server) on a port of its own.
  const brokered = (
    name: string,
    script: string,
    broker: typeof NATS,
    kinds: ConstructorParameters<typeof NodeSystem>[2],
  ): BrokeredSystem => new BrokeredSystem(name, script, broker, kinds, options.cpuProf ? cpuProfile(script) : []);
  const systems: System[] = [
    node(SUBJECT, 'smux.js', ['echo', 'events', 'hol', 'memory', 'upload', 'upload-hol']),
    node('Nest TCP', 'nest-tcp.js', ['echo', 'events', 'hol']),
    node('Nest gRPC', 'nest-grpc.js', ['echo', 'upload']),
    brokered('Nest NATS', 'nest-nats.js', NATS, ['echo', 'events', 'hol']),
    brokered('Nest Redis', 'nest-redis.js', REDIS, ['echo', 'events', 'hol']),
    node('raw TCP', 'raw-tcp.js', ['echo', 'upload']),
    new GoSmuxSystem(),
  ];
  if (options.names === null) return systems;
  const unknown = options.names.filter((name) => !systems.some((s) => s.name === name));
  if (unknown.length > 0) {
    throw new Error(
      `unknown system ${unknown.map((n) => `'${n}'`).join(', ')}: the systems are ${systems.map((s) => s.name).join(', ')} ` +
        `(exact names; quote a name with a space: "--systems=nestjs-smux,Nest TCP")`,
    );
  }
  return systems.filter((s) => options.names!.includes(s.name));
}
