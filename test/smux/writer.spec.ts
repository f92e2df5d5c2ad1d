import { Writable } from 'node:stream';
import { describe, expect, test } from '@jest/globals';
import type { SmuxChannelHandler } from '../../lib/smux/channel.js';
import { type SmuxConfig, validateConfig } from '../../lib/smux/config.js';
import { Cmd, HEADER_SIZE } from '../../lib/smux/constants.js';
import { ReceiveBucket, streamAllowance } from '../../lib/smux/flow-control.js';
import { readHeader } from '../helpers/frames.js';
import { StreamCore } from '../../lib/smux/stream-core.js';
import type { StreamHost } from '../../lib/smux/stream-host.js';
import { CONTROL_SYN } from '../../lib/smux/frame-source.js';
import { FrameWriter, type WriterHooks } from '../../lib/smux/writer.js';

type Callback = (error?: Error | null) => void;
interface Frame {
  version: number;
  cmd: number;
  streamId: number;
  payload: Buffer;
}

/** Parses whole frames (a batch always ends on a frame boundary). */
function parse(bytes: Buffer): Frame[] {
  const frames: Frame[] = [];
  for (let at = 0; at < bytes.length;) {
    const { version, cmd, length, streamId } = readHeader(bytes, at);
    frames.push({ version, cmd, streamId, payload: bytes.subarray(at + HEADER_SIZE, at + HEADER_SIZE + length) });
    at += HEADER_SIZE + length;
  }
  return frames;
}

/**
 * A socket stand-in: records what each `_write`/`_writev` call received. With `holdCallbacks`, write
 * callbacks wait for `release()`, so the buffered bytes reach the high-water mark and `write()` returns false.
 */
class RecordingSocket extends Writable {
  readonly calls: Buffer[][] = [];
  holdCallbacks = false;
  #held: Callback[] = [];

  constructor(highWaterMark = 1 << 30) {
    super({ highWaterMark });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: Callback): void {
    this.calls.push([chunk]);
    this.#done(callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: Callback): void {
    this.calls.push(chunks.map((c) => c.chunk));
    this.#done(callback);
  }

  release(): void {
    const held = this.#held;
    this.#held = [];
    for (const callback of held) callback();
  }

  get frames(): Frame[] {
    return parse(Buffer.concat(this.calls.flat()));
  }

  /** Frames per write call. */
  get batches(): number[] {
    return this.calls.map((chunks) => parse(Buffer.concat(chunks)).length);
  }

  #done(callback: Callback): void {
    if (this.holdCallbacks) this.#held.push(callback);
    else callback();
  }
}

