/**
 * `npm run soak [-- --minutes 10] [--clients 4] [--reconnect-every 5]`: a soak of the whole transport (issue 9).
 *
 * The server (server.ts) runs in a child process so that its heap and RSS are its own; this process runs several
 * ClientSmux instances, each with a fixed number of workers per kind of call (bounded concurrency, full speed):
 * unary echoes, events, streamed requests (a sum), bidirectional streams, byte streams (openDuplex, echoed) and
 * feeds (smuxFeed). Every few seconds one client is closed and a new one made; some calls are cancelled on
 * purpose (unsubscribing mid-stream, destroying a Duplex). Every answer is checked.
 *
 * Figures at the baseline (1 minute, or a third of a shorter run), the middle and the end; then everything is
 * closed and the open handles of both processes are printed. Exits 1 when the server's heap after GC at the end
 * is more than 16 MiB above the baseline, when an answer was wrong, when a call failed other than by a deliberate
 * cancellation, or when a process kept handles open.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { Logger } from '@nestjs/common';
import { firstValueFrom, lastValueFrom, type Observable, take, toArray } from 'rxjs';
import { ClientSmux, type SmuxFeedItem } from '../../lib/index.js';
import type { FeedFrame, FromServer, ServerStats, ToServer } from './protocol.js';

// ── options ──────────────────────────────────────────────────────────────────────────────────────────────

interface Options {
  minutes: number;
  clients: number;
  reconnectEvery: number;
}

function parseOptions(argv: string[]): Options {
  const options: Options = { minutes: 10, clients: 4, reconnectEvery: 5 };
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i];
    const value = Number(argv[i + 1]);
    const key =
      name === '--minutes' ? 'minutes' : name === '--clients' ? 'clients' : name === '--reconnect-every' ? 'reconnectEvery' : null;
    if (key === null || !Number.isFinite(value) || value <= 0) {
      console.error(`usage: npm run soak -- [--minutes 10] [--clients 4] [--reconnect-every 5 (seconds)]   (bad: ${name} ${argv[i + 1]})`);
      process.exit(2);
    }
    options[key] = key === 'clients' ? Math.ceil(value) : value;
    i++;
  }
  return options;
}

const options = parseOptions(process.argv.slice(2));
const TOTAL_MS = Math.round(options.minutes * 60_000);
const BASELINE_MS = Math.min(60_000, Math.round(TOTAL_MS / 3));
const MIDDLE_MS = Math.round(TOTAL_MS / 2);
const HEAP_SLACK = 16 * 1024 * 1024;
const CALL_TIMEOUT = 30_000;
/** Workers per client and kind: each runs one call at a time, back to back. */
const WORKERS = { echo: 16, event: 4, sum: 2, bidi: 2, bytes: 2, feed: 2 } as const;
/** The share of streamed calls, byte streams and feeds that are cancelled on purpose. */
const CANCEL_SHARE = 0.1;

// ── counters ─────────────────────────────────────────────────────────────────────────────────────────────

const done = { calls: 0, eventsSent: 0, streams: 0, byteStreams: 0, bytes: 0, feeds: 0, feedItems: 0, cancels: 0, reconnects: 0 };
const errors = new Map<string, number>(); // unexpected, by code
const cancelErrors = new Map<string, number>(); // raised by deliberate cancellations (not counted against the run)
const wrong: string[] = [];
const errorSamples: string[] = []; // the first few unexpected errors' messages
let wrongCount = 0;

class WrongAnswer extends Error {}

function codeOf(error: unknown): string {
  if (error instanceof Error)
    return (error as { code?: unknown }).code === undefined ? error.name : String((error as { code?: unknown }).code);
  if (typeof error === 'object' && error !== null) {
    const { code, message } = error as { code?: unknown; message?: unknown };
    return typeof code === 'string' ? code : typeof message === 'string' ? message : JSON.stringify(error);
  }
  return String(error);
}

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new WrongAnswer(what);
}

function random(min: number, max: number): number {
  return min + Math.floor(Math.random() * (max - min + 1));
}

const LETTERS = 'abcdefghijklmnopqrstuvwxyz0123456789';
function randomText(length: number): string {
  let text = '';
  for (let i = 0; i < length; i++) text += LETTERS[Math.floor(Math.random() * LETTERS.length)];
  return text;
}

/** Random bytes that byte streams take slices of (a fresh slice per transfer would cost more CPU than the call). */
const NOISE = randomBytes(1024 * 1024);

Logger.overrideLogger(['warn', 'error']); // ClientSmux's connection lines at each reconnect are debug: hidden

