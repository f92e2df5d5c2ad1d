/**
 * Receive-window auto-tuning (smux `maxStreamWindow`) against the real Go library (Debian's xtaci/smux 1.5.16):
 * the grown window travels in the UPD frame's `window` field, which Go's sender stores as its `peerWindow`.
 * Go sends bulk to an auto-tuning TS receiver (as client and as server), our sender works with Go's receiver,
 * bytes are checked by SHA-256, and a tap on the socket proves Go used the grown window: at some moment it had
 * more unacknowledged bytes in flight than any window it could have had without our growth (256 KiB, its
 * initial assumption).
 */
import { afterAll, afterEach, beforeAll, expect, test } from '@jest/globals';
import net from 'node:net';
import { once } from 'node:events';
import { Cmd, INITIAL_PEER_WINDOW, Session, type SmuxConfig } from '../../lib/smux/index.js';
import { frameParser } from '../helpers/frames.js';
import { driveEcho, driveExchange, driveSink, serveCommand } from './command-protocol.js';
import { describeWithGo } from './describe-with-go.js';
import { type GoServer, runGo, startGoServer } from './go-peer.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Auto-tuning on top of Go's own defaults: a 64 KiB window that may grow to 1 MiB. */
const TUNING: Partial<SmuxConfig> = { version: 2, maxStreamBuffer: 64 * KiB, maxStreamWindow: 1 * MiB };

/**
 * Watches a session's socket from outside: PSH bytes the peer sent per stream, the `consumed` of the UPDs we
 * wrote, and so the most the peer ever had in flight on a stream by our own count — received minus the
 * consumed value of our latest UPD — which is at most the window the peer was using.
 */
function tap(socket: net.Socket): { maxInFlight: number; windows: Set<number>; steadyInFlight: Map<number, number[]> } {
  const received = new Map<number, number>();
  const consumed = new Map<number, number>();
  const recentWindows = new Map<number, number[]>(); // per stream, the windows of our last three UPDs
  // In flight at each PSH arrival while our last three UPDs on its stream all carried the same window, by window.
  const seen = { maxInFlight: 0, windows: new Set<number>(), steadyInFlight: new Map<number, number[]>() };
  socket.on(
    'data',
    frameParser((cmd, id, length) => {
      if (cmd !== Cmd.PSH) return;
      const total = (received.get(id) ?? 0) + length;
      received.set(id, total);
      // Before our first UPD the peer assumes 256 KiB, whatever we advertise; only count after it.
      if (!consumed.has(id)) return;
      const inFlight = total - consumed.get(id)!;
      seen.maxInFlight = Math.max(seen.maxInFlight, inFlight);
      const recent = recentWindows.get(id) ?? [];
      if (recent.length === 3 && recent.every((w) => w === recent[0])) {
        const list = seen.steadyInFlight.get(recent[0]) ?? [];
        list.push(inFlight);
        seen.steadyInFlight.set(recent[0], list);
      }
    }),
  );
  const parseOut = frameParser((cmd, id, _length, payload) => {
    if (cmd !== Cmd.UPD || payload === null) return;
    consumed.set(id, payload.readUInt32LE(0)); // no wrap: these tests move far less than 4 GiB per stream
    const window = payload.readUInt32LE(4);
    seen.windows.add(window);
    recentWindows.set(id, [...(recentWindows.get(id) ?? []), window].slice(-3));
  });
  const write = socket.write.bind(socket) as (chunk: Buffer, callback?: (error?: Error | null) => void) => boolean;
  (socket as unknown as { write: typeof write }).write = (chunk, callback) => {
    parseOut(chunk);
    return write(chunk, callback);
  };
  return seen;
}

