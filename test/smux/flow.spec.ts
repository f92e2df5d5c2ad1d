import { afterEach, describe, expect, test } from '@jest/globals';
import { Cmd, INITIAL_PEER_WINDOW, type SmuxChannel, type SmuxStream } from '../../lib/smux/index.js';
import { until } from '../helpers/net.js';
import { cleanup, collect, echo, pair, pattern, quiesced, quiet, rawClientOf, settle } from '../helpers/sessions.js';

afterEach(cleanup);

/** Bytes a receiving stream holds unconsumed: in its Duplex buffer and in its channel. */
function unconsumed(s: SmuxStream): number {
  return s.readableLength + s.channel.readableLength;
}

describe('flow control over TCP', () => {
  test('v1: an unread stream fills the session budget, reading pauses (the other stream stalls too) and resumes when it is read', async () => {
    const budget = 65_536;
    const { client, server, serverSocket } = await pair({ maxReceiveBuffer: budget });
    const accepted = new Map<number, SmuxStream>();
    server.on('stream', (s) => accepted.set(s.id, quiet(s)));
    const stalled = quiet(await client.openStream());
    const other = quiet(await client.openStream());
    other.write('hi');
    await until(() => accepted.size === 2, 5_000, 'both streams accepted');
    const otherGot = collect(accepted.get(other.id)!);
    await until(() => otherGot.bytes === 2, 5_000, 'first message on the other stream');

    const big = pattern(1 << 20, 21);
    stalled.write(big);
    await until(() => server.stats.receiveBudgetLeft <= 0 && serverSocket.isPaused(), 10_000, 'reading paused');
    const held = accepted.get(stalled.id)!;
    // Bounded: budget + one frame (the bucket may overshoot by one) + the Duplex's readable buffer.
    const bound = budget + client.config.maxFrameSize + server.config.streamHighWaterMark;
    expect(unconsumed(held)).toBeLessThanOrEqual(bound);
    expect(server.stats.bytesIn).toBeLessThan(bound + 128 * 1024); // the rest waits in TCP, not in our process

    other.write('stalled?');
    await settle();
    expect(otherGot.bytes).toBe(2); // head-of-line blocking, as Go's v1
    expect(unconsumed(held)).toBeLessThanOrEqual(bound);

    const stalledGot = collect(held);
    await until(() => otherGot.bytes === 10 && stalledGot.bytes === big.length, 10_000, 'both streams after the read');
    expect(otherGot.data().toString()).toBe('histalled?');
    expect(stalledGot.data().equals(big)).toBe(true);
    expect(serverSocket.isPaused()).toBe(false);
  });

  test('v1: destroying a stream that holds the exhausted budget returns its tokens; reading resumes', async () => {
    const budget = 65_536;
    const { client, server, serverSocket } = await pair({ maxReceiveBuffer: budget });
    const accepted = new Map<number, SmuxStream>();
    server.on('stream', (s) => accepted.set(s.id, quiet(s)));
    const stalled = quiet(await client.openStream());
    const other = quiet(await client.openStream());
    other.write('a');
    stalled.write(pattern(1 << 20, 22));
    await until(() => server.stats.receiveBudgetLeft <= 0 && serverSocket.isPaused() && accepted.size === 2, 10_000, 'reading paused');
    const otherGot = collect(accepted.get(other.id)!);
    other.write('b');
    accepted.get(stalled.id)!.destroy();
    expect(server.numStreams).toBe(1);
    // The rest of the stalled stream's data still arrives; it is dropped uncharged.
    await until(() => otherGot.bytes === 2, 10_000, 'the other stream after the destroy');
    expect(otherGot.data().toString()).toBe('ab');
    await until(() => server.stats.receiveBudgetLeft === budget, 10_000, 'all tokens back');
    expect(serverSocket.isPaused()).toBe(false);
  });

  test.each([32, 100])(
    'v2: with %i stalled streams a live stream keeps flowing; each stalled writer blocks only itself; memory bound holds',
    async (n) => {
      const { client, server } = await pair({ version: 2 });
      const liveId = 3 + 2 * n;
      const stalledAt: SmuxStream[] = [];
      server.on('stream', (s) => (s.id === liveId ? echo(s) : stalledAt.push(quiet(s))));
      const payload = pattern(1 << 20, 5);
      const writers: SmuxStream[] = [];
      for (let i = 0; i < n; i++) {
        const s = quiet(await client.openStream());
        s.write(payload); // more than any window: the peer never reads it
        writers.push(s);
      }
      await until(() => stalledAt.length === n, 10_000, 'stalled streams accepted');
      await quiesced(client, server, 20_000);
      for (const w of writers) expect(w.channel.writableLength).toBeGreaterThan(0);
      const c = server.config;
      const memoryBound = n * Math.max(INITIAL_PEER_WINDOW, c.maxStreamBuffer) + c.maxReceiveBuffer;
      const total = (): number => stalledAt.reduce((sum, s) => sum + unconsumed(s), 0);
      const before = stalledAt.map(unconsumed);
      expect(total()).toBeLessThanOrEqual(memoryBound);
      for (const b of before) expect(b).toBeGreaterThan(0);

      const live = quiet(await client.openStream());
      expect(live.id).toBe(liveId);
      const got = collect(live);
      let expected = 0;
      for (let i = 0; i < 200; i++) {
        const msg = Buffer.from(`round trip ${i};`);
        live.write(msg);
        expected += msg.length;
        await until(() => got.bytes === expected, 5_000, `echo ${i}`);
      }
      live.end();
      await until(() => got.ended, 5_000, 'live EOF');

      await quiesced(client, server);
      expect(stalledAt.map(unconsumed)).toEqual(before); // the stalled streams received nothing more
      for (const w of writers) expect(w.channel.writableLength).toBeGreaterThan(0);
      expect(total()).toBeLessThanOrEqual(memoryBound);
    },
  );

  test.each([65_536, 10_000])(
    'v2 UPD as Go (maxStreamBuffer %i): none before the first read, then on it, then every window/2 consumed',
    async (window) => {
      const { raw, server } = await rawClientOf({ version: 2, maxStreamBuffer: window });
      let channel: SmuxChannel | null = null;
      server.on('channel', (c) => (channel = c)); // no handler yet: nothing is consumed
      const upds = (): Array<[number, number]> =>
        raw.framesFor(3, Cmd.UPD).map((f) => [f.payload.readUInt32LE(0), f.payload.readUInt32LE(4)]);
      raw.send(Cmd.SYN, 3);
      raw.send(Cmd.PSH, 3, pattern(100));
      await until(() => channel !== null && channel.readableLength === 100, 5_000, 'held data');
      await settle();
      expect(upds()).toEqual([]);
      const framesOut = server.stats.framesOut;

      let consumed = 0;
      channel!.setHandler({ onData: (d) => void (consumed += d.length), onEnd() {}, onClose() {} });
      await until(() => upds().length === 1, 5_000, 'UPD after the first read');
      expect(upds()).toEqual([[100, window]]);
      expect(server.stats.framesOut).toBe(framesOut + 1);
      const f = raw.framesFor(3, Cmd.UPD)[0];
      expect([f.version, f.payload.length]).toEqual([2, 8]);

      const half = window / 2;
      raw.send(Cmd.PSH, 3, pattern(half - 1, 2)); // one short of the threshold: no UPD
      await until(() => consumed === 100 + half - 1, 5_000, 'consumed');
      await settle(); // a UPD would have been flushed (next tick) and delivered by now
      expect(upds()).toHaveLength(1);
      raw.send(Cmd.PSH, 3, pattern(1, 3));
      await until(() => upds().length === 2, 5_000, 'UPD at window/2');
      expect(upds()[1]).toEqual([100 + half, window]);
      raw.send(Cmd.PSH, 3, pattern(half, 4));
      await until(() => upds().length === 3, 5_000, 'next UPD');
      expect(upds()[2]).toEqual([100 + 2 * half, window]);
      expect(consumed).toBe(100 + 2 * half);
    },
  );
});
