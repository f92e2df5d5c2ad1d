/**
 * Builds and runs the Go smux peer (`peer/`, see README.md) for the interop suites.
 *
 * The binary is built offline in GOPATH mode against Debian's smux 1.5.16 and cached in `.bin/`
 * under a hash of the Go sources, so editing a `.go` file rebuilds it and nothing else does.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

// Also runs compiled under build/ (benchmarks): find the sources from wherever this module lives.
const here = findInteropDir(dirname(fileURLToPath(import.meta.url)));
const peerDir = join(here, 'peer');
const binDir = join(here, '.bin');

function findInteropDir(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'test', 'interop', 'peer'))) return join(dir, 'test', 'interop');
    if (existsSync(join(dir, 'peer', 'main.go'))) return dir;
    if (dirname(dir) === dir) return start;
  }
}
const smuxDir = '/usr/share/gocode/src/github.com/xtaci/smux';

/** Outcome of {@link goAvailability}: the built binary, or why the Go suites cannot run. */
export type GoAvailability = { ok: true; binary: string } | { ok: false; reason: string };

/** One parsed `RESULT <json>` line of the peer. */
export type GoResult = Record<string, unknown>;

let availability: GoAvailability | undefined;

/**
 * Checks for Go and the smux sources and builds the peer (once per process; the binary is reused
 * across processes while the sources are unchanged). Synchronous so `describeWithGo` can decide at
 * collection time. Concurrent Jest workers each build to a private temp name and rename it into
 * place, which is atomic, so nobody ever runs a half-written binary.
 */
export function goAvailability(): GoAvailability {
  availability ??= checkAndBuild();
  return availability;
}

function checkAndBuild(): GoAvailability {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
  } catch {
    return { ok: false, reason: '`go` is not on PATH (apt-get install golang-go)' };
  }
  if (!existsSync(smuxDir)) {
    return { ok: false, reason: `${smuxDir} is missing (apt-get install golang-github-xtaci-smux-dev)` };
  }
  const hash = createHash('sha256');
  for (const file of readdirSync(peerDir)
    .filter((f) => f.endsWith('.go'))
    .sort()) {
    hash
      .update(file)
      .update('\0')
      .update(readFileSync(join(peerDir, file)))
      .update('\0');
  }
  const binary = join(binDir, `peer-${hash.digest('hex').slice(0, 12)}`);
  if (existsSync(binary)) return { ok: true, binary };

  mkdirSync(binDir, { recursive: true });
  const temp = `${binary}.tmp-${process.pid}-${Date.now()}`;
  // GOPATH mode, no module proxy: smux comes from Debian's GOPATH. GOFLAGS is dropped because a
  // -mod flag is rejected outside module mode; GOCACHE sits next to the binaries so a build as root
  // (CI) needs no writable home directory.
  const { GOFLAGS: _ignored, ...inherited } = process.env;
  const env = { ...inherited, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOCACHE: join(binDir, 'gocache') };
  try {
    execFileSync('go', ['build', '-o', temp, '.'], { cwd: peerDir, env, stdio: 'pipe', timeout: 300_000 });
    renameSync(temp, binary);
    // Binaries of older sources are dead weight (a running one keeps working: Linux unlinks lazily).
    for (const f of readdirSync(binDir)) {
      if (/^peer-[0-9a-f]{12}$/.test(f) && join(binDir, f) !== binary) rmSync(join(binDir, f), { force: true });
    }
  } catch (err) {
    rmSync(temp, { force: true });
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    return { ok: false, reason: `go build of ${peerDir} failed: ${stderr || String(err)}` };
  }
  return { ok: true, binary };
}

function requireBinary(): string {
  const go = goAvailability();
  if (!go.ok) throw new Error(`Go peer unavailable: ${go.reason}`);
  return go.binary;
}

/** Parses a `RESULT <json>` line (undefined for other lines); a garbled one becomes a failure. */
function parseResult(line: string): GoResult | undefined {
  if (!line.startsWith('RESULT ')) return undefined;
  try {
    return JSON.parse(line.slice('RESULT '.length)) as GoResult;
  } catch {
    return { ok: false, error: `unparsable RESULT line: ${line}` };
  }
}