/** A FrameWriter over a RecordingSocket, with stream engines on a stub StreamHost (no Session, no TCP). */
function setup(config: Partial<SmuxConfig> = {}, socket = new RecordingSocket(), hooks?: WriterHooks) {
  const c = validateConfig(config);
  const version = c.version === 2 ? 2 : 1;
  const writer = new FrameWriter(socket, version, c.maxFrameSize, hooks);
  const host: StreamHost = {
    config: c,
    writer,
    version,
    bucket: new ReceiveBucket(c.maxReceiveBuffer, streamAllowance(version, c.maxStreamBuffer)),
    windowBudget: null,
    release: () => {},
    tokensReturned: () => {},
    tokensCharged: () => {},
  };
  socket.on('drain', () => writer.onDrain()); // as the Session wires it
  const open = (id: number, handler: Partial<SmuxChannelHandler> = {}): StreamCore => {
    const core = new StreamCore(host, id, false);
    core.setHandler({ onData: () => {}, onEnd: () => {}, onClose: () => {}, ...handler });
    return core;
  };
  /** Queues a SYN the way Session.openChannel does. */
  const syn = (core: StreamCore): void => {
    core.controlBits |= CONTROL_SYN;
    writer.queueControl(core);
  };
  return { socket, writer, open, syn };
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
async function ticks(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await tick();
}

/** Distinct bytes in memory of their own (never Node's shared pool), so views can be told from copies. */
function data(length: number, offsetInBacking = 0): Buffer {
  const backing = Buffer.from(new ArrayBuffer(length + offsetInBacking));
  for (let i = 0; i < backing.length; i++) backing[i] = (i * 7 + 3) % 256;
  return backing.subarray(offsetInBacking);
}

const summary = (frames: Frame[]) => frames.map((f) => [f.cmd, f.streamId, f.payload.length]);
const payloadOf = (frames: Frame[], streamId: number) =>
  Buffer.concat(frames.filter((f) => f.cmd === Cmd.PSH && f.streamId === streamId).map((f) => f.payload));

describe('FrameWriter: batching', () => {
  test('nothing is written before the tick ends; then the batch goes out in one write call', async () => {
    const { socket, writer, open, syn } = setup();
    const a = open(3);
    syn(a);
    a.write(Buffer.from('hello'));
    writer.queueNop();
    expect(socket.calls).toEqual([]);
    await tick();
    expect(socket.calls).toHaveLength(1);
    expect(summary(socket.frames)).toEqual([
      [Cmd.NOP, 0, 0],
      [Cmd.SYN, 3, 0],
      [Cmd.PSH, 3, 5],
    ]);
    expect([writer.framesOut, writer.bytesOut]).toEqual([3, 3 * HEADER_SIZE + 5]);
  });

  test('small payloads are packed next to their headers: one write call with one buffer', async () => {
    const { socket, open, syn } = setup();
    for (let id = 3; id <= 11; id += 2) {
      const channel = open(id);
      syn(channel);
      channel.write(data(100));
    }
    await tick();
    expect(socket.calls.map((chunks) => chunks.length)).toEqual([1]);
    expect(socket.calls[0][0].length).toBe(5 * (HEADER_SIZE + HEADER_SIZE + 100));
  });

  test('64 streams with data waiting are written at once, without waiting for the tick', () => {
    const { socket, open } = setup();
    for (let i = 0; i < 63; i++) open(3 + 2 * i).write(data(10));
    expect(socket.calls).toHaveLength(0);
    open(3 + 2 * 63).write(data(10));
    expect(socket.batches).toEqual([64]);
  });

  test('control frames alone wait for the end of the event-loop turn, then leave in one write', async () => {
    const { socket, open, syn } = setup();
    for (let i = 0; i < 40; i++) syn(open(3 + 2 * i));
    await new Promise<void>((resolve) => process.nextTick(resolve));
    await Promise.resolve();
    expect(socket.calls).toHaveLength(0); // not flushed on their own at the end of the tick…
    await tick();
    expect(socket.batches).toEqual([40]); // …but by the end of the turn
  });

  test('control frames ride along with the data written in the same tick', async () => {
    const { socket, open, syn } = setup();
    syn(open(3));
    await Promise.resolve(); // data produced a microtask later (a reply computed in a promise callback)
    open(5).write(data(10));
    await tick();
    expect(socket.batches).toEqual([2]);
    expect(summary(socket.frames)).toEqual([
      [Cmd.SYN, 3, 0],
      [Cmd.PSH, 5, 10],
    ]);
  });

  test('at most 64 frames go in one socket write (control frames)', async () => {
    const { socket, open, syn } = setup();
    for (let i = 0; i < 150; i++) syn(open(3 + 2 * i));
    await ticks();
    expect(socket.batches).toEqual([64, 64, 22]);
  });

  test('at most 64 frames go in one socket write (data frames of one stream)', async () => {
    const { socket, open } = setup({ maxFrameSize: 1000 });
    const bytes = data(100_000);
    open(3).write(bytes);
    await ticks();
    expect(socket.batches).toEqual([64, 36]);
    expect(payloadOf(socket.frames, 3).equals(bytes)).toBe(true);
  });

  test('a batch is one contiguous write: large payloads are packed next to their headers (a corked writev costs more)', async () => {
    const { socket, open } = setup({ maxFrameSize: 4096 });
    const bytes = data(10_000, 100);
    open(3).write(bytes);
    await tick();
    expect(socket.calls.map((chunks) => chunks.length)).toEqual([1]); // one write() of one buffer
    expect(socket.calls[0][0].buffer).not.toBe(bytes.buffer); // copied once into the writer's slab
    expect(summary(socket.frames)).toEqual([
      [Cmd.PSH, 3, 4096],
      [Cmd.PSH, 3, 4096],
      [Cmd.PSH, 3, 1808],
    ]);
    expect(payloadOf(socket.frames, 3).equals(bytes)).toBe(true);
  });

  test('a Duplex that keeps written chunks (not a net.Socket) never sees them overwritten by later batches', async () => {
    const { socket, open } = setup();
    const channel = open(3);
    const written: Buffer[] = [];
    for (let i = 0; i < 40; i++) {
      const chunk = Buffer.alloc(30_000, i); // enough batches to wrap a slab several times
      written.push(chunk);
      channel.write(chunk);
      await tick();
    }
    expect(payloadOf(socket.frames, 3).equals(Buffer.concat(written))).toBe(true);
  });

  test('frames are split at maxFrameSize, and small writes are coalesced up to it', async () => {
    const { socket, open } = setup({ maxFrameSize: 1000 });
    const a = open(3);
    a.write(data(2500));
    const b = open(5);
    const parts = [Buffer.from('a'.repeat(300)), Buffer.from('b'.repeat(300)), Buffer.from('c'.repeat(300))];
    for (const part of parts) b.write(part);
    await ticks();
    expect(summary(socket.frames.filter((f) => f.streamId === 3))).toEqual([
      [Cmd.PSH, 3, 1000],
      [Cmd.PSH, 3, 1000],
      [Cmd.PSH, 3, 500],
    ]);
    expect(socket.frames.filter((f) => f.streamId === 5).map((f) => f.payload.toString())).toEqual([Buffer.concat(parts).toString()]);
  });

  test('a NOP is sent once however often it is queued before the flush', async () => {
    const { socket, writer } = setup({ version: 2 });
    writer.queueNop();
    writer.queueNop();
    writer.queueNop();
    await ticks();
    expect(Buffer.concat(socket.calls.flat()).toString('hex')).toBe('0203000000000000');
  });

  test('bare FINs (streams refused without an object) leave in control order, at most 64 frames per write', async () => {
    const { socket, writer, open, syn } = setup();
    syn(open(3));
    for (let i = 0; i < 100; i++) writer.queueFin(1001 + 2 * i);
    await ticks();
    expect(socket.batches).toEqual([64, 37]);
    expect(summary(socket.frames)).toEqual([...Array.from({ length: 100 }, (_, i) => [Cmd.FIN, 1001 + 2 * i, 0]), [Cmd.SYN, 3, 0]]);
    writer.close();
    writer.queueFin(5);
    await ticks();
    expect(socket.frames).toHaveLength(101);
  });

  test('after close() nothing more is written', async () => {
    const { socket, writer, open, syn } = setup();
    const a = open(3);
    syn(a);
    a.write(data(10));
    writer.close();
    writer.queueNop();
    await ticks();
    expect(socket.calls).toEqual([]);
  });
});

describe('FrameWriter: ordering', () => {
  test('control frames (NOP, SYN, UPD) go before data in a batch, even when the data was queued first', async () => {
    const { socket, writer, open, syn } = setup({ version: 2 });
    open(3).write(Buffer.from('early data'));
    const b = open(5);
    syn(b);
    b.write(Buffer.from('b'));
    open(7).handleData(Buffer.from('x')); // the first read on a v2 stream asks for a UPD
    writer.queueNop();
    await tick();
    const frames = socket.frames;
    expect(summary(frames)).toEqual([
      [Cmd.NOP, 0, 0],
      [Cmd.SYN, 5, 0],
      [Cmd.UPD, 7, 8],
      [Cmd.PSH, 3, 10],
      [Cmd.PSH, 5, 1],
    ]);
    expect(frames.every((f) => f.version === 2)).toBe(true);
    // UPD{consumed, window}: bytes consumed so far and our advertised window (maxStreamBuffer).
    expect([frames[2].payload.readUInt32LE(0), frames[2].payload.readUInt32LE(4)]).toEqual([1, 65_536]);
  });

  test('a stream’s FIN follows all of its data', async () => {
    const { socket, open } = setup({ maxFrameSize: 4096 });
    const a = open(3);
    const b = open(5);
    a.write(data(100 * 1024));
    a.end();
    b.write(data(10 * 1024));
    b.end();
    await ticks();
    for (const [id, psh] of [[3, 25] as const, [5, 3] as const]) {
      const cmds = socket.frames.filter((f) => f.streamId === id).map((f) => f.cmd);
      expect(cmds).toEqual([...Array<number>(psh).fill(Cmd.PSH), Cmd.FIN]);
    }
    expect([a.finSent, b.finSent]).toEqual([true, true]);
  });

  test('a stream’s last PSH takes its FIN along, outside the 64-frame count: a burst of 40 replies is one write', async () => {
    const { socket, writer, open } = setup();
    for (let i = 0; i < 40; i++) {
      const reply = open(3 + 2 * i);
      reply.write(data(20));
      reply.end();
    }
    await ticks();
    // Each FIN follows its PSH (before, left for the ring's next round, 24 FINs filled the first batch and the other
    // 16 went in a write of their own).
    expect(socket.batches).toEqual([80]);
    expect(summary(socket.frames)).toEqual(
      Array.from({ length: 40 }, (_, i) => [
        [Cmd.PSH, 3 + 2 * i, 20],
        [Cmd.FIN, 3 + 2 * i, 0],
      ]).flat(),
    );
    expect(writer.framesOut).toBe(80);
  });

  test('two streams with 100 KiB each take turns frame by frame (round-robin)', async () => {
    const { socket, open } = setup({ maxFrameSize: 4096 });
    const a = data(100 * 1024);
    const b = data(100 * 1024);
    open(3).write(a);
    open(5).write(b);
    await ticks();
    const order = socket.frames.map((f) => f.streamId);
    expect(order).toEqual(Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? 3 : 5)));
    expect(payloadOf(socket.frames, 3).equals(a)).toBe(true);
    expect(payloadOf(socket.frames, 5).equals(b)).toBe(true);
  });
});

