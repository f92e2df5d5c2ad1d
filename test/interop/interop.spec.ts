/**
 * The interop matrix against the real Go library (Debian's xtaci/smux 1.5.16, built by go-peer.ts):
 * {v1, v2} × {TS client ↔ Go server, Go client ↔ TS server}. Every stream speaks the command protocol of
 * README.md in this folder; the opener always writes first.
 */
import { afterAll, afterEach, beforeAll, expect, test } from '@jest/globals';
import net from 'node:net';
import { once } from 'node:events';
import { Session, type SmuxConfig, SmuxError } from '../../lib/smux/index.js';
import {
  driveEcho,
  driveExchange,
  driveFinReply,
  driveSink,
  driveWriteClose,
  commandHeader,
  ECHO,
  WRITECLOSE,
  serveCommand,
  StreamReader,
} from './command-protocol.js';
import { describeWithGo } from './describe-with-go.js';
import { type GoServer, runGo, startGoServer } from './go-peer.js';
import { until } from '../helpers/net.js';

const MiB = 1024 * 1024;
const SHORT_KEEPALIVE = { keepAliveInterval: 200, keepAliveTimeout: 800 }; // timeout = 4 × interval
const GO_SHORT_KEEPALIVE = ['-kai', '200', '-kat', '800'];

async function connect(port: number, config: Partial<SmuxConfig>): Promise<Session> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  return Session.client(socket, config);
}

function expectGoOk(run: { code: number | null; results: Array<Record<string, unknown>>; stderr: string }): void {
  const result = run.results.at(-1);
  expect({
    code: run.code,
    ok: result?.ok,
    error: result?.error || undefined,
    stderr: run.code === 0 ? '' : run.stderr.slice(-800),
  }).toEqual({
    code: 0,
    ok: true,
    error: undefined,
    stderr: '',
  });
}

