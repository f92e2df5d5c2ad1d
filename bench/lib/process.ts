import { spawn } from 'node:child_process';

/** A line-oriented child process speaking `LISTENING <port>` / `RESULT <json>` on stdout. */
export interface Peer {
  port: number;
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

/** Starts a server process and resolves once it prints `LISTENING <port>`. Stopping closes its stdin, then kills it. */
export function startServer(command: string, args: string[], timeoutMs = 15_000): Promise<Peer> {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not start: ${stderr}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${command} ${args.join(' ')} exited (${code}) before listening: ${stderr}`));
    });
    collectLines(child.stdout, (line) => {
      const match = /^LISTENING (\d+)/.exec(line);
      if (match === null) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      resolve({
        port: Number(match[1]),
        stop: () =>
          new Promise<void>((done) => {
            if (child.exitCode !== null || child.signalCode !== null) return done();
            const kill = setTimeout(() => child.kill('SIGKILL'), 3_000);
            child.once('exit', () => {
              clearTimeout(kill);
              done();
            });
            child.stdin.end();
            child.kill('SIGTERM');
          }),
      });
    });
  });
}

/** Runs a client process to completion and returns its `RESULT` objects; rejects on failure or timeout. */
export function runClient(command: string, args: string[], timeoutMs = 120_000): Promise<Array<Record<string, unknown>>> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const results: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  collectLines(child.stdout, (line) => {
    if (line.startsWith('RESULT ')) results.push(JSON.parse(line.slice(7)) as Record<string, unknown>);
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