describe('FrameWriter: socket backpressure', () => {
  test('once write() returns false nothing more is written until drain, then control frames go first', async () => {
    const socket = new RecordingSocket(1024);
    socket.holdCallbacks = true;
    const { writer, open, syn } = setup({ maxFrameSize: 1000 }, socket);
    const bytes = data(100_000);
    open(3).write(bytes);
    await tick();
    expect(socket.batches).toEqual([64]);
    expect(writer.blocked).toBe(true);
    // Queued while blocked: nothing goes out, however long we wait.
    writer.queueNop();
    syn(open(5));
    await ticks();
    expect(socket.calls).toHaveLength(1);
    socket.release(); // the socket drains: 'drain' → writer.onDrain()
    await tick();
    expect(socket.calls).toHaveLength(2);
    expect(summary(parse(Buffer.concat(socket.calls[1]))).slice(0, 3)).toEqual([
      [Cmd.NOP, 0, 0],
      [Cmd.SYN, 5, 0],
      [Cmd.PSH, 3, 1000],
    ]);
    while (writer.blocked) {
      socket.release();
      await tick();
    }
    expect(socket.frames).toHaveLength(102); // 100 PSH + NOP + SYN
    expect(payloadOf(socket.frames, 3).equals(bytes)).toBe(true);
  });
});

