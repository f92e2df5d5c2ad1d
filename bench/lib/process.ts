import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

/**
 * A line-oriented child process speaking `LISTENING <port>` (or `READY`) / `RESULT <json>` on stdout. It exits
 * when its stdin ends; {@link Peer.request} writes one command line to its stdin and resolves with the next
 * `RESULT` line.
 */
export interface Peer {
  /** The port it listens on (0 for a process that prints `READY`). */
  port: number;
  pid: number;
  /** Writes `command` as a line on the child's stdin and resolves with its next RESULT; rejects on exit or timeout. */
  request(command: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Closes its stdin (its signal to exit), then SIGTERM after 10 s and SIGKILL after 15 s. Idempotent. */
  stop(): Promise<void>;
}

function collectLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buffered = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      onLine(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
    }
  });
}

function parseResult(line: string): Record<string, unknown> | undefined {
  return line.startsWith('RESULT ') ? (JSON.parse(line.slice(7)) as Record<string, unknown>) : undefined;
}

/** Starts a server process and resolves once it prints `LISTENING <port>`. Stopping closes its stdin, then kills it. */
export function startServer(command: string, args: string[], timeoutMs = 15_000): Promise<Peer> {
  return startProcess(command, args, /^LISTENING (\d+)/, timeoutMs);
}

/** Starts a command-driven process (a benchmark client agent) and resolves once it prints `READY`. */
export function startAgent(command: string, args: string[], timeoutMs = 15_000): Promise<Peer> {
  return startProcess(command, args, /^READY/, timeoutMs);
}

function startProcess(command: string, args: string[], ready: RegExp, timeoutMs: number): Promise<Peer> {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const waiters: Array<{ resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }> = [];
  let stderr = '';
  let exited = false;
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  child.stdin.on('error', () => undefined); // EPIPE when it died first: the exit handler reports that
  const exit = new Promise<void>((done) => child.once('exit', () => done()));
  void exit.then(() => {
    exited = true;
    for (const w of waiters.splice(0)) w.reject(new Error(`${describe(command, args)} exited: ${stderr}`));
  });
  return new Promise((resolve, reject) => {
    let started = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${describe(command, args)} did not start: ${stderr}`));
    }, timeoutMs);
    void exit.then(() => {
      clearTimeout(timer);
      if (!started)
        reject(new Error(`${describe(command, args)} exited (${child.exitCode ?? child.signalCode}) before it was ready: ${stderr}`));
    });
    collectLines(child.stdout, (line) => {
      const result = parseResult(line);
      if (result !== undefined) return waiters.shift()?.resolve(result);
      const match = ready.exec(line);
      if (match === null || started) return;
      started = true;
      clearTimeout(timer);
      resolve({ port: Number(match[1] ?? 0), pid: child.pid ?? 0, request: (c, ms) => request(c, ms), stop: () => stop(child, exit) });
    });
  });

  function request(line: string, ms = 120_000): Promise<Record<string, unknown>> {
    if (exited) return Promise.reject(new Error(`${describe(command, args)} has exited: ${stderr}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        reject(new Error(`${describe(command, args)}: no RESULT for "${line.slice(0, 80)}" within ${ms} ms`));
      }, ms);
      const waiter = {
        resolve: (r: Record<string, unknown>) => (clearTimeout(timer), resolve(r)),
        reject: (e: Error) => (clearTimeout(timer), reject(e)),
      };
      waiters.push(waiter);
      child.stdin.write(`${line}\n`);
    });
  }
}

/**
 * Ends its stdin (it exits by itself, writing e.g. a --cpu-prof profile: a busy server's takes seconds); SIGTERM
 * after 10 s, SIGKILL after 15 s.
 */
function stop(child: ChildProcessWithoutNullStreams, exit: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const term = setTimeout(() => child.kill('SIGTERM'), 10_000);
  const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
  child.stdin.end();
  return exit.then(() => {
    clearTimeout(term);
    clearTimeout(kill);
  });
}

function describe(command: string, args: string[]): string {
  return `${command.split('/').at(-1)} ${args.map((a) => a.split('/').at(-1)).join(' ')}`.slice(0, 200);
}

/** Runs a client process to completion and returns its `RESULT` objects; rejects on failure or timeout. */
export function runClient(command: string, args: string[], timeoutMs = 120_000): Promise<Array<Record<string, unknown>>> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const results: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  collectLines(child.stdout, (line) => {
    const result = parseResult(line);
    if (result !== undefined) results.push(result);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(results);
      else reject(new Error(`${command} ${args.join(' ')} failed (${code ?? signal}): ${stderr.slice(-2000)}`));
    });
  });
}

/** Prints a result line for the orchestrator. */
export function report(result: Record<string, unknown>): void {
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

/**
 * Child side of {@link Peer.request}: calls `handle` for each stdin line, one at a time, and prints what it
 * returns as a RESULT line (an error becomes `{ error }`). Exits when stdin ends.
 */
export function serveCommands(handle: (line: string) => Promise<Record<string, unknown>> | Record<string, unknown>): void {
  let queue = Promise.resolve();
  let pending = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    pending += chunk;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      queue = queue.then(async () => {
        try {
          report(await handle(line));
        } catch (error) {
          report({ error: error instanceof Error ? error.message : String(error) });
        }
      });
    }
  });
  process.stdin.on('end', () => process.exit(0));
}
