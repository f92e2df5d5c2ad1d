import { afterEach, describe, expect, test } from '@jest/globals';
import type net from 'node:net';
import { Cmd, DEFAULT_CONFIG, INITIAL_PEER_WINDOW, Session, type SmuxChannel, type SmuxConfig } from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { flush as turns, memoryPair } from '../helpers/memory-pair.js';
import { RawPeer } from '../helpers/sessions.js';

/*
 * Receive-window auto-tuning (lib/smux/window-tuner.ts) on protocol state: a server session on one end of an
 * in-memory pair, a raw v2 peer on the other playing a compliant bulk sender, time on a fake clock. Each
 * "round trip" the peer sends all its window allows, the data travels 1 ms, the server's reader consumes (or
 * not), its UPDs travel 1 ms back — a 2 ms round trip the server measures from its own UPDs.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const FRAME = 32 * KiB;

const sessions: Session[] = [];
const pairs: Array<{ server: Session; raw: RawPeer }> = [];
afterEach(() => {
  pairs.length = 0;
  for (const s of sessions.splice(0)) s.destroy();
});

/**
 * Lets queued work run until each server has decoded every frame its raw peer sent, then what it wrote in return. Not
 * a fixed number of turns: a read that takes longer than a session's real-time budget (2 ms, read-turns.ts) is decoded
 * over later turns, and a fake clock advanced meanwhile split one instant in two — in a loaded CI run, the windows
 * of a peer that ignores them grew.
 */
async function flush(): Promise<void> {
  await turns();
  for (let i = 0; i < 1_000 && pairs.some(({ server, raw }) => server.stats.framesIn < raw.framesSent); i++) await turns(1);
  await turns();
}

/** A server session (the tuning side) on a fake clock, with a raw peer as its client. */
function setup(config: Partial<SmuxConfig> = {}): { server: Session; raw: RawPeer; clock: FakeClock; channels: SmuxChannel[] } {
  const clock = new FakeClock();
  const [peerEnd, serverEnd] = memoryPair();
  const server = Session.server(serverEnd, {
    version: 2,
    keepAliveDisabled: true,
    clock,
    maxStreamBuffer: 64 * KiB,
    maxStreamWindow: 1 * MiB,
    ...config,
  });
  sessions.push(server);
  const channels: SmuxChannel[] = [];
  server.on('channel', (channel) => channels.push(channel));
  const raw = new RawPeer(peerEnd as unknown as net.Socket, 2);
  pairs.push({ server, raw });
  return { server, raw, clock, channels };
}

/** A compliant v2 bulk sender on the raw peer: it keeps within the last window it saw, as Go's writeV2 does. */
class BulkSender {
  sent = 0;
  consumed = 0;
  window = INITIAL_PEER_WINDOW;
  /** PSH payload size. */
  frame = FRAME;
  #seen = 0;

  constructor(
    readonly raw: RawPeer,
    readonly id: number,
  ) {
    raw.send(Cmd.SYN, id);
  }

  /** The windows the receiver advertised so far, in order. */
  get advertised(): number[] {
    return this.raw.framesFor(this.id, Cmd.UPD).map((f) => f.payload.readUInt32LE(4));
  }