// ── the server child ─────────────────────────────────────────────────────────────────────────────────────

const here = dirname(fileURLToPath(import.meta.url));
const child: ChildProcess = fork(join(here, 'server.js'), [], {
  execArgv: ['--expose-gc'],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const childExit = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>; // exited, stdio and IPC closed
let nextRequest = 0;
const answers = new Map<number, (message: FromServer) => void>();
child.on('message', (message: FromServer) => {
  if ('id' in message) {
    answers.get(message.id)?.(message);
    answers.delete(message.id);
  }
});

function ask<T extends FromServer>(type: ToServer['type'], timeout = 30_000): Promise<T> {
  const id = ++nextRequest;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      answers.delete(id);
      reject(new Error(`the server did not answer '${type}' within ${timeout} ms`));
    }, timeout);
    answers.set(id, (message) => {
      clearTimeout(timer);
      resolve(message as T);
    });
    child.send({ type, id } satisfies ToServer);
  });
}

function serverPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the server exited with ${code} before it was ready`)));
    child.on('message', (message: FromServer) => {
      if (message.type === 'ready') resolve(message.port);
    });
  });
}

// ── clients and workers ──────────────────────────────────────────────────────────────────────────────────

/** One ClientSmux and the calls it has in flight; `retired` once a newer one took its slot. */
interface Conn {
  client: ClientSmux;
  inflight: number;
  retired: boolean;
}

let port = 0;
let stopping = false;
const slots: Conn[] = [];

async function newConn(): Promise<Conn> {
  const client = new ClientSmux({ host: '127.0.0.1', port, timeout: CALL_TIMEOUT });
  await client.connect();
  return { client, inflight: 0, retired: false };
}

async function* numbers(list: number[]): AsyncGenerator<number> {
  yield* list;
}

async function* texts(list: string[]): AsyncGenerator<string> {
  yield* list;
}

/**
 * Subscribes to a call and unsubscribes after `ms` (a deliberate cancellation, mid-stream when the call is still
 * running then). Resolves with the values and whether the call was cut before it completed.
 */
function cancelAfter<T>(call: Observable<T>, ms: number): Promise<{ values: T[]; cut: boolean }> {
  return new Promise((resolve, reject) => {
    const values: T[] = [];
    let timer: NodeJS.Timeout | undefined = undefined; // set after subscribe(), which may settle the call at once
    const subscription = call.subscribe({
      next: (value) => values.push(value),
      error: (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
      complete: () => {
        clearTimeout(timer);
        resolve({ values, cut: false });
      },
    });
    if (subscription.closed) return;
    timer = setTimeout(() => {
      subscription.unsubscribe();
      resolve({ values, cut: true });
    }, ms);
  });
}

type Kind = keyof typeof WORKERS;

const operations: Record<Kind, (client: ClientSmux) => Promise<void>> = {
  async echo(client) {
    const request = { n: random(0, 1e9), s: randomText(random(8, 512)) };
    const reply = await firstValueFrom(client.send<typeof request>('soak.echo', request));
    check(reply.n === request.n && reply.s === request.s, `echo: sent ${JSON.stringify(request)}, got ${JSON.stringify(reply)}`);
    done.calls++;
  },

  async event(client) {
    await lastValueFrom(client.emit('soak.event', { n: done.eventsSent }), { defaultValue: undefined });
    done.eventsSent++;
    // An emit resolves once its bytes are handed to the session, before they can leave: a loop of awaited emits
    // never yields to the event loop (no I/O, no timers, the queue grows), so give it a turn after each one.
    await new Promise((resolve) => setImmediate(resolve));
  },

  async sum(client) {
    const list = Array.from({ length: random(10, 200) }, () => random(-1000, 1000));
    const expected = list.reduce((a, b) => a + b, 0);
    const call = client.send<number>('soak.sum', numbers(list));
    if (Math.random() < CANCEL_SHARE) {
      const { values, cut } = await cancelAfter(call, random(0, 3));
      if (cut) return void done.cancels++;
      check(values.length === 1 && values[0] === expected, `sum: expected [${expected}], got ${JSON.stringify(values)}`);
    } else {
      const sum = await firstValueFrom(call);
      check(sum === expected, `sum: expected ${expected}, got ${sum}`);
    }
    done.streams++;
  },

  async bidi(client) {
    const list = Array.from({ length: random(5, 50) }, () => randomText(random(1, 64)));
    if (Math.random() < CANCEL_SHARE) {
      const k = random(1, list.length - 1); // take(k) unsubscribes after k replies: the rest is still being sent
      const got = await lastValueFrom(client.send<string>('soak.bidi', texts(list)).pipe(take(k), toArray()));
      check(got.length === k && got.every((item, i) => item === list[i]), `bidi (take ${k}): got ${JSON.stringify(got)}`);
      return void done.cancels++;
    }
    const got = await lastValueFrom(client.send<string>('soak.bidi', texts(list)).pipe(toArray()));
    check(got.length === list.length && got.every((item, i) => item === list[i]), `bidi: sent ${list.length} items, got ${got.length}`);
    done.streams++;
  },

  async bytes(client) {
    const size = random(16 * 1024, 512 * 1024);
    const offset = random(0, NOISE.length - size);
    const data = NOISE.subarray(offset, offset + size);
    const chunks: Buffer[] = [];
    for (let at = 0; at < size; at += 16 * 1024) chunks.push(data.subarray(at, Math.min(size, at + 16 * 1024)));
    const cancelAt = Math.random() < CANCEL_SHARE ? random(1, size - 1) : -1;
    const duplex = client.openDuplex('soak.bytes', null, { timeout: CALL_TIMEOUT });
    let destroyed = false;
    const received: Buffer[] = [];
    let got = 0;
    const reading = new Promise<void>((resolve, reject) => {
      duplex.on('data', (chunk: Buffer) => {
        if (destroyed) return;
        received.push(chunk);
        got += chunk.length;
        if (cancelAt >= 0 && got >= cancelAt) {
          destroyed = true;
          duplex.destroy(); // a deliberate cancellation, mid-transfer
          resolve();
        }
      });
      duplex.once('end', resolve);
      duplex.once('error', reject);
    });
    try {
      await Promise.all([pipeline(Readable.from(chunks), duplex), reading]);
    } catch (error) {
      if (!destroyed) throw error;
      bump(cancelErrors, codeOf(error));
    }
    if (destroyed) return void done.cancels++;
    check(
      got === size && Buffer.concat(received).equals(data),
      `bytes: sent ${size}, got ${got}${got === size ? ' (different bytes)' : ''}`,
    );
    done.byteStreams++;
    done.bytes += size;
  },

  async feed(client) {
    const count = random(50, 500);
    const call = client.send<SmuxFeedItem<FeedFrame & { pad: string }>>('soak.feed', { count, pad: random(0, 256) });
    const cut = Math.random() < CANCEL_SHARE;
    const items = await lastValueFrom(cut ? call.pipe(take(random(1, 20)), toArray()) : call.pipe(toArray()));
    let previous = 0;
    let stamp = 0;
    items.forEach((item, i) => {
      check(item.seq > previous && item.value.n === item.seq, `feed: item ${i} has seq ${item.seq} after ${previous}, n ${item.value.n}`);
      check(item.dropped === item.seq - 1 - i, `feed: item seq ${item.seq} (#${i}) says ${item.dropped} dropped`);
      // The feed stamps items with performance.timeOrigin + performance.now() (fractional ms), the handler with
      // Date.now(): the two clocks agree to well within a second, and the stamps never go back.
      check(Math.abs(item.timestamp - item.value.t) < 1000, `feed: timestamp ${item.timestamp}, frame made at ${item.value.t}`);
      check(item.timestamp >= stamp, `feed: timestamp ${item.timestamp} after ${stamp}`);
      previous = item.seq;
      stamp = item.timestamp;
    });
    done.feedItems += items.length;
    if (cut) return void done.cancels++;
    check(previous === count, `feed: ${count} frames made, the last one received is #${previous}`);
    done.feeds++;
  },
};