describe('FrameWriter: notifications', () => {
  test('a channel’s onDrain fires after its bytes were handed to the socket, not before', async () => {
    const { socket, open } = setup();
    const seen: number[] = [];
    const a = open(3, { onDrain: () => seen.push(payloadOf(socket.frames, 3).length) });
    a.write(data(100));
    expect(seen).toEqual([]);
    await ticks();
    expect(seen).toEqual([100]);
  });

  test('onDrain fires once, when the last of a large write is out, not after each batch', async () => {
    const { socket, open } = setup();
    const seen: number[] = [];
    open(3, { onDrain: () => seen.push(socket.calls.length) }).write(data(1024 * 1024));
    await ticks();
    expect(socket.calls.length).toBeGreaterThan(1); // 32 frames of 32 KiB: several bounded batches
    expect(seen).toEqual([socket.calls.length]);
  });

  // onDrain runs inside the flush loop, where queueing schedules no new flush: the loop must take the data.
  test('data written from inside onDrain is picked up by the running flush (no lost wakeup)', async () => {
    const { socket, open } = setup();
    let rounds = 0;
    const a: StreamCore = open(3, { onDrain: () => void (++rounds < 5 && a.write(data(100))) });
    a.write(data(100));
    await ticks();
    expect(rounds).toBe(5);
    expect(summary(socket.frames)).toEqual(Array.from({ length: 5 }, () => [Cmd.PSH, 3, 100]));
  });
});

