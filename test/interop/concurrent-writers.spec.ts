/**
 * Go's concurrent writers on one stream against our v2 window cut-off (docs/NOTES.md, "A v2 peer past its window is
 * cut off"). Go's smux lets several goroutines Write() one stream at once, and each Write computes its window before
 * the others' frames count, so together they send past what the receiver granted. Our session ends with
 * ERR_SMUX_PROTOCOL once its receive budget is spent and one stream is at least half the budget past its grant
 * (session-streams.ts `windowOverrun`).
 *
 * `peer writers` (peer/concurrent_writers.go) opens one stream to a TS server and has N goroutines write T bytes into
 * it in Write calls of S bytes. Our application leaves the stream unread for PAUSE_MS, then reads everything, checks
 * each writer's bytes in order, and answers with the count that matched. Per cell (N × S), at the core's defaults
 * (Go's: 4 MiB budget, 64 KiB window) and at the Nest transport's session config (what a ServerSmux gives each
 * session), one line is printed: the outcome, what was past the grant (charged to the budget) when the pause ended
 * and at most during the run — or the overrun the cut-off error names — and whether the bytes arrived intact.
 *
 * Go 1.5.16's concurrent writers also fail on their own, Go↔Go too (`peer writers -self-pause 250`): a window update
 * wakes one blocked writer (`chUpdate` holds one signal), so writers blocked together can wait for ever with the
 * window open; and a writer counts a frame in `numWritten` only after it was written, so a UPD can acknowledge more
 * than it counted (ErrConsumed, "peer consumed more than sent"). A stall — nothing arrives for STALL_MS while bytes
 * are missing — ends the cell: it is Go's when, by the frames on the socket, our last UPD left Go a window and our
 * application had read everything that arrived.
 *
 * Asserted: every byte that arrived is in its writer's order; no UPD of ours acknowledged more than had arrived (so
 * an ErrConsumed is Go's); a cell that is not cut off and where no Go writer failed with ErrConsumed and nothing
 * stalled delivers every byte and Go's run succeeds; a stall is Go's; the cells robustly below the cut-off threshold
 * (`assertsNoCutOff`) are not cut off. What varies run to run (which of Go's own failures, whether the other cells are
 * cut off) is only printed. Go 1.5.16 (Debian) is the only Go smux the suite builds against.
 */
import { afterAll, afterEach, beforeAll, expect, test } from '@jest/globals';
import net from 'node:net';
import { once } from 'node:events';
import { Cmd, INITIAL_PEER_WINDOW, Session, type SmuxConfig, type SmuxError, type SmuxStream } from '../../lib/smux/index.js';
import { resolveServerOptions } from '../../lib/nest/options.js';
import { frameParser } from '../helpers/frames.js';
import { StreamReader } from './command-protocol.js';
import { describeWithGo } from './describe-with-go.js';
import { runGo } from './go-peer.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** The WRITERS command of peer/concurrent_writers.go: A = writers, B = bytes in all. */
const WRITERS = 7;
/** How long our application leaves the stream unread. */
const PAUSE_MS = 250;
/** After the pause: nothing arriving for this long while bytes are missing is a stall. */
const STALL_MS = 500;

const CONFIGS: ReadonlyArray<{ name: string; config: Partial<SmuxConfig> }> = [
  { name: 'core defaults', config: { version: 2 } },
  // What a ServerSmux gives each session (server-connection.ts): v2 ('auto' follows Go's v2), a 256 KiB window
  // growing to 512 KiB, a 128 KiB contended window, the default 4 MiB budget.
  { name: 'Nest server', config: resolveServerOptions({ port: 0 }).smux },
];
const WRITER_COUNTS = [1, 4, 16, 32];
const CHUNKS = [1000, 32 * KiB, MiB];

/**
 * The cells asserted not to be cut off. Writers that compute their window at the same moment pass the grant by up
 * to (N − 1) × min(S, window), the window at most 512 KiB (Nest's growth): with N ≤ 4 that is ≤ 1.5 MiB, with
 * S ≤ 32 KiB ≤ 992 KiB, below the 2 MiB (half the 4 MiB budget) a cut-off needs on one stream. Measured in
 * 10 runs of the matrix (2026-12-05): none of these cells was ever cut off (their charge at most 928 KiB), while Nest's
 * 32 × 1 MiB was in 9 of 10 (4.06 MiB past the grant each time), Nest's 16 × 1 MiB charged 2.44 – 3.69 MiB of the
 * 4 MiB and the core's 32 × 1 MiB up to 1.69 MiB: those, and the core's 16 × 1 MiB (≤ 704 KiB), are only printed.
 */