/** A running `peer serve`. */
export interface GoServer {
  /** TCP port on 127.0.0.1. */
  port: number;
  /** Every RESULT the server printed so far, in order (e.g. one per session with -open-echo). */
  results: GoResult[];
  /** Resolves with the next RESULT not yet returned by an earlier call (default wait 30 s). */
  nextResult(timeoutMs?: number): Promise<GoResult>;
  /** Closes the server's stdin (its signal to exit) and waits; SIGKILL after 5 s. */
  stop(): Promise<void>;
}

/**
 * Spawns `peer serve ...args` and resolves once it prints `LISTENING <port>`. Rejects, with the
 * server's stderr, if it exits first or does not listen within 10 s.
 */
export function startGoServer(args: string[]): Promise<GoServer> {
  const child: ChildProcessWithoutNullStreams = spawn(requireBinary(), ['serve', ...args]);
  const results: GoResult[] = [];
  const waiters: Array<{ resolve: (r: GoResult) => void; reject: (e: Error) => void }> = [];
  let taken = 0;
  let stderr = '';
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdin.on('error', () => {}); // EPIPE if it died first: the 'close' handler reports that

  return new Promise<GoServer>((resolve, reject) => {
    let listening = false;
    const fail = (why: string): void => {
      if (listening) return;
      child.kill('SIGKILL');
      reject(new Error(`peer serve ${args.join(' ')}: ${why}\n${stderr}`));
    };
    const startTimer = setTimeout(() => fail('no LISTENING line within 10 s'), 10_000);
    child.once('error', (err) => fail(`spawn failed: ${err.message}`));
    child.once('close', (code, signal) => {
      exited = true;
      clearTimeout(startTimer);
      fail(`exited (code ${code}, signal ${signal})`);
      for (const w of waiters.splice(0)) w.reject(new Error(`peer serve exited before its next RESULT\n${stderr}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      const result = parseResult(line);
      if (result) {
        results.push(result);
        const waiter = waiters.shift();
        if (waiter) {
          taken++;
          waiter.resolve(result);
        }
      } else if (line.startsWith('LISTENING ') && !listening) {
        listening = true;
        clearTimeout(startTimer);
        resolve({ port: Number(line.slice('LISTENING '.length)), results, nextResult, stop });
      }
    });

    function nextResult(timeoutMs = 30_000): Promise<GoResult> {
      if (taken < results.length) return Promise.resolve(results[taken++]);
      if (exited) return Promise.reject(new Error(`peer serve has exited\n${stderr}`));
      return new Promise<GoResult>((res, rej) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          rej(new Error(`no RESULT from peer serve within ${timeoutMs} ms\n${stderr}`));
        }, timeoutMs);
        const waiter = {
          resolve: (r: GoResult) => (clearTimeout(timer), res(r)),
          reject: (e: Error) => (clearTimeout(timer), rej(e)),
        };
        waiters.push(waiter);
      });
    }

    async function stop(): Promise<void> {
      if (exited) return;
      child.stdin.end();
      const killTimer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exitedPromise;
      clearTimeout(killTimer);
    }
  });
}

/** Outcome of {@link runGo}. `code` is null when the process was killed (timeout). */
export interface GoRun {
  code: number | null;
  results: GoResult[];
  stdout: string;
  stderr: string;
}

/**
 * Runs one peer sub-command (e.g. `['drive', '-addr', addr, '-scenario', 'echo']`) to completion and
 * collects its output; SIGKILL after `timeoutMs`. It never rejects for a non-zero exit: check
 * `code` and `results`.
 */
export function runGo(args: string[], timeoutMs = 120_000): Promise<GoRun> {
  const child = spawn(requireBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timer = setTimeout(() => {
    stderr += `\n[go-peer.ts] killed after ${timeoutMs} ms`;
    child.kill('SIGKILL');
  }, timeoutMs);
  return new Promise<GoRun>((resolve, reject) => {
    child.once('error', (err) => (clearTimeout(timer), reject(err)));
    child.once('close', (code) => {
      clearTimeout(timer);
      const results = stdout
        .split('\n')
        .map(parseResult)
        .filter((r): r is GoResult => r !== undefined);
      resolve({ code, results, stdout, stderr });
    });
  });
}