describeWithGo('window auto-tuning ↔ Go 1.5.16 (v2)', () => {
  let go: GoServer;
  let listener: net.Server;
  let port: number;
  const sessions = new Set<Session>();
  const taps: Array<ReturnType<typeof tap>> = [];
  const failures: unknown[] = [];
  let growth = 0;

  beforeAll(async () => {
    go = await startGoServer(['-v', '2']);
    listener = net.createServer((socket) => {
      taps.push(tap(socket));
      const session = Session.server(socket, TUNING);
      sessions.add(session);
      session.on('stream', (stream) => void serveCommand(stream).catch((e: unknown) => session.isClosed || failures.push(e)));
      session.on('close', () => sessions.delete(session));
      watchGrowth(session);
    });
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    port = (listener.address() as net.AddressInfo).port;
  });
  afterEach(() => {
    for (const s of sessions) s.destroy();
    taps.length = 0;
    growth = 0;
    expect(failures.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    listener.close();
    await go.stop();
  });

  /** Records the largest growth the session reached (it goes back to 0 when the stream closes). */
  function watchGrowth(session: Session): void {
    const timer = setInterval(() => (growth = Math.max(growth, session.stats.receiveWindowGrowth)), 2);
    session.on('close', () => clearInterval(timer));
  }

  async function client(config: Partial<SmuxConfig>): Promise<Session> {
    const socket = net.connect(go.port, '127.0.0.1');
    await once(socket, 'connect');
    taps.push(tap(socket));
    const session = Session.client(socket, config);
    sessions.add(session);
    watchGrowth(session);
    return session;
  }

  test('a Go client sends 64 MiB to an auto-tuning TS server: digest checked, the window grew, Go used it', async () => {
    const run = await runGo(['drive', '-v', '2', '-addr', `127.0.0.1:${port}`, '-scenario', 'sink', '-bytes', String(64 * MiB)]);
    expect({ code: run.code, result: run.results.at(-1) }).toMatchObject({ code: 0, result: { ok: true } });
    expect(growth).toBeGreaterThan(0);
    const [seen] = taps;
    expect(Math.max(...seen.windows)).toBeGreaterThan(64 * KiB);
    // Go's sender keeps within the last window we sent it: more than 256 KiB in flight needs a grown one.
    expect(seen.maxInFlight).toBeGreaterThan(INITIAL_PEER_WINDOW);
    expect(seen.maxInFlight).toBeLessThanOrEqual(Math.max(...seen.windows));
  });

  test('a TS client exchanges 32 MiB each way with a Go server: Go sends to our auto-tuning receiver while our sender fills its window', async () => {
    const session = await client(TUNING);
    await driveExchange(session, 32 * MiB);
    expect(growth).toBeGreaterThan(0);
    const [seen] = taps;
    expect(seen.maxInFlight).toBeGreaterThan(INITIAL_PEER_WINDOW);
    expect(seen.maxInFlight).toBeLessThanOrEqual(Math.max(...seen.windows));
  });

  test("a TS client at the Nest transport's settings (256 KiB growing to 1 MiB) sends 64 MiB to Go: Go's own window holds it", async () => {
    const session = await client({ version: 2, maxStreamBuffer: 256 * KiB, maxStreamWindow: 1 * MiB });
    await driveSink(session, 64 * MiB);
    await driveExchange(session, 8 * MiB);
  });

  test('a TS client with contendedStreamWindow: Go sends 32 MiB on one stream while small echoes run on others; Go keeps to the smaller window, every byte arrives, nothing stalls', async () => {
    const session = await client({ ...TUNING, contendedStreamWindow: 32 * KiB });
    let bulkDone = false;
    const bulk = driveExchange(session, 32 * MiB).finally(() => (bulkDone = true));
    const echoes = Array.from({ length: 4 }, async () => {
      let during = 0; // echo exchanges that completed while the bulk transfer ran
      for (let i = 0; !bulkDone && i < 100_000; i++) {
        await driveEcho(session, 5);
        if (!bulkDone) during++;
      }
      return during;
    });
    await bulk;
    const during = await Promise.all(echoes);
    expect(Math.min(...during)).toBeGreaterThan(0); // the small streams were served beside the bulk one
    const [seen] = taps;
    expect(seen.windows).toContain(32 * KiB); // advertised while the echoes ran
    // Go kept to it: while our last three UPDs all said 32 KiB, what Go had in flight was mostly within 32 KiB (the
    // transient after a shrink is bytes sent under the older, larger window). Go ignoring the window would keep
    // up to 1 MiB in flight here.
    const steady = (seen.steadyInFlight.get(32 * KiB) ?? []).sort((a, b) => a - b);
    expect(steady.length).toBeGreaterThan(20);
    expect(steady[Math.floor(steady.length / 2)]).toBeLessThanOrEqual(32 * KiB);
    expect(session.isClosed).toBe(false);
  });
});