const assertsNoCutOff = (writers: number, chunk: number): boolean => writers <= 4 || chunk <= 32 * KiB;

/** What one cell saw on our side. */
interface Cell {
  session: Session | null;
  /** Frames on the socket, counted from outside. */
  wire: Wire | null;
  /** Past-the-grant bytes charged to the budget when the pause ended. */
  chargedAtResume: number | null;
  /** The most charged at any sample (every ms) during the run. */
  maxCharged: number;
  /** Bytes the application read after the header. */
  received: number;
  /** Offset of the first byte out of its writer's order, or -1. */
  firstBad: number;
  /** Every byte arrived, in its writer's order. */
  intact: boolean;
  /**
   * At a stall: the window our last UPD left Go (consumed + window − PSH bytes received), bytes not read by us, and
   * whether our session was holding its reading then (its socket paused, or its receive budget spent).
   */
  stall: { openWindow: number; unread: number; readingHeld: boolean } | null;
  /** Why reading ended early. */
  problem: string | null;
  /** Milliseconds from the end of the pause to the last byte. */
  readMs: number | null;
  /** The application's handling of the stream, settled. */
  accepted: Promise<void> | null;
}

/**
 * The session's socket seen from outside: PSH bytes in, and the last UPD out (window-tuning.spec.ts has the same
 * parser). One stream per session here, so no per-stream bookkeeping.
 */
interface Wire {
  pshIn: number;
  upd: { consumed: number; window: number } | null;
  /** The most any UPD of ours acknowledged beyond the PSH bytes that had arrived (≤ 0: never more than sent). */
  updAhead: number;
  /** True while the socket is paused (our session holding its reading). */
  paused(): boolean;
}

function tap(socket: net.Socket): Wire {
  const wire: Wire = { pshIn: 0, upd: null, updAhead: -Infinity, paused: () => socket.isPaused() };
  socket.on(
    'data',
    frameParser((cmd, _id, length) => {
      if (cmd === Cmd.PSH) wire.pshIn += length;
    }),
  );
  const parseOut = frameParser((cmd, _id, _length, payload) => {
    if (cmd !== Cmd.UPD || payload === null) return;
    wire.upd = { consumed: payload.readUInt32LE(0), window: payload.readUInt32LE(4) };
    wire.updAhead = Math.max(wire.updAhead, wire.upd.consumed - wire.pshIn);
  });
  const write = socket.write.bind(socket) as (chunk: Buffer, callback?: (error?: Error | null) => void) => boolean;
  (socket as unknown as { write: typeof write }).write = (chunk, callback) => {
    parseOut(chunk);
    return write(chunk, callback);
  };
  return wire;
}

/** Writer i's share of `total` bytes (concurrent_writers.go `writerShare`). */
function share(total: number, writers: number, i: number): number {
  return Math.floor(total / writers) + (i < total % writers ? 1 : 0);
}

/** Hoisted: in Jest's vm context every read of a global (`Math`) costs ~160 ns, 30× the rest of the per-byte check. */
const imul = Math.imul;

/**
 * Checks the writers' interleaved bytes: byte p of writer i's share is i·k + mix(p) % k with k = 256 / N (the writer
 * is the byte's k-block), so each writer's bytes are checked in their own order whatever the interleaving.
 */
class WritersCheck {
  readonly #k: number;
  readonly #next: Uint32Array;
  /** Offset of the first byte that broke its writer's sequence, or -1. */
  firstBad = -1;
  #offset = 0;

  constructor(readonly writers: number) {
    this.#k = Math.floor(256 / writers);
    this.#next = new Uint32Array(writers);
  }