describe('FrameWriter: v2 windows', () => {
  const psh = (socket: RecordingSocket, id = 3) => payloadOf(socket.frames, id).length;

  test('a v2 stream sends at most 256 KiB before any UPD, then leaves the ring instead of spinning', async () => {
    const { socket, writer, open } = setup({ version: 2 });
    const a = open(3);
    a.write(data(1024 * 1024));
    await ticks();
    expect(psh(socket)).toBe(262_144);
    expect(writer.pending).toBe(false);
    const calls = socket.calls.length;
    await ticks(20);
    expect(socket.calls.length).toBe(calls);
    expect(a.writableLength).toBe(1024 * 1024 - 262_144);
  });

  test('handleWindowUpdate opens the window by exactly what the peer allows', async () => {
    const { socket, open } = setup({ version: 2 });
    const a = open(3);
    const bytes = data(1024 * 1024);
    a.write(bytes);
    await ticks();
    a.handleWindowUpdate(262_144, 65_536); // everything consumed, 64 KiB window
    await ticks();
    expect(psh(socket)).toBe(262_144 + 65_536);
    a.handleWindowUpdate(300_000, 65_536); // 27 680 in flight: 37 856 more
    await ticks();
    expect(psh(socket)).toBe(300_000 + 65_536);
    a.handleWindowUpdate(300_000 + 65_536, 1024 * 1024); // a window larger than what is left
    await ticks();
    expect(payloadOf(socket.frames, 3).equals(bytes)).toBe(true);
  });

  test('a window-blocked stream does not hold up other streams', async () => {
    const { socket, writer, open } = setup({ version: 2 });
    open(3).write(data(300_000));
    await ticks();
    open(5).write(Buffer.from('other'));
    await ticks();
    expect(payloadOf(socket.frames, 5).toString()).toBe('other');
    expect(psh(socket)).toBe(262_144);
    expect(writer.pending).toBe(false);
  });

  test('the FIN waits behind window-blocked data and follows it once the window opens', async () => {
    const { socket, open } = setup({ version: 2 });
    const a = open(3);
    a.write(data(300_000));
    a.end();
    await ticks();
    expect(socket.frames.some((f) => f.cmd === Cmd.FIN)).toBe(false);
    a.handleWindowUpdate(262_144, 262_144);
    await ticks();
    expect(psh(socket)).toBe(300_000);
    expect(socket.frames.at(-1)).toMatchObject({ cmd: Cmd.FIN, streamId: 3 });
  });
});