async function worker(slot: number, kind: Kind): Promise<void> {
  while (!stopping) {
    const conn = slots[slot];
    conn.inflight++;
    try {
      await operations[kind](conn.client);
    } catch (error) {
      if (error instanceof WrongAnswer) {
        if (++wrongCount <= 10) wrong.push(error.message);
      } else {
        bump(errors, `${kind}: ${codeOf(error)}`);
        if (errorSamples.length < 5) errorSamples.push(`${kind}: ${error instanceof Error ? error.message : JSON.stringify(error)}`);
      }
    } finally {
      conn.inflight--;
    }
  }
}

async function until(condition: () => boolean, timeout: number): Promise<boolean> {
  const deadline = Date.now() + timeout;
  while (!condition() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  return condition();
}

/** Every `reconnectEvery` seconds, the next slot's client is replaced: new calls go to a new one, the old is closed. */
async function reconnector(): Promise<void> {
  for (let turn = 0; !stopping; turn++) {
    await until(() => stopping, options.reconnectEvery * 1000);
    if (stopping) return;
    const slot = turn % slots.length;
    const old = slots[slot];
    const client = new ClientSmux({ host: '127.0.0.1', port, timeout: CALL_TIMEOUT });
    try {
      await client.connect();
    } catch (error) {
      bump(errors, `reconnect: ${codeOf(error)}`); // the old client keeps its slot; the next turn tries again
      if (errorSamples.length < 5) errorSamples.push(`reconnect: ${error instanceof Error ? error.message : String(error)}`);
      await client.close();
      continue;
    }
    slots[slot] = { client, inflight: 0, retired: false };
    old.retired = true;
    if (!(await until(() => old.inflight === 0, CALL_TIMEOUT))) bump(errors, 'reconnect: calls still in flight after 30 s');
    await old.client.close();
    done.reconnects++;
  }
}

// ── figures ──────────────────────────────────────────────────────────────────────────────────────────────

interface Row {
  label: string;
  elapsed: number;
  counts: typeof done;
  errors: number;
  server: ServerStats;
  clientHeap: number;
  clientRss: number;
  clientLagMs: number;
}

const rows: Row[] = [];
const started = Date.now();
const MiB = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)}`;
const COLUMNS = [
  ['at', 9],
  ['elapsed', 8],
  ['calls', 9],
  ['events', 9],
  ['streams', 8],
  ['byte-str', 8],
  ['feed-items', 11],
  ['cancels', 8],
  ['reconn', 7],
  ['errors', 7],
  ['srv heap', 9],
  ['srv rss', 8],
  ['cli heap', 9],
  ['cli rss', 8],
  ['srv lag', 8],
  ['cli lag', 8],
] as const;

function line(cells: string[]): string {
  return cells.map((cell, i) => (i === 0 ? cell.padEnd(COLUMNS[i][1]) : cell.padStart(COLUMNS[i][1]))).join(' ');
}

function format(row: Row): string {
  const c = row.counts;
  return line([
    row.label,
    `${(row.elapsed / 1000).toFixed(0)} s`,
    String(c.calls),
    String(c.eventsSent),
    String(c.streams),
    String(c.byteStreams),
    String(c.feedItems),
    String(c.cancels),
    String(c.reconnects),
    String(row.errors),
    MiB(row.server.heapUsed),
    MiB(row.server.rss),
    MiB(row.clientHeap),
    MiB(row.clientRss),
    `${row.server.maxLagMs.toFixed(0)} ms`,
    `${row.clientLagMs.toFixed(0)} ms`,
  ]);
}

const lag = monitorEventLoopDelay({ resolution: 10 });
lag.enable();

function clientMemory(): { heap: number; rss: number; lagMs: number } {
  const lagMs = lag.max / 1e6; // read before the GC below, whose pause would count in the next period
  lag.reset();
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const memory = process.memoryUsage();
  return { heap: memory.heapUsed, rss: memory.rss, lagMs };
}

function record(label: string, server: ServerStats): Row {
  const { heap, rss, lagMs } = clientMemory();
  const errorCount = [...errors.values()].reduce((a, b) => a + b, 0);
  const row = {
    label,
    elapsed: Date.now() - started,
    counts: { ...done },
    errors: errorCount + wrongCount,
    server,
    clientHeap: heap,
    clientRss: rss,
    clientLagMs: lagMs,
  };
  rows.push(row);
  console.log(format(row));
  return row;
}

async function snapshot(label: string): Promise<Row> {
  return record(label, (await ask<Extract<FromServer, { type: 'stats' }>>('stats')).stats);
}

// ── the run ──────────────────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<number> {
  const watchdog = setTimeout(() => {
    console.error('soak: the run did not stop within 2 minutes of its deadline');
    child.kill('SIGKILL');
    process.exit(3);
  }, TOTAL_MS + 120_000);

  port = await serverPort();
  for (let i = 0; i < options.clients; i++) slots.push(await newConn());
  console.log(
    `soak: ${options.minutes} min, ${options.clients} clients × ${Object.entries(WORKERS)
      .map(([kind, n]) => `${n} ${kind}`)
      .join(
        ', ',
      )} workers, a reconnect every ${options.reconnectEvery} s, ${CANCEL_SHARE * 100} % of streams cancelled; Node ${process.version}`,
  );
  console.log(`MiB after GC (heap) and RSS; lag: the longest event-loop delay since the row before; server pid ${child.pid}, port ${port}`);
  console.log(line(COLUMNS.map(([name]) => name)));

  const workers: Promise<void>[] = [];
  for (let slot = 0; slot < options.clients; slot++)
    for (const kind of Object.keys(WORKERS) as Kind[]) for (let i = 0; i < WORKERS[kind]; i++) workers.push(worker(slot, kind));
  const reconnecting = reconnector();

  const at = async (ms: number): Promise<void> => {
    const wait = started + ms - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  };
  await at(BASELINE_MS);
  const baseline = await snapshot(BASELINE_MS === 60_000 ? '1 min' : 'baseline');
  await at(MIDDLE_MS);
  await snapshot('middle');
  await at(TOTAL_MS);
  const end = await snapshot('end');

  // Stop: the workers finish the call each has in flight (all bounded by CALL_TIMEOUT), then every client closes.
  stopping = true;
  await Promise.all([...workers, reconnecting]);
  await Promise.all(slots.map((conn) => conn.client.close()));
  const closed = await ask<Extract<FromServer, { type: 'closed' }>>('close');
  record('closed', closed.stats);

  let grace: NodeJS.Timeout | undefined = undefined;
  const exited = await Promise.race([childExit, new Promise<null>((resolve) => (grace = setTimeout(() => resolve(null), 10_000)))]);
  clearTimeout(grace);
  if (exited === null) child.kill('SIGKILL');
  clearTimeout(watchdog);
  lag.disable();
  await new Promise((resolve) => setTimeout(resolve, 100)); // closed handles leave the list at the loop's next close phase
  const clientHandles = process.getActiveResourcesInfo();

  // ── report ──
  const failures: string[] = [];
  const c = end.counts;
  const seconds = end.elapsed / 1000;
  console.log(
    `\ntotals at the end: ${c.calls} calls (${Math.round(c.calls / seconds)}/s), ${c.eventsSent} events, ${c.streams} streamed calls, ` +
      `${c.byteStreams} byte streams (${MiB(c.bytes)} MiB echoed), ${c.feeds} feeds (${c.feedItems} items), ${c.cancels} cancelled on purpose, ` +
      `${c.reconnects} reconnects`,
  );
  const final = rows[rows.length - 1].counts;
  const received = closed.stats.events;
  console.log(`events: ${final.eventsSent} sent and acknowledged, ${received} handled by the server`);
  if (received !== final.eventsSent) failures.push(`${final.eventsSent} events were sent, the server handled ${received}`);
  console.log(`errors: ${errors.size === 0 ? 'none' : [...errors].map(([code, n]) => `${code} ×${n}`).join(', ')}`);
  console.log(`from deliberate cancellations (not counted): ${[...cancelErrors].map(([code, n]) => `${code} ×${n}`).join(', ') || 'none'}`);
  for (const sample of errorSamples) console.log(`  e.g. ${sample}`);
  if (errors.size > 0) failures.push('calls failed (see errors)');
  if (wrongCount > 0) failures.push(`${wrongCount} wrong answers: ${wrong.join('; ')}`);
  if (closed.stats.handlerErrors > 0 || closed.stats.loggedErrors > 0)
    failures.push(`the server had ${closed.stats.handlerErrors} handler errors and logged ${closed.stats.loggedErrors} errors`);

  const growth = end.server.heapUsed - baseline.server.heapUsed;
  console.log(
    `server heap after GC: ${baseline.label} ${MiB(baseline.server.heapUsed)} MiB, middle ${MiB(rows[1].server.heapUsed)} MiB, ` +
      `end ${MiB(end.server.heapUsed)} MiB (${growth >= 0 ? '+' : ''}${MiB(growth)} MiB; at most +16 MiB), closed ${MiB(closed.stats.heapUsed)} MiB`,
  );
  if (growth > HEAP_SLACK) failures.push(`the server's heap grew by ${MiB(growth)} MiB between ${baseline.label} and the end`);

  const stdio = new Set(['TTYWrap', 'PipeWrap']); // our own stdout/stderr (a pipe when the output is piped)
  console.log(`open handles, server after close (its IPC channel and stdio are PipeWrap/TTYWrap): ${JSON.stringify(closed.handles)}`);
  console.log(`open handles, client after close: ${JSON.stringify(clientHandles)}`);
  if (exited === null) failures.push('the server process did not exit by itself after close (killed)');
  else if (exited[0] !== 0) failures.push(`the server process exited with ${exited[0] ?? exited[1]}`);
  const leftover = clientHandles.filter((handle) => !stdio.has(handle));
  if (leftover.length > 0) failures.push(`the client process still has ${leftover.join(', ')}`);

  console.log(failures.length === 0 ? '\nsoak: OK' : `\nsoak: FAILED\n- ${failures.join('\n- ')}`);
  return failures.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('soak: the run failed:', error);
    child.kill('SIGKILL');
    process.exit(1);
  },
);
