import { afterEach, describe, expect, test } from '@jest/globals';
import type net from 'node:net';
import { Cmd, INITIAL_PEER_WINDOW, Session, type SmuxChannel, type SmuxConfig, type SmuxError } from '../../lib/smux/index.js';
import { encodeFrame } from '../helpers/frames.js';
import { flush, memoryPair } from '../helpers/memory-pair.js';
import { RawPeer } from '../helpers/sessions.js';

/*
 * A v2 peer that ignores a stream's window (docs/NOTES.md, the hostile-peer trial's item 6): the bytes it sends past
 * what we granted are held while the stream is paused and charged to the session's receive budget; once they spend
 * it, the session ends with ERR_SMUX_PROTOCOL instead of pausing its reading for good (session.ts #windowOverrun).
 * A server session on one end of an in-memory pair, a raw v2 client on the other.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const TWO_32 = 2 ** 32;

const sessions: Session[] = [];
afterEach(() => {
  for (const s of sessions.splice(0)) s.destroy();
});

interface Setup {
  server: Session;
  raw: RawPeer;
  /** The server's channels, in the order the peer opened them. */
  channels: SmuxChannel[];
  /** What each channel was closed with (by stream id); absent while open. */
  closedWith: Map<number, SmuxError | undefined>;
  /** Bytes each channel consumed (by stream id). */
  consumed: Map<number, number>;
}

/** A server session whose channels consume what arrives (until paused), with a raw client of `version`. */
function setup(config: Partial<SmuxConfig>, version: 1 | 2 = 2): Setup {
  const [peerEnd, serverEnd] = memoryPair();
  const server = Session.server(serverEnd, { version, keepAliveDisabled: true, ...config });
  sessions.push(server);
  const s: Setup = {
    server,
    raw: new RawPeer(peerEnd as unknown as net.Socket, version),
    channels: [],
    closedWith: new Map(),
    consumed: new Map(),
  };
  server.on('channel', (channel) => {
    s.channels.push(channel);
    s.consumed.set(channel.id, 0);
    channel.setHandler({
      onData: (d) => void s.consumed.set(channel.id, s.consumed.get(channel.id)! + d.length),
      onEnd: () => undefined,
      onClose: (error) => void s.closedWith.set(channel.id, error),
    });
  });
  return s;
}

/** Lets the server decode everything the raw peer sent, and the raw peer read what came back. */
async function settle(s: Setup): Promise<void> {
  await flush();
  for (let i = 0; i < 1_000 && !s.server.isClosed && s.server.stats.framesIn < s.raw.framesSent; i++) await flush(1);
  await flush();
}

/** `bytes` of PSH on stream `id` in frames of at most `frame` bytes. */
function push(raw: RawPeer, id: number, bytes: number, frame = 32 * KiB): void {
  for (let left = bytes; left > 0; left -= frame) raw.send(Cmd.PSH, id, Buffer.alloc(Math.min(frame, left), 5));
}

/** The numbers of an overrun error's message: bytes received, past the grant, the grant. */
function overrunOf(error: SmuxError | null | undefined): { received: number; over: number; granted: number } | null {
  const m = / sent (\d+) bytes, (\d+) past the (\d+) granted/.exec(error?.message ?? '');
  return m === null ? null : { received: Number(m[1]), over: Number(m[2]), granted: Number(m[3]) };
}

/**
 * The grant our UPDs gave the peer, by the rule of flow-control.ts `extendGrant`, recomputed from the UPD frames the
 * peer received: the furthest of every `consumed + max(window, previous window)`, from 262 144 (before any UPD).
 */
function grantFromUpds(raw: RawPeer, id: number): number {
  let granted = INITIAL_PEER_WINDOW;
  let previous = INITIAL_PEER_WINDOW;
  for (const f of raw.framesFor(id, Cmd.UPD)) {
    const consumed = f.payload.readUInt32LE(0);
    const window = f.payload.readUInt32LE(4);
    const limit = (consumed + Math.max(window, previous)) % TWO_32;
    if (((limit - granted) | 0) > 0) granted = limit;
    previous = window;
  }
  return granted;
}