for (const version of [1, 2] as const) {
  describeWithGo(`interop v${version}: TS client ↔ Go server`, () => {
    let go: GoServer;
    const sessions: Session[] = [];
    const open = async (config: Partial<SmuxConfig> = {}, server = go): Promise<Session> => {
      const session = await connect(server.port, { version, ...config });
      sessions.push(session);
      return session;
    };

    beforeAll(async () => {
      go = await startGoServer(['-v', String(version)]);
    });
    afterEach(() => {
      for (const s of sessions.splice(0)) s.destroy();
    });
    afterAll(async () => {
      await go.stop();
    });

    test('100 small echo round trips on one stream', async () => {
      await driveEcho(await open(), 100);
    });

    test('200 concurrent streams, 1 MiB of random bytes each way, SHA-256 checked', async () => {
      const session = await open();
      await Promise.all(Array.from({ length: 200 }, () => driveExchange(session, MiB)));
      expect(session.stats.streamsOpened).toBe(200);
    });

    test('64 MiB on one stream with random write and read sizes, SHA-256 checked', async () => {
      await driveSink(await open(), 64 * MiB);
    });

    test('streams opened by the Go server are accepted and served by the TS client', async () => {
      const opener = await startGoServer(['-v', String(version), '-open-echo', '5']);
      try {
        const session = await open({}, opener);
        const served: Array<Promise<void>> = [];
        session.on('stream', (stream) => served.push(serveCommand(stream)));
        const result = await opener.nextResult(30_000);
        expect(result).toMatchObject({ ok: true, streams: 5 });
        await Promise.all(served);
        expect(served).toHaveLength(5);
      } finally {
        await opener.stop();
      }
    });

    test('half-close: Go writes then Close; TS reads every byte, then EOF', async () => {
      const session = await open();
      await driveWriteClose(session, 3 * MiB + 7);
      await driveWriteClose(session, 1);
    });

    test('half-close: TS writes then end(); Go reads to EOF and replies', async () => {
      // Under v2, 1.5.16 fails a window-blocked write after a remote FIN, so the reply stays < 64 KiB.
      await driveFinReply(await open(), 200_000, 60_000);
    });

    test('keep-alive on both sides with short timers: an idle session survives 3× the timeout', async () => {
      const keepAliveGo = await startGoServer(['-v', String(version), ...GO_SHORT_KEEPALIVE]);
      try {
        const session = await open(SHORT_KEEPALIVE, keepAliveGo);
        await driveEcho(session, 5);
        await new Promise((resolve) => setTimeout(resolve, 3 * 800 + 300));
        expect(session.isClosed).toBe(false);
        await driveEcho(session, 5);
        expect(session.stats.framesIn).toBeGreaterThan(10); // Go's NOPs arrived while idle
      } finally {
        await keepAliveGo.stop();
      }
    });

    if (version === 2) {
      test('a stream nobody reads blocks only itself: another stream keeps flowing', async () => {
        const session = await open();
        const stalled = await session.openStream();
        stalled.write(commandHeader(ECHO));
        const block = Buffer.alloc(32 * 1024, 1);
        // Fill the stalled stream (Go echoes it back; we never read): bounded by both windows.
        for (let i = 0; i < 64 && stalled.write(block); i++);
        await driveEcho(session, 100);
        expect(stalled.writableLength + stalled.readableLength).toBeGreaterThan(0);
        stalled.destroy();
      });

      test('a write blocked on the window after Go closed the stream fails after peerFinWriteTimeout, its bytes released', async () => {
        // Go's Close sends FIN and forgets the stream: it drops our data and never sends a UPD again (the newest
        // Go does the same from an accepted stream's GC finalizer). Without the bound our writer waited for ever.
        const session = await open({ peerFinWriteTimeout: 300 });
        let ended = false;
        let closed: SmuxError | undefined | null = null;
        const channel = session.openChannel({
          onData: () => undefined,
          onEnd: () => (ended = true),
          onClose: (error) => (closed = error),
        });
        channel.write(commandHeader(WRITECLOSE, 0, 0)); // Go: write nothing, Close at once
        channel.write(Buffer.alloc(MiB, 7));
        await until(() => ended, 10_000, "Go's FIN");
        expect(channel.writableLength).toBeGreaterThan(512 * 1024); // the window holds back ≈ 800 KiB
        await until(() => closed !== null, 10_000, 'the stream to fail'); // 300 ms configured; without the bound: never
        expect(closed).toMatchObject({ code: 'ERR_SMUX_TIMEOUT' });
        expect([channel.writableLength, session.numStreams]).toEqual([0, 0]);
        await driveEcho(session, 10); // the session is unharmed
      });
    }
  });

  describeWithGo(`interop v${version}: Go client ↔ TS server`, () => {
    let listener: net.Server;
    let port: number;
    const sessions = new Set<Session>();
    const failures: unknown[] = [];
    const closeErrors: Array<SmuxError | undefined> = [];
    let config: Partial<SmuxConfig> = {};
    let onSession: (session: Session) => void = () => undefined;

    beforeAll(async () => {
      listener = net.createServer((socket) => {
        const session = Session.server(socket, { version, ...config });
        sessions.add(session);
        // A stream cut off because its session died (malformed input, the Go client closing) is expected to fail.
        session.on('stream', (stream) => void serveCommand(stream).catch((e: unknown) => session.isClosed || failures.push(e)));
        session.on('close', (error) => {
          sessions.delete(session);
          closeErrors.push(error);
        });
        onSession(session);
      });
      listener.listen(0, '127.0.0.1');
      await once(listener, 'listening');
      port = (listener.address() as net.AddressInfo).port;
    });
    afterEach(() => {
      config = {};
      onSession = () => undefined;
      closeErrors.length = 0;
      expect(failures.splice(0)).toEqual([]);
    });
    afterAll(async () => {
      for (const s of sessions) s.destroy();
      listener.close();
    });

    const drive = (scenario: string, ...args: string[]) =>
      runGo(['drive', '-v', String(version), '-addr', `127.0.0.1:${port}`, '-scenario', scenario, ...args], 120_000);

    test('100 small echo round trips on one stream', async () => {
      expectGoOk(await drive('echo'));
    });

    test('200 concurrent streams, 1 MiB of random bytes each way, SHA-256 checked', async () => {
      expectGoOk(await drive('exchange', '-streams', '200', '-bytes', String(MiB)));
    });

    test('64 MiB on one stream with random write and read sizes, SHA-256 checked', async () => {
      expectGoOk(await drive('sink', '-bytes', String(64 * MiB)));
    });

    test('streams opened by the TS server are accepted and served by the Go client', async () => {
      const echoes: Array<Promise<void>> = [];
      onSession = (session) => {
        for (let i = 0; i < 5; i++) echoes.push(driveEcho(session, 100));
      };
      expectGoOk(await drive('accept-echo', '-streams', '5'));
      await Promise.all(echoes);
      expect(echoes).toHaveLength(5);
    });

    test('half-close: TS writes then end(); Go reads every byte, then EOF', async () => {
      expectGoOk(await drive('writeclose', '-bytes', String(3 * MiB + 7)));
    });

    test('keep-alive on both sides with short timers: an idle session survives 3× the timeout', async () => {
      config = SHORT_KEEPALIVE;
      expectGoOk(await drive('keepalive-idle', ...GO_SHORT_KEEPALIVE, '-idle', String(3 * 800 + 300)));
      expect(closeErrors.filter((e) => e?.code === 'ERR_SMUX_KEEPALIVE_TIMEOUT')).toEqual([]);
    });

    if (version === 2) {
      test('a stream the Go client never reads blocks only itself', async () => {
        expectGoOk(await drive('stalled'));
      });
    }

    test(`a version-detecting TS server ('auto') serves the Go v${version} client: echo, exchange${version === 2 ? ', stalled' : ''}`, async () => {
      let detected: unknown = 'none';
      config = { version: 'auto' };
      onSession = (session) => session.once('stream', () => (detected = session.version));
      expectGoOk(await drive('echo'));
      expect(detected).toBe(version);
      expectGoOk(await drive('exchange', '-streams', '20', '-bytes', String(MiB)));
      if (version === 2) expectGoOk(await drive('stalled'));
    });

    const kinds = ['badversion', 'badcmd', 'synpayload', 'finpayload', 'noppayload', 'updlen', 'updv1', 'random'];
    test.each(kinds)('a Go peer writing malformed frames (%s) gets its session destroyed; others keep working', async (kind) => {
      const run = await runGo(['malformed', '-v', String(version), '-addr', `127.0.0.1:${port}`, '-kind', kind], 30_000);
      expect(run.results.at(-1)).toMatchObject({ closed: true });
      const error = closeErrors.at(-1);
      expect(error).toBeInstanceOf(SmuxError);
      if (kind !== 'random') expect(error?.code).toBe('ERR_SMUX_PROTOCOL');
      expectGoOk(await drive('echo'));
    });
  });
}

// A reader helper sanity check keeps the command protocol itself honest (it must be able to fail).
describeWithGo('interop command protocol', () => {
  test('StreamReader rejects on EOF before the requested bytes', async () => {
    const go = await startGoServer(['-v', '1']);
    try {
      const session = await connect(go.port, { version: 1 });
      const stream = await session.openStream();
      stream.write(commandHeader(5, 0, 10)); // WRITECLOSE 10 bytes
      await expect(new StreamReader(stream).read(11)).rejects.toThrow('EOF after 10 of 11 bytes');
      session.destroy();
    } finally {
      await go.stop();
    }
  });
});