  add(chunk: Buffer): void {
    const k = this.#k;
    const n = this.writers;
    const next = this.#next;
    let bad = this.firstBad;
    for (let j = 0; j < chunk.length; j++) {
      const b = chunk[j];
      const w = (b / k) | 0;
      if (w >= n) {
        if (bad < 0) bad = this.#offset + j;
        continue;
      }
      if (bad < 0 && b !== w * k + ((imul(next[w], 0x9e3779b1) >>> 24) % k)) bad = this.#offset + j;
      next[w]++;
    }
    this.firstBad = bad;
    this.#offset += chunk.length;
  }

  /** Every writer's share complete. */
  complete(total: number): boolean {
    for (let i = 0; i < this.writers; i++) if (this.#next[i] !== share(total, this.writers, i)) return false;
    return true;
  }
}

/** Past-the-grant bytes charged to the session's budget (growth reservations are not charges). */
function charged(session: Session): number {
  return session.config.maxReceiveBuffer - session.stats.receiveBudgetLeft - session.stats.receiveWindowGrowth;
}

/** The bytes past the grant named by the cut-off error (flow-control.ts `windowOverrunError`), or null. */
function overrunOf(error: SmuxError | null | undefined): number | null {
  const m = / sent \d+ bytes, (-?\d+) past the \d+ granted/.exec(error?.message ?? '');
  return m === null ? null : Number(m[1]);
}

const size = (n: number | null): string => (n === null ? '-' : n >= MiB ? `${(n / MiB).toFixed(2)} MiB` : `${(n / KiB).toFixed(1)} KiB`);
const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeWithGo('Go 1.5.16 concurrent writers on one stream our application pauses (v2)', () => {
  let listener: net.Server;
  let port: number;
  let config: Partial<SmuxConfig> = {};
  let cell: Cell | null = null;
  const sessions = new Set<Session>();

  beforeAll(async () => {
    listener = net.createServer((socket) => {
      const current = cell;
      if (current === null) return void socket.destroy();
      current.wire = tap(socket);
      const session = Session.server(socket, config);
      current.session = session;
      sessions.add(session);
      const sampler = setInterval(() => (current.maxCharged = Math.max(current.maxCharged, charged(session))), 1);
      session.on('close', () => (clearInterval(sampler), sessions.delete(session)));
      session.once('stream', (stream) => {
        current.accepted = accept(stream, session, current);
      });
    });
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    port = (listener.address() as net.AddressInfo).port;
  });
  afterEach(() => {
    for (const s of sessions) s.destroy();
    cell = null;
  });
  afterAll(() => {
    listener.close();
  });

  /** The application: leaves the stream unread for PAUSE_MS, then reads and checks everything, replies, ends. */
  async function accept(stream: SmuxStream, session: Session, c: Cell): Promise<void> {
    const reader = new StreamReader(stream); // listens for 'error' at once: a cut-off during the pause fails it
    try {
      await delay(PAUSE_MS);
      c.chargedAtResume = charged(session);
      const resumed = Date.now();
      const header = await reader.read(16);
      if (header[0] !== WRITERS) throw new Error(`command ${header[0]}, not WRITERS`);
      const writers = header.readUInt32LE(4);
      const total = Number(header.readBigUInt64LE(8));
      const check = new WritersCheck(writers);
      let lastData = Date.now();
      while (c.received < total) {
        const chunk = stream.read() as Buffer | null;
        if (chunk !== null) {
          check.add(chunk);
          c.received += chunk.length;
          c.firstBad = check.firstBad;
          lastData = Date.now();
        } else if (stream.readableEnded || stream.destroyed) {
          throw new Error(`stream ended after ${c.received} of ${total} bytes`);
        } else if (Date.now() - lastData >= STALL_MS) {
          const wire = c.wire!;
          const upd = wire.upd ?? { consumed: 0, window: INITIAL_PEER_WINDOW };
          c.stall = {
            openWindow: upd.consumed + upd.window - wire.pshIn,
            unread: wire.pshIn - 16 - c.received,
            // Bytes our session never read off its socket are not counted at all: a socket it paused for good (a bug
            // of ours, fixed 2026-12-05) would look like Go's stall without this.
            readingHeld: wire.paused() || session.stats.receiveBudgetLeft <= 0,
          };
          session.destroy(); // Go's writers fail with it, and Go reports
          return;
        } else {
          await Promise.race([reader.wait(), delay(STALL_MS / 5)]);
        }
      }
      c.readMs = Date.now() - resumed;
      c.intact = c.received === total && check.firstBad < 0 && check.complete(total);
      const reply = Buffer.alloc(8);
      reply.writeBigUInt64LE(BigInt(c.intact ? total : Math.max(0, check.firstBad)));
      stream.end(reply);
      await reader.readToEnd(); // Go closes after reading the count
    } catch (error) {
      c.problem ??= (error as Error).message;
      stream.destroy();
    }
  }

  for (const { name, config: cellConfig } of CONFIGS) {
    for (const chunk of CHUNKS) {
      for (const writers of WRITER_COUNTS) {
        const total = Math.max(writers * chunk, 2 * MiB);
        test(`${name}: ${writers} writers × Write(${chunk} B), ${total} B in all`, async () => {
          config = cellConfig;
          const c: Cell = {
            session: null,
            wire: null,
            chargedAtResume: null,
            maxCharged: 0,
            received: 0,
            firstBad: -1,
            intact: false,
            stall: null,
            problem: null,
            readMs: null,
            accepted: null,
          };
          cell = c;
          const args = ['-writers', String(writers), '-chunk', String(chunk), '-bytes', String(total), '-timeout', '15000'];
          const run = await runGo(['writers', '-v', '2', '-addr', `127.0.0.1:${port}`, ...args], 25_000);
          const session = c.session;
          if (session !== null && !session.isClosed) await Promise.race([once(session, 'close'), delay(2_000)]);
          await Promise.race([c.accepted, delay(PAUSE_MS + 1_000)]); // a cut-off during the pause: the pause ends first
          const result = run.results.at(-1);
          const error = session?.error ?? null;
          const cutOff = error?.code === 'ERR_SMUX_PROTOCOL';
          const errConsumed = Number(result?.errConsumed ?? 0); // Go writers failed with ErrConsumed
          const goError = result?.ok === true ? '' : typeof result?.error === 'string' ? result.error : run.stderr.slice(-300);
          const stall =
            c.stall === null ? '' : `stalled, our last UPD leaving Go ${size(c.stall.openWindow)}, ${c.stall.unread} B unread by us`;
          const outcome = cutOff
            ? `CUT OFF, ${size(overrunOf(error))} past the grant`
            : errConsumed > 0
              ? `Go's ErrConsumed in ${errConsumed} writers${stall === '' ? '' : `, then ${stall}`}`
              : stall !== ''
                ? `Go's lost wakeup: ${stall}`
                : c.intact && result?.ok === true
                  ? 'ok'
                  : `FAILED (${c.problem ?? goError})`;
          process.stdout.write(
            `concurrent writers, Go 1.5.16, ${name}, N=${writers} S=${chunk} T=${total}: ${outcome}; ` +
              `charged at resume ${size(c.chargedAtResume)}, max ${size(c.maxCharged)}; ` +
              `${c.received} B read${c.firstBad < 0 ? ' in order' : `, OUT OF ORDER at ${c.firstBad}`}` +
              `${c.readMs === null ? '' : ` in ${c.readMs} ms`}; Go ${goError === '' ? 'ok' : `failed: ${goError}`}\n`,
          );
          expect(session).not.toBeNull();
          expect(c.firstBad).toBe(-1); // every byte that arrived is in its writer's order
          expect(c.wire!.updAhead).toBeLessThanOrEqual(0); // so a Go writer's ErrConsumed is Go's own count lagging
          if (c.stall !== null) {
            // Go's, not ours: our UPDs left Go room to send, and our application had read all that arrived.
            expect(c.stall.openWindow).toBeGreaterThan(0);
            expect(c.stall.unread).toBe(0);
            expect(c.stall.readingHeld).toBe(false);
          } else if (!cutOff && errConsumed === 0) {
            expect({ intact: c.intact, problem: c.problem }).toEqual({ intact: true, problem: null });
            expect({ code: run.code, ok: result?.ok, acked: result?.acked }).toEqual({ code: 0, ok: true, acked: total });
          }
          if (assertsNoCutOff(writers, chunk)) expect(cutOff).toBe(false);
        });
      }
    }
  }
});