describe('a v2 peer that ignores a paused stream’s window', () => {
  const budget = 64 * KiB; // maxReceiveBuffer: what may be charged before the session ends

  test('sending up to the 262 144 bytes granted before any UPD costs nothing; past them, the session ends when they spend the budget, naming the stream, the bytes and the grant', async () => {
    const s = setup({ maxReceiveBuffer: budget, maxStreamBuffer: 64 * KiB });
    s.raw.send(Cmd.SYN, 3);
    await settle(s);
    s.channels[0].pause(); // the application stopped reading: no UPD goes out
    push(s.raw, 3, INITIAL_PEER_WINDOW);
    await settle(s);
    expect(s.channels[0].readableLength).toBe(INITIAL_PEER_WINDOW);
    expect(s.server.stats.receiveBudgetLeft).toBe(budget); // a stream's grant is never charged to the budget
    expect(s.server.isClosed).toBe(false);

    push(s.raw, 3, budget - 1); // past the grant: charged, one byte of budget left
    await settle(s);
    expect({ closed: s.server.isClosed, left: s.server.stats.receiveBudgetLeft }).toEqual({ closed: false, left: 1 });

    push(s.raw, 3, 1); // the budget is spent: before, reading paused here for good
    await settle(s);
    expect(s.server.isClosed).toBe(true);
    const error = s.server.error;
    expect(error?.code).toBe('ERR_SMUX_PROTOCOL');
    expect(error?.message).toContain('stream 3');
    expect(overrunOf(error)).toEqual({ received: INITIAL_PEER_WINDOW + budget, over: budget, granted: INITIAL_PEER_WINDOW });
    expect(s.closedWith.get(3)).toBe(error); // the stream settles with the session's error
    expect(s.channels[0].readableLength).toBe(0); // what it held is let go at once
    expect(s.raw.closed || s.raw.ended).toBe(true);
  });

  test('v1 has no windows: the same bytes only pause reading until the stream is read, as Go', async () => {
    const s = setup({ maxReceiveBuffer: budget }, 1);
    s.raw.send(Cmd.SYN, 3);
    await settle(s);
    s.channels[0].pause();
    push(s.raw, 3, budget + 32 * KiB);
    await settle(s);
    expect(s.server.stats.receiveBudgetLeft).toBeLessThanOrEqual(0);
    expect(s.server.isClosed).toBe(false);
    s.channels[0].resume();
    await settle(s);
    expect(s.consumed.get(3)).toBe(budget + 32 * KiB);
    expect(s.server.stats.receiveBudgetLeft).toBe(budget);
  });

  test('the grant follows the UPDs we send: a peer within it holds nothing of the budget, past it the error names the grant', async () => {
    const s = setup({ maxReceiveBuffer: budget, maxStreamBuffer: 64 * KiB });
    s.raw.send(Cmd.SYN, 3);
    await settle(s);
    // A compliant sender (Go's writeV2) while the stream is read: 600 KiB, each time what the last UPD allows.
    let sent = 0;
    let granted = INITIAL_PEER_WINDOW;
    while (sent < 600 * KiB) {
      const n = Math.min(granted - sent, 600 * KiB - sent);
      push(s.raw, 3, n, 16 * KiB);
      sent += n;
      await settle(s);
      granted = grantFromUpds(s.raw, 3);
    }
    expect(s.consumed.get(3)).toBe(sent);
    expect(granted).toBeGreaterThan(sent); // grown well past the first 262 144 by the UPDs
    s.channels[0].pause();
    push(s.raw, 3, granted - sent, 16 * KiB); // exactly what the UPDs allow, unread
    await settle(s);
    expect({ closed: s.server.isClosed, left: s.server.stats.receiveBudgetLeft }).toEqual({ closed: false, left: budget });

    push(s.raw, 3, 512 * KiB); // ignoring the window
    await settle(s);
    expect(s.server.error?.code).toBe('ERR_SMUX_PROTOCOL');
    const overrun = overrunOf(s.server.error);
    expect(overrun?.granted).toBe(granted);
    expect(overrun!.received - overrun!.granted).toBe(overrun!.over);
    expect(overrun!.over).toBeGreaterThan(0);
  });

  test('the stream that went furthest past its grant is named; a stream within its grant is not the cause', async () => {
    const s = setup({ maxReceiveBuffer: budget, maxStreamBuffer: 64 * KiB });
    s.raw.send(Cmd.SYN, 3);
    s.raw.send(Cmd.SYN, 5);
    await settle(s);
    for (const c of s.channels) c.pause();
    push(s.raw, 5, INITIAL_PEER_WINDOW + budget / 2); // past its grant by half the budget
    push(s.raw, 3, INITIAL_PEER_WINDOW); // within its grant
    await settle(s);
    expect(s.server.isClosed).toBe(false);
    push(s.raw, 5, budget / 2);
    await settle(s);
    expect(s.server.error?.message).toContain('stream 5');
    expect(overrunOf(s.server.error)?.over).toBe(budget);
    expect([s.closedWith.get(3), s.closedWith.get(5)]).toEqual([s.server.error, s.server.error]);
  });
});