describe('FrameWriter: write buffers grow on demand (issue 9, finding 6)', () => {
  const KiB = 1024;
  /** The distinct write buffers (slabs) that the socket's writes were cut from. */
  const slabsOf = (socket: RecordingSocket) => new Set(socket.calls.map((chunks) => chunks[0].buffer));

  test('a writer holds no buffer before its first batch; small batches take the smallest slab (16 KiB); a lone NOP takes none', async () => {
    const { socket, writer, open, syn } = setup({}, undefined, { reusable: true });
    expect(writer.bufferBytes).toBe(0);
    writer.queueNop();
    await ticks();
    expect(Buffer.concat(socket.calls.flat()).toString('hex')).toBe('0103000000000000');
    expect(writer.bufferBytes).toBe(0);
    const a = open(3);
    syn(a);
    a.write(data(100));
    await ticks();
    expect(payloadOf(socket.frames, 3).equals(data(100))).toBe(true);
    expect(writer.bufferBytes).toBe(16 * KiB);
  });

  test('a batch that does not fit moves to a larger slab with what it holds so far; bulk batches grow it to 512 KiB, not beyond', async () => {
    const { socket, writer, open, syn } = setup({}, undefined, { reusable: true });
    const small = open(3);
    syn(small);
    small.write(data(1000));
    await ticks();
    const big = open(5);
    const bytes = data(3 * 1024 * 1024, 1);
    small.write(data(2000, 3)); // the same batch as the start of the bulk data: moved along with it
    big.write(bytes);
    await ticks(40);
    expect(payloadOf(socket.frames, 5).equals(bytes)).toBe(true);
    expect(payloadOf(socket.frames, 3).equals(Buffer.concat([data(1000), data(2000, 3)]))).toBe(true);
    const sizes = [...slabsOf(socket)].map((b) => b.byteLength);
    expect(Math.max(...sizes)).toBe(512 * KiB);
    expect(writer.bufferBytes).toBeLessThanOrEqual(2 * 512 * KiB);
  });

  test('steady traffic writes from two slabs in turn (a net.Socket): no allocation per batch', async () => {
    const { socket, open } = setup({}, undefined, { reusable: true });
    const a = open(3);
    for (let i = 0; i < 300; i++) {
      a.write(data(1000 + (i % 7) * 100));
      await tick();
    }
    expect(socket.calls.length).toBeGreaterThanOrEqual(300);
    expect(slabsOf(socket).size).toBe(2);
  });

  test('trim() releases the buffers once no batch went out since its previous call; the next batch starts small again', async () => {
    const { socket, writer, open } = setup({ maxFrameSize: 32_768 }, undefined, { reusable: true });
    const a = open(3);
    a.write(data(200_000));
    await ticks();
    expect(writer.bufferBytes).toBeGreaterThan(16 * KiB);
    expect(writer.trim()).toBe(true); // a batch went out since the writer was made: kept
    expect(writer.bufferBytes).toBeGreaterThan(16 * KiB);
    writer.queueNop();
    await ticks();
    expect(writer.trim()).toBe(false); // only a NOP since: released
    expect(writer.bufferBytes).toBe(0);
    a.write(data(500, 2));
    await ticks();
    expect(writer.bufferBytes).toBe(16 * KiB);
    expect(payloadOf(socket.frames, 3).equals(Buffer.concat([data(200_000), data(500, 2)]))).toBe(true);
  });

  test('trim() keeps the buffers while the socket pushes back', async () => {
    const socket = new RecordingSocket(1000);
    socket.holdCallbacks = true;
    const { writer, open } = setup({}, socket, { reusable: true });
    open(3).write(data(50_000));
    await ticks();
    expect(writer.blocked).toBe(true);
    writer.trim();
    expect(writer.trim()).toBe(true);
    expect(writer.bufferBytes).toBeGreaterThan(0);
    socket.release();
  });

  test('shrink() keeps at most one smallest slab; asked while frames wait, it happens once they are out', async () => {
    const socket = new RecordingSocket(64 * KiB);
    const { writer, open } = setup({}, socket, { reusable: true });
    const a = open(3);
    for (let i = 0; i < 40; i++) {
      a.write(data(1000));
      await tick();
    }
    expect(writer.bufferBytes).toBe(32 * KiB); // two small slabs in turn
    writer.shrink();
    expect(writer.bufferBytes).toBe(16 * KiB);
    socket.holdCallbacks = true;
    a.write(data(300_000));
    await ticks();
    expect(writer.blocked).toBe(true);
    const grown = writer.bufferBytes;
    expect(grown).toBeGreaterThan(16 * KiB);
    writer.shrink(); // frames still wait: later
    expect(writer.bufferBytes).toBe(grown);
    socket.holdCallbacks = false;
    socket.release();
    await ticks(20);
    expect(payloadOf(socket.frames, 3).length).toBe(40 * 1000 + 300_000);
    expect(writer.bufferBytes).toBe(0); // the grown slab is dropped, not kept
  });
});
