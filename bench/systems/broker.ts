/**
 * The message brokers of Nest's brokered transports (issue 11): Debian's `nats-server` and `redis-server`, each
 * started for one system on a free port on 127.0.0.1 and stopped afterwards. The bench installs nothing: a
 * missing binary or client package makes the system unavailable, with the reason and how to install it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { delimiter, join } from 'node:path';
import { freePort } from '../lib/free-port.js';

/** A broker program and the Node client package Nest loads to talk to it. */
export interface BrokerKind {
  /** The program (e.g. `nats-server`), looked up on PATH and in the sbin directories. */
  program: string;
  /** Debian's package that installs it. */
  aptPackage: string;
  /** The package Nest's transport loads (e.g. `@nats-io/transport-node`): a devDependency. */
  clientPackage: string;
  /** Its command line for a broker on 127.0.0.1:`port`, with no persistence and little logging. */
  args(port: number): string[];
}

/** NATS (Debian's nats-server 2.9): no monitoring port, no JetStream, no persistence. */
export const NATS: BrokerKind = {
  program: 'nats-server',
  aptPackage: 'nats-server',
  clientPackage: '@nats-io/transport-node',
  args: (port) => ['--addr', '127.0.0.1', '--port', String(port)],
};

/** Redis (Debian's redis-server 7): no snapshots, no append-only file, no Unix socket. */
export const REDIS: BrokerKind = {
  program: 'redis-server',
  aptPackage: 'redis-server',
  clientPackage: 'ioredis',
  args: (port) => [
    '--bind',
    '127.0.0.1',
    '--port',
    String(port),
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
  ],
};

/** Where to look for a program beyond PATH: Debian puts nats-server in /usr/sbin, often not on a user's PATH. */
const EXTRA_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin'];
/** How long a broker has to accept connections after it was started. */
const START_TIMEOUT_MS = 10_000;
/** Attempts at starting a broker (a free port may be taken by someone else before the broker binds it). */
const START_ATTEMPTS = 3;

/** The program's path, or null when it is not installed. */
export function findProgram(program: string): string | null {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter).filter((d) => d !== ''), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const path = join(dir, program);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return null;
}

/** Why this broker's system cannot run here (a missing program or client package, with how to install it), or null. */
export function brokerUnavailable(kind: BrokerKind): string | null {
  const missing: string[] = [];
  if (findProgram(kind.program) === null) missing.push(`${kind.program} is not installed (apt-get install -y ${kind.aptPackage})`);
  try {
    createRequire(import.meta.url).resolve(kind.clientPackage);
  } catch {
    missing.push(`the client package ${kind.clientPackage} is not installed (npm install: it is a devDependency)`);
  }
  return missing.length === 0 ? null : missing.join('; ');
}

/** A running broker. */
export interface Broker {
  readonly port: number;
  readonly pid: number;
  /** CPU time (user + system) the broker has used so far, in ms; null when /proc cannot tell. */
  cpuMs(): number | null;
  /** SIGTERM, then SIGKILL after 3 s; resolves once it has exited. Idempotent. */
  stop(): Promise<void>;
}

/** USER_HZ: the unit of /proc's CPU times, 100 on every Linux Node runs on. */
const CLOCK_TICKS = 100;

/** CPU time (user + system) of a process so far, in ms, from /proc (Linux); null elsewhere or once it has gone. */
export function processCpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces, inside parentheses): utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return null;
  }
}

/** True once something accepts a TCP connection on 127.0.0.1:`port`. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => (socket.destroy(), resolve(false)));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Starts the broker on a free port on 127.0.0.1 and resolves once it accepts connections. Under `setpriv
 * --pdeathsig KILL` (util-linux, where installed) the kernel kills the broker when the bench process dies, even
 * by SIGKILL; an `exit` hook kills it when the bench exits without stopping it.
 */
export async function startBroker(kind: BrokerKind): Promise<Broker> {
  const program = findProgram(kind.program);
  if (program === null) throw new Error(`${kind.program} is not installed (apt-get install -y ${kind.aptPackage})`);
  const failures: string[] = [];
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const port = await freePort();
    try {
      return await launch(program, kind.args(port), port);
    } catch (error) {
      const failure = error instanceof Error ? error.message : String(error);
      if (!failures.includes(failure)) failures.push(failure);
    }
  }
  throw new Error(`${kind.program} did not start (${START_ATTEMPTS} attempts): ${failures.join(' | ')}`.slice(0, 1500));
}

async function launch(program: string, args: string[], port: number): Promise<Broker> {
  const setpriv = findProgram('setpriv');
  const [command, argv] = setpriv === null ? [program, args] : [setpriv, ['--pdeathsig', 'KILL', program, ...args]];
  const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (data: Buffer): void => void (output = (output + data.toString('utf8')).slice(-2000));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (error) => ((output += ` ${error.message}`), resolve()));
  });
  let gone = false;
  void exited.then(() => (gone = true));
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const stop = async (): Promise<void> => {
    process.off('exit', killOnExit);
    await terminate(child, exited);
  };

  const deadline = performance.now() + START_TIMEOUT_MS;
  while (!gone && performance.now() < deadline) {
    if (await accepts(port)) {
      const pid = child.pid ?? 0;
      return { port, pid, cpuMs: () => processCpuMs(pid), stop };
    }
    await sleep(50);
  }
  await stop();
  const why = gone ? `exited (${child.exitCode ?? child.signalCode})` : `not listening on port ${port} after ${START_TIMEOUT_MS} ms`;
  throw new Error(`${program.split('/').at(-1)} ${why}: ${output.trim().slice(-500)}`);
}

/** SIGTERM; SIGKILL after 3 s; resolves when the process has exited (at most ≈ 6 s). */
async function terminate(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  const kill = setTimeout(() => child.kill('SIGKILL'), 3_000);
  await Promise.race([exited, sleep(6_000)]);
  clearTimeout(kill);
}