describe('excess spread over streams, none half the budget past its grant (as Go’s concurrent writers overshoot)', () => {
  test('reading pauses as before, and resumes once the application reads', async () => {
    const budget = 96 * KiB;
    const s = setup({ maxReceiveBuffer: budget, maxStreamBuffer: 64 * KiB });
    for (const id of [3, 5, 7]) s.raw.send(Cmd.SYN, id);
    await settle(s);
    for (const c of s.channels) c.pause();
    // Each stream 32 KiB past its grant (a third of the budget each): together they spend it.
    for (const id of [3, 5, 7]) push(s.raw, id, INITIAL_PEER_WINDOW + 32 * KiB);
    await settle(s);
    expect(s.server.stats.receiveBudgetLeft).toBeLessThanOrEqual(0);
    expect(s.server.isClosed).toBe(false); // one stream at half the budget past its grant would have ended it
    for (const c of s.channels) c.resume();
    await settle(s);
    expect([3, 5, 7].map((id) => s.consumed.get(id))).toEqual([3, 5, 7].map(() => INITIAL_PEER_WINDOW + 32 * KiB));
    expect(s.server.isClosed).toBe(false);
  });
});

describe('uint32 wrap-around (Go Test8GBTransferV2 crosses 2^32)', () => {
  test('a compliant transfer past 2^32 bytes never ends the session, paused across the wrap or not; a peer past its grant there is still caught', async () => {
    const window = 16 * MiB; // UPDs every 8 MiB: the 4 GiB take 512 round trips
    const s = setup({ maxReceiveBuffer: window, maxStreamBuffer: window });
    s.raw.send(Cmd.SYN, 3);
    await settle(s);
    const payload = encodeFrame(2, Cmd.PSH, 3, Buffer.alloc(0xffff, 9)); // one frame object, written again and again
    let sent = 0;
    let frames = 0;
    const send = (bytes: number): void => {
      for (let left = bytes; left > 0;) {
        const n = Math.min(left, 0xffff);
        if (n === 0xffff) s.raw.sendRaw(payload);
        else s.raw.sendRaw(encodeFrame(2, Cmd.PSH, 3, Buffer.alloc(n, 9)));
        frames++;
        left -= n;
        sent += n;
      }
      s.raw.framesSent = frames + 1; // the SYN
    };
    const target = TWO_32 - 5 * MiB; // then the grant (numRead + 16 MiB) lies past 2^32
    let granted = INITIAL_PEER_WINDOW;
    while (sent < target) {
      send(Math.min(((granted - sent) >>> 0) % TWO_32, target - sent));
      await settle(s);
      const next = grantFromUpds(s.raw, 3);
      if (next === granted && sent < target) throw new Error(`no UPD after ${sent} bytes: ${String(s.server.error)}`);
      granted = next;
    }
    expect(s.consumed.get(3)).toBe(target);
    expect(granted).toBeLessThan(window); // it wrapped: numRead + window mod 2^32
    // Paused at the wrap: the peer sends all its grant — past 2^32 in its count — and nothing is charged.
    s.channels[0].pause();
    send(((granted - sent) >>> 0) % TWO_32);
    await settle(s);
    expect(sent).toBeGreaterThan(TWO_32);
    expect({ closed: s.server.isClosed, left: s.server.stats.receiveBudgetLeft }).toEqual({ closed: false, left: window });
    // Read on across the wrap: still nothing to object to.
    s.channels[0].resume();
    await settle(s);
    expect(s.consumed.get(3)).toBe(sent);
    expect(s.server.isClosed).toBe(false);

    // Past the grant, across the wrap of the byte count: still caught, with the numbers modulo 2^32.
    granted = grantFromUpds(s.raw, 3);
    s.channels[0].pause();
    send(((granted - sent) >>> 0) + 2 * window); // more than the budget past the grant, whatever the allowance holds
    await settle(s);
    expect(s.server.error?.code).toBe('ERR_SMUX_PROTOCOL');
    const overrun = overrunOf(s.server.error)!;
    expect(overrun.granted).toBe(granted);
    expect(overrun.over).toBeGreaterThan(0);
    expect((overrun.granted + overrun.over) % TWO_32).toBe(overrun.received);
  }, 60_000);
});