  /** Takes in the UPDs that arrived: Go overwrites its peerConsumed and peerWindow with each. */
  seeUpdates(): void {
    const upds = this.raw.framesFor(this.id, Cmd.UPD);
    for (const f of upds.slice(this.#seen)) {
      this.consumed = f.payload.readUInt32LE(0);
      this.window = f.payload.readUInt32LE(4);
    }
    this.#seen = upds.length;
  }

  /** Sends what the window allows (at most `limit`), in frames of `frame` bytes. */
  fill(limit = Number.POSITIVE_INFINITY): number {
    let room = Math.min(this.consumed + this.window - this.sent, limit);
    let n = 0;
    while (room > 0) {
      const size = Math.min(this.frame, room);
      this.raw.send(Cmd.PSH, this.id, Buffer.alloc(size, 7));
      this.sent += size;
      room -= size;
      n += size;
    }
    return n;
  }
}

/** Consumes everything at once: the application keeps up. */
function reader(channel: SmuxChannel): { bytes: number } {
  const got = { bytes: 0 };
  channel.setHandler({ onData: (d) => (got.bytes += d.length), onEnd: () => channel.end(), onClose: () => undefined });
  return got;
}

/** One round trip of a window-bound transfer on each sender: data out (1 ms), the server reads, UPDs back (1 ms). */
async function roundTrip(clock: FakeClock, senders: BulkSender[]): Promise<void> {
  clock.advance(1);
  for (const s of senders) s.fill();
  await flush();
  clock.advance(1);
  for (const s of senders) s.seeUpdates();
}

describe('receive-window auto-tuning (v2, maxStreamWindow)', () => {
  test('a window-bound stream whose reader keeps up doubles its advertised window up to maxStreamWindow; the peer gets more in flight', async () => {
    const { server, raw, clock, channels } = setup();
    const sender = new BulkSender(raw, 3);
    await flush();
    const got = reader(channels[0]);
    for (let i = 0; i < 20; i++) await roundTrip(clock, [sender]);
    const windows = sender.advertised;
    expect(windows[0]).toBe(64 * KiB); // Go's window first
    expect(windows.at(-1)).toBe(1 * MiB);
    // Doubling, never shrinking, never past the ceiling.
    const distinct = [...new Set(windows)];
    expect(distinct).toEqual([64 * KiB, 128 * KiB, 256 * KiB, 512 * KiB, 1 * MiB]);
    for (let i = 1; i < windows.length; i++) expect(windows[i]).toBeGreaterThanOrEqual(windows[i - 1]);
    expect(server.stats.receiveWindowGrowth).toBe(1 * MiB - 64 * KiB);
    expect(server.stats.receiveBudgetLeft).toBe(4 * MiB - (1 * MiB - 64 * KiB));
    // What the peer moves per round trip follows the window: one round now carries a whole MiB.
    const before = got.bytes;
    await roundTrip(clock, [sender]);
    expect(got.bytes - before).toBeGreaterThanOrEqual(1 * MiB - 64 * KiB);
  });

  test('off by default (Go): the window stays maxStreamBuffer however window-bound the stream is', async () => {
    const { server, raw, clock, channels } = setup({ maxStreamWindow: DEFAULT_CONFIG.maxStreamWindow });
    const sender = new BulkSender(raw, 3);
    await flush();
    reader(channels[0]);
    for (let i = 0; i < 20; i++) await roundTrip(clock, [sender]);
    expect(new Set(sender.advertised)).toEqual(new Set([64 * KiB]));
    expect(server.stats.receiveWindowGrowth).toBe(0);
  });

  test('a slow reader never grows its window, however fast the peer fills it; the same stream grows once its reader keeps up', async () => {
    const { server, raw, clock, channels } = setup();
    const sender = new BulkSender(raw, 3);
    await flush();
    const channel = channels[0];
    let allowance = 0;
    let consumed = 0;
    channel.setHandler({
      onData: (d) => {
        consumed += d.length;
        allowance -= d.length;
        if (allowance <= 0) channel.pause(); // the application stops taking data
      },
      onEnd: () => undefined,
      onClose: () => undefined,
    });
    // Steady and slow: 16 KiB per 10 ms while the peer keeps the window full every 2 ms.
    for (let i = 0; i < 60; i++) {
      await roundTrip(clock, [sender]);
      if (i % 5 === 0) {
        allowance = 16 * KiB;
        channel.resume();
        await flush();
      }
    }
    // In bursts: nothing for 200 ms, then the whole backlog at once (data that waited, not a fast pipe).
    for (let i = 0; i < 6; i++) {
      await roundTrip(clock, [sender]);
      clock.advance(200);
      allowance = Number.POSITIVE_INFINITY;
      channel.resume();
      await flush();
      channel.pause();
      allowance = 0;
    }
    expect(consumed).toBeGreaterThan(512 * KiB); // it did read, and sent UPDs
    expect(new Set(sender.advertised)).toEqual(new Set([64 * KiB]));
    expect(server.stats.receiveWindowGrowth).toBe(0);

    // The reader speeds up: from now on every byte is taken as it arrives.
    allowance = Number.POSITIVE_INFINITY;
    channel.resume();
    for (let i = 0; i < 20; i++) await roundTrip(clock, [sender]);
    expect(sender.advertised.at(-1)).toBe(1 * MiB);
  });

  test('a trickle alone (a sender slower than its window) measures no round trip and does not grow', async () => {
    const { server, raw, clock, channels } = setup();
    const sender = new BulkSender(raw, 3);
    await flush();
    const got = reader(channels[0]);
    // 8 KiB per 2 ms round trip: a window of 64 KiB is 8 times what this stream needs. Timed from our UPDs, its
    // bytes past each limit come 8 ms later — the time it takes to send the rest of a window, not a round trip.
    for (let i = 0; i < 200; i++) {
      clock.advance(1);
      sender.fill(8 * KiB);
      await flush();
      clock.advance(1);
      sender.seeUpdates();
    }
    expect(got.bytes).toBe(200 * 8 * KiB);
    expect(new Set(sender.advertised)).toEqual(new Set([64 * KiB]));
    expect(server.stats.receiveWindowGrowth).toBe(0);
  });

  test('a stream whose sender is not window-bound (a trickle) does not grow, while a bulk stream beside it does', async () => {
    const { server, raw, clock, channels } = setup();
    const trickle = new BulkSender(raw, 3);
    const bulk = new BulkSender(raw, 5);
    await flush();
    const [got] = channels.map(reader);
    // The trickle moves 8 KiB per 2 ms round trip: a 64 KiB window is 8 times what it needs. The bulk stream
    // beside it is window-bound, so the session knows the round trip.
    for (let i = 0; i < 200; i++) {
      clock.advance(1);
      trickle.fill(8 * KiB);
      bulk.fill();
      await flush();
      clock.advance(1);
      trickle.seeUpdates();
      bulk.seeUpdates();
    }
    expect(got.bytes).toBe(200 * 8 * KiB);
    expect(new Set(trickle.advertised)).toEqual(new Set([64 * KiB]));
    expect(bulk.advertised.at(-1)).toBe(1 * MiB);
    expect(server.stats.receiveWindowGrowth).toBe(1 * MiB - 64 * KiB);
  });

  test('growth across many streams stays within half of maxReceiveBuffer, and every stream keeps flowing', async () => {
    const budget = 1 * MiB;
    const { server, raw, clock, channels } = setup({ maxReceiveBuffer: budget });
    const senders = Array.from({ length: 8 }, (_, i) => new BulkSender(raw, 3 + 2 * i));
    await flush();
    const readers = channels.map(reader);
    for (let i = 0; i < 30; i++) {
      await roundTrip(clock, senders);
      expect(server.stats.receiveWindowGrowth).toBeLessThanOrEqual(budget / 2);
      expect(server.stats.receiveBudgetLeft).toBeGreaterThanOrEqual(budget / 2);
    }
    const grown = senders.map((s) => s.advertised.at(-1)! - 64 * KiB);
    expect(grown.reduce((a, b) => a + b, 0)).toBe(server.stats.receiveWindowGrowth);
    expect(server.stats.receiveWindowGrowth).toBeGreaterThan(budget / 4); // it did grow, up to the cap
    // The budget, not maxStreamWindow, stopped them: each would have doubled on to 1 MiB alone.
    expect(Math.max(...senders.map((s) => s.advertised.at(-1)!))).toBeLessThan(1 * MiB);
    for (const r of readers) expect(r.bytes).toBeGreaterThan(30 * 64 * KiB); // none starved
  });

  test.each(['closed by both FINs', 'destroyed', 'session destroyed'] as const)(
    "a grown stream's growth goes back to the budget when it is %s",
    async (how) => {
      const { server, raw, clock, channels } = setup();
      const sender = new BulkSender(raw, 3);
      await flush();
      reader(channels[0]);
      for (let i = 0; i < 20; i++) await roundTrip(clock, [sender]);
      expect(server.stats.receiveWindowGrowth).toBe(1 * MiB - 64 * KiB);
      if (how === 'closed by both FINs') {
        raw.send(Cmd.FIN, 3); // the reader's onEnd answers with our FIN
      } else if (how === 'destroyed') {
        channels[0].destroy();
      } else {
        server.destroy();
      }
      await flush();
      expect(channels[0].isClosed).toBe(true);
      expect(server.stats.receiveWindowGrowth).toBe(0);
      expect(server.stats.receiveBudgetLeft).toBe(4 * MiB);
    },
  );

  test('a stream the budget was lent to does not keep it from others once closed: a new stream grows in its place', async () => {
    const budget = 1 * MiB;
    const { server, raw, clock, channels } = setup({ maxReceiveBuffer: budget });
    const first = new BulkSender(raw, 3);
    await flush();
    reader(channels[0]);
    for (let i = 0; i < 20; i++) await roundTrip(clock, [first]);
    expect(server.stats.receiveWindowGrowth).toBe(512 * KiB - 64 * KiB); // 1 MiB would pass half the budget
    raw.send(Cmd.FIN, 3);
    await flush();
    expect(server.stats.receiveWindowGrowth).toBe(0);
    const second = new BulkSender(raw, 5);
    await flush();
    reader(channels[1]);
    for (let i = 0; i < 20; i++) await roundTrip(clock, [second]);
    expect(second.advertised.at(-1)).toBe(512 * KiB);
  });

  test('a peer that ignores windows gives no round-trip sample, so its stream never grows', async () => {
    const { server, raw, clock, channels } = setup();
    raw.send(Cmd.SYN, 3);
    await flush();
    const got = reader(channels[0]);
    let sent = 0;
    for (let i = 0; i < 40; i++) {
      clock.advance(1);
      // Always a whole window ahead of what the receiver allowed: bytes past every limit before any UPD. In one write,
      // read as one: 12 writes were decoded over two turns of the event loop whenever the first reads took more than a
      // read's 2 ms budget of real time (read-turns.ts) on a loaded machine — and a UPD encoded between them, before
      // the bytes past its limit were decoded, timed a round trip for this peer (a red CI run).
      raw.sendMany(12, Cmd.PSH, 3, Buffer.alloc(FRAME));
      sent += 12 * FRAME;
      await flush();
      clock.advance(1);
    }
    expect(got.bytes).toBe(sent);
    expect(new Set(raw.framesFor(3, Cmd.UPD).map((f) => f.payload.readUInt32LE(4)))).toEqual(new Set([64 * KiB]));
    expect(server.stats.receiveWindowGrowth).toBe(0);
  });

  describe('contendedStreamWindow: a smaller window while other streams receive data', () => {
    /** Small messages on other streams, as small calls beside a bulk transfer: one PSH each per round trip. */
    function smallCalls(raw: RawPeer, ids: number[]): () => void {
      for (const id of ids) raw.send(Cmd.SYN, id);
      return () => {
        for (const id of ids) raw.send(Cmd.PSH, id, Buffer.alloc(64, 1));
      };
    }

    test('a bulk stream beside small calls advertises the contended window, with UPDs every half of it; alone again, it gets its grown window back', async () => {
      const { server, raw, clock, channels } = setup({ contendedStreamWindow: 32 * KiB });
      const bulk = new BulkSender(raw, 3);
      await flush();
      const got = reader(channels[0]);
      // Alone first: it grows as before.
      for (let i = 0; i < 20; i++) await roundTrip(clock, [bulk]);
      expect(bulk.advertised.at(-1)).toBe(1 * MiB);
      const grown = server.stats.receiveWindowGrowth;
      expect(grown).toBe(1 * MiB - 64 * KiB);

      // Small calls start on other streams: within an epoch the bulk stream's window drops to 32 KiB.
      bulk.frame = 8 * KiB; // frames smaller than half the window, so the UPD cadence shows
      const tick = smallCalls(raw, [5, 7, 9]);
      await flush();
      channels.slice(1).forEach(reader);
      const updsBefore = bulk.advertised.length;
      for (let i = 0; i < 40; i++) {
        tick();
        await roundTrip(clock, [bulk]);
      }
      const contended = bulk.advertised.slice(updsBefore);
      expect(contended.at(-1)).toBe(32 * KiB);
      expect(contended.filter((w) => w === 32 * KiB).length).toBeGreaterThan(20);
      // The peer keeps to it: what one round trip moves is the contended window now, and UPDs come every 16 KiB.
      const before = got.bytes;
      tick();
      await roundTrip(clock, [bulk]);
      expect(got.bytes - before).toBeLessThanOrEqual(32 * KiB);
      expect(got.bytes - before).toBeGreaterThan(0);
      // Frame by frame, a UPD goes out every 16 KiB consumed (half the contended window; it was every 32 KiB, half of
      // maxStreamBuffer), so the peer has more to send before the window runs out.
      const updsBefore2 = raw.framesFor(3, Cmd.UPD).length;
      for (let i = 0; i < 8; i++) {
        clock.advance(1);
        bulk.seeUpdates();
        tick();
        expect(bulk.fill(8 * KiB)).toBe(8 * KiB);
        await flush();
      }
      expect(raw.framesFor(3, Cmd.UPD).length - updsBefore2).toBe(4);
      // The growth stays reserved (bytes sent under the larger window may still arrive): the bound is unchanged.
      expect(server.stats.receiveWindowGrowth).toBe(grown);

      // The small calls stop: the full window comes back once a full window (1 MiB, 32 round trips at 32 KiB) was
      // consumed with nothing else arriving — not before — and without growing again.
      for (let i = 0; i < 30; i++) await roundTrip(clock, [bulk]);
      expect(bulk.advertised.at(-1)).toBe(32 * KiB);
      for (let i = 0; i < 10; i++) await roundTrip(clock, [bulk]);
      expect(bulk.advertised.at(-1)).toBe(1 * MiB);
      expect(server.stats.receiveWindowGrowth).toBe(grown);
    });

    test('without auto-tuning (maxStreamWindow 0) the limit still applies below maxStreamBuffer', async () => {
      const { server, raw, clock, channels } = setup({ maxStreamWindow: 0, contendedStreamWindow: 16 * KiB });
      const bulk = new BulkSender(raw, 3);
      const tick = smallCalls(raw, [5]);
      await flush();
      channels.forEach(reader);
      for (let i = 0; i < 30; i++) {
        tick();
        await roundTrip(clock, [bulk]);
      }
      expect(new Set(bulk.advertised)).toEqual(new Set([64 * KiB, 16 * KiB]));
      expect(bulk.advertised.at(-1)).toBe(16 * KiB);
      expect(server.stats.receiveWindowGrowth).toBe(0);
      for (let i = 0; i < 10; i++) await roundTrip(clock, [bulk]);
      expect(bulk.advertised.at(-1)).toBe(64 * KiB);
    });

    test('two bulk streams contend with each other: both at the contended window', async () => {
      const { raw, clock, channels } = setup({ contendedStreamWindow: 32 * KiB });
      const a = new BulkSender(raw, 3);
      const b = new BulkSender(raw, 5);
      await flush();
      channels.forEach(reader);
      for (let i = 0; i < 30; i++) await roundTrip(clock, [a, b]);
      expect(a.advertised.at(-1)).toBe(32 * KiB);
      expect(b.advertised.at(-1)).toBe(32 * KiB);
    });

    test('off by default: small calls beside a bulk stream do not limit its window', async () => {
      const { raw, clock, channels } = setup();
      const bulk = new BulkSender(raw, 3);
      const tick = smallCalls(raw, [5, 7]);
      await flush();
      channels.forEach(reader);
      for (let i = 0; i < 20; i++) {
        tick();
        await roundTrip(clock, [bulk]);
      }
      expect(bulk.advertised.at(-1)).toBe(1 * MiB);
    });
  });
});
