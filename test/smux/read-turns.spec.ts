/**
 * How much a session decodes in one turn of the event loop: at most 128 streams the peer opens (STREAMS_PER_TURN,
 * read-turns.ts); the rest of the read waits for the next turn, so the work those streams started finishes first. A
 * raw Duplex plays the peer and hands the whole burst over as one chunk, as one 64 KiB socket read would.
 */
import { Duplex } from 'node:stream';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Cmd } from '../../lib/smux/constants.js';
import { Session, type SmuxStream } from '../../lib/smux/index.js';
import { holdReading } from '../../lib/smux/session-layer.js';
import { TURN_BUDGET_MS } from '../../lib/smux/read-turns.js';
import { until } from '../helpers/net.js';
import { encodeFrame } from '../helpers/frames.js';
import { collect, type Collected } from '../helpers/sessions.js';

const sessions: Session[] = [];
afterEach(() => {
  for (const session of sessions.splice(0)) session.destroy();
});

/** A server session on a Duplex whose input the test pushes; what the session writes is dropped. */
function serverOnDuplex(): { session: Session; input: Duplex } {
  const input = new Duplex({
    read() {},
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
  const session = Session.server(input, { version: 2, keepAliveDisabled: true });
  sessions.push(session);
  return { session, input };
}

/** `count` one-frame calls (SYN, PSH of `ping <id>`, FIN) on odd ids from 1, in one buffer. */
function burst(count: number): Buffer {
  const frames: Buffer[] = [];
  for (let i = 0, id = 1; i < count; i++, id += 2) {
    frames.push(encodeFrame(2, Cmd.SYN, id), encodeFrame(2, Cmd.PSH, id, Buffer.from(`ping ${id}`)), encodeFrame(2, Cmd.FIN, id));
  }
  return Buffer.concat(frames);
}

describe('streams opened per turn', () => {
  test('a read of 300 new streams opens 128 in its turn, the rest in the next turns, in order, with their data', async () => {
    const { session, input } = serverOnDuplex();
    const opened: number[] = [];
    const got: Collected[] = [];
    let openedInFirstTurn = -1;
    session.on('stream', (stream: SmuxStream) => {
      if (opened.length === 0) setImmediate(() => (openedInFirstTurn = opened.length)); // what the first turn opened
      opened.push(stream.id);
      got.push(collect(stream));
    });
    input.push(burst(300));
    await until(() => opened.length === 300 && got.every((c) => c.ended), 5_000, 'every stream, its data and its FIN');
    expect(openedInFirstTurn).toBe(128);
    expect(opened).toEqual(Array.from({ length: 300 }, (_, i) => 1 + 2 * i));
    expect(got.map((c) => c.data().toString())).toEqual(opened.map((id) => `ping ${id}`));
  });

  test('frames of streams already open are not held back: a read of only data is decoded in its turn', async () => {
    const { session, input } = serverOnDuplex();
    let accepted = 0;
    session.on('stream', () => void accepted++);
    input.push(Buffer.concat(Array.from({ length: 100 }, (_, i) => encodeFrame(2, Cmd.SYN, 1 + 2 * i))));
    await until(() => accepted === 100, 5_000, 'the 100 streams');
    await new Promise((resolve) => setImmediate(resolve)); // a turn of its own (not behind the SYNs' time budget)
    // 100 streams × 4 PSH frames: 400 frames, no SYN among them — decoded as the read arrives.
    const data: Buffer[] = [];
    for (let round = 0; round < 4; round++)
      for (let i = 0; i < 100; i++) data.push(encodeFrame(2, Cmd.PSH, 1 + 2 * i, Buffer.from('data')));
    const before = session.stats.framesIn;
    input.push(Buffer.concat(data));
    await Promise.resolve(); // the same turn
    expect(session.stats.framesIn - before).toBe(400);
  });

  test('the turn limit counts new streams only: 128 SYNs in a read are decoded in its turn, the 129th waits', async () => {
    const { session, input } = serverOnDuplex();
    input.push(encodeFrame(2, Cmd.NOP, 0)); // the session reads as data arrives from here on
    await until(() => session.stats.framesIn === 1, 5_000, 'the NOP');
    await new Promise((resolve) => setImmediate(resolve)); // a turn of its own
    input.push(burst(129));
    await Promise.resolve(); // the same turn
    expect(session.stats.framesIn).toBe(1 + 128 * 3 - 2); // up to the 128th SYN; its PSH and FIN wait with the rest
    await until(() => session.stats.framesIn === 1 + 129 * 3, 5_000, 'the rest of the read');
  });

  test('while it waits for the next turn, what it holds undecoded stays near 64 KiB: the socket is paused past it', async () => {
    const { session, input } = serverOnDuplex();
    session.on('channel', (channel) => channel.setHandler({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined }));
    input.push(encodeFrame(2, Cmd.NOP, 0));
    await until(() => session.stats.framesIn === 1, 5_000, 'the NOP');
    // 40 reads of 1 024 SYNs (8 KiB each) in one go: 40 960 new streams, 320 times the turn's limit.
    for (let read = 0; read < 40; read++) {
      input.push(Buffer.concat(Array.from({ length: 1024 }, (_, i) => encodeFrame(2, Cmd.SYN, 1 + 2 * (read * 1024 + i)))));
    }
    let mostUndecoded = 0;
    for (let turn = 0; turn < 10_000 && session.stats.framesIn < 1 + 40 * 1024; turn++) {
      mostUndecoded = Math.max(mostUndecoded, session.stats.bytesIn - 8 * session.stats.framesIn);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(session.stats.framesIn).toBe(1 + 40 * 1024); // everything, in the end
    expect(mostUndecoded).toBeLessThanOrEqual(64 * 1024 + 8 * 1024); // the bound, plus the read that passed it
  });
});

describe("a turn's time budget", () => {
  /** Keeps the thread busy for `ms`, as a handler's work on a read's frames would. */
  function work(ms: number): void {
    const until = performance.now() + ms;
    while (performance.now() < until);
  }

  /** A session whose one open stream's frames each take `msPerFrame` of work as they arrive. */
  async function busyStream(msPerFrame: number): Promise<{ session: Session; input: Duplex }> {
    const { session, input } = serverOnDuplex();
    session.on('channel', (channel) =>
      channel.setHandler({ onData: () => work(msPerFrame), onEnd: () => undefined, onClose: () => undefined }),
    );
    input.push(encodeFrame(2, Cmd.SYN, 1));
    await until(() => session.stats.framesIn === 1, 5_000, 'the SYN');
    await new Promise((resolve) => setImmediate(resolve)); // a new turn from here
    return { session, input };
  }

  test('a read arriving after the reads of its turn took longer than the budget waits for the next turn', async () => {
    const { session, input } = await busyStream(TURN_BUDGET_MS + 1);
    input.push(encodeFrame(2, Cmd.PSH, 1, Buffer.from('first')));
    input.push(encodeFrame(2, Cmd.PSH, 1, Buffer.from('second'))); // the same turn, past the budget
    input.push(encodeFrame(2, Cmd.PSH, 1, Buffer.from('third')));
    await Promise.resolve();
    expect(session.stats.framesIn).toBe(2); // the SYN and the first read only
    await new Promise((resolve) => setImmediate(resolve));
    await until(() => session.stats.framesIn === 4, 5_000, 'the held reads, next turn');
  });

  test('reads each in a turn of its own are decoded as they arrive, however long the last one took', async () => {
    const { session, input } = await busyStream(TURN_BUDGET_MS + 1);
    for (let read = 0; read < 3; read++) {
      input.push(encodeFrame(2, Cmd.PSH, 1, Buffer.from('slow')));
      await Promise.resolve();
      expect(session.stats.framesIn).toBe(2 + read);
      await new Promise((resolve) => setImmediate(resolve));
    }
  });
});

describe("the layer's hold (holdReading)", () => {
  /** The duplex's readable side paused by the session: Node's flag for it. */
  const socketPaused = (input: Duplex): boolean => input.isPaused();

  test('nothing is decoded while held; once released (not inside the call that let go) decoding and the socket resume', async () => {
    const { session, input } = serverOnDuplex();
    const opened: number[] = [];
    session.on('stream', (stream: SmuxStream) => void opened.push(stream.id));
    holdReading(session, true);
    input.push(burst(3));
    await new Promise((resolve) => setImmediate(resolve));
    expect(opened).toEqual([]);
    expect(socketPaused(input)).toBe(true);
    holdReading(session, false);
    expect(opened).toEqual([]); // not inside the call that let go
    await until(() => opened.length === 3, 5_000, 'the three streams');
    expect(opened).toEqual([1, 3, 5]);
    expect(socketPaused(input)).toBe(false);
  });

  test('held again by what the resumed decoding started: the socket stays paused (it kept flowing before)', async () => {
    const { session, input } = serverOnDuplex();
    const opened: number[] = [];
    session.on('stream', (stream: SmuxStream) => {
      opened.push(stream.id);
      if (stream.id !== 5) holdReading(session, true); // the layer is full after this one: the rest of the read waits
    });
    input.push(burst(3)); // one read: streams 3 and 5 stay in the decoder
    await until(() => opened.length === 1, 5_000, 'the first stream');
    holdReading(session, false); // decodes stream 3 from what is buffered, which holds again
    await until(() => opened.length === 2, 5_000, 'the second stream');
    await new Promise((resolve) => setImmediate(resolve));
    expect(opened).toEqual([1, 3]);
    expect(socketPaused(input)).toBe(true);
  });

  test('the hold waits while a stream of our own is open (its answer comes this way), but for standing ones', async () => {
    const { session, input } = serverOnDuplex();
    const control = session.openChannel(); // ours, and it stays open: a dialled connection's control stream
    const opened: number[] = [];
    session.on('stream', (stream: SmuxStream) => void opened.push(stream.id));
    holdReading(session, true, 1);
    input.push(burst(1));
    await new Promise((resolve) => setImmediate(resolve));
    expect(opened).toEqual([]); // held: the one stream of ours is a standing one
    const call = session.openChannel(); // a call back to the peer: reading resumes for its answer
    await new Promise((resolve) => setImmediate(resolve));
    expect(opened).toEqual([1]);
    call.destroy(); // answered: the hold applies again
    await until(() => session.numStreams - session.numPeerStreams === 1, 5_000, 'the call stream to go');
    input.push(burst(1));
    await new Promise((resolve) => setImmediate(resolve));
    expect(opened).toEqual([1]);
    control.destroy();
  });
});
