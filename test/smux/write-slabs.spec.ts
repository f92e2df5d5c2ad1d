import type { Writable } from 'node:stream';
import { describe, expect, test } from '@jest/globals';
import { Cmd, HEADER_SIZE } from '../../lib/smux/constants.js';
import { WriteSlabs } from '../../lib/smux/write-slabs.js';
import { readHeader } from '../helpers/frames.js';

const KiB = 1024;

/**
 * The one method of a socket the slabs use: `write(chunk, callback)`. It keeps every chunk (a view of a slab, as
 * handed over) and completes writes only on `complete()`, oldest first, so a test decides when a slab is free.
 */
class HoldingSocket {
  readonly chunks: Buffer[] = [];
  readonly #pending: Array<() => void> = [];

  write(chunk: Buffer, callback: () => void): boolean {
    this.chunks.push(chunk);
    this.#pending.push(callback);
    return true;
  }

  /** Writes not completed yet. */
  get pending(): number {
    return this.#pending.length;
  }

  /** Completes the oldest pending write. */
  complete(): void {
    this.#pending.shift()?.();
  }

  get asWritable(): Writable {
    return this as unknown as Writable;
  }
}

/** Packs one PSH of `n` bytes of `fill` into the batch being built. */
function psh(slabs: WriteSlabs, n: number, fill: number, streamId = 1): void {
  slabs.room(HEADER_SIZE + n);
  slabs.header(2, Cmd.PSH, n, streamId);
  slabs.buf.fill(fill, slabs.pos, slabs.pos + n);
  slabs.pos += n;
}

describe('WriteSlabs', () => {
  test('holds nothing until the first batch, which takes a 16 KiB slab', () => {
    const slabs = new WriteSlabs(true);
    expect(slabs.bytes).toBe(0);
    slabs.begin(32);
    expect(slabs.bytes).toBe(16 * KiB);
  });

  test('a batch that outgrows its slab moves to a larger one with what it holds so far, and is written whole', () => {
    const socket = new HoldingSocket();
    const slabs = new WriteSlabs(true);
    slabs.begin(32);
    psh(slabs, 10 * KiB, 0x11);
    psh(slabs, 20 * KiB, 0x22, 3); // does not fit in 16 KiB: the first frame is copied along
    expect(slabs.bytes).toBeGreaterThanOrEqual(2 * (30 * KiB + 2 * HEADER_SIZE)); // twice what the batch needs
    slabs.write(socket.asWritable);
    const [chunk] = socket.chunks;
    expect(chunk.length).toBe(30 * KiB + 2 * HEADER_SIZE);
    expect(readHeader(chunk, 0)).toMatchObject({ cmd: Cmd.PSH, length: 10 * KiB, streamId: 1 });
    expect(chunk.subarray(HEADER_SIZE, HEADER_SIZE + 10 * KiB).every((b) => b === 0x11)).toBe(true);
    const second = HEADER_SIZE + 10 * KiB;
    expect(readHeader(chunk, second)).toMatchObject({ cmd: Cmd.PSH, length: 20 * KiB, streamId: 3 });
    expect(chunk.subarray(second + HEADER_SIZE).every((b) => b === 0x22)).toBe(true);
    socket.complete();
  });

  test('the spare slab is rewritten only once every write from it has completed', () => {
    const socket = new HoldingSocket();
    const slabs = new WriteSlabs(true);
    const batch = (fill: number): Buffer => {
      slabs.begin(32);
      psh(slabs, 12 * KiB, fill);
      slabs.write(socket.asWritable);
      return slabs.buf;
    };
    // 12 KiB batches: a 16 KiB slab, then 32 KiB ones (a slab is made twice the batch), two batches each.
    batch(0x01);
    const a = batch(0x02);
    expect(batch(0x03)).toBe(a);
    const b = batch(0x04); // moves on: `a` is the spare now, its two writes still pending
    expect(b).not.toBe(a);
    expect(batch(0x05)).toBe(b);
    const c = batch(0x06); // moves on while `a`'s writes are pending: a new slab, `a` is not rewritten
    expect([a, b]).not.toContain(c);
    expect(socket.chunks[1].subarray(HEADER_SIZE).every((byte) => byte === 0x02)).toBe(true);
    expect(socket.chunks[2].subarray(HEADER_SIZE).every((byte) => byte === 0x03)).toBe(true);
    while (socket.pending > 0) socket.complete();
    // Every write completed: from now on the moves take the spare, two slabs in turn, no allocation.
    const used = new Set<Buffer>();
    for (let i = 0; i < 8; i++) {
      used.add(batch(0x10 + i));
      while (socket.pending > 0) socket.complete();
    }
    expect(used.size).toBe(2);
    expect(slabs.bytes).toBe(64 * KiB);
  });

  test('without reuse (a Duplex that may keep its chunks) every move takes a fresh slab', () => {
    const socket = new HoldingSocket();
    const slabs = new WriteSlabs(false);
    for (let i = 0; i < 8; i++) {
      slabs.begin(32);
      psh(slabs, 12 * KiB, 0x40 + i);
      slabs.write(socket.asWritable);
      socket.complete();
    }
    // Each chunk keeps its own bytes: none was rewritten by a later batch.
    socket.chunks.forEach((chunk, i) => expect(chunk.subarray(HEADER_SIZE).every((b) => b === 0x40 + i)).toBe(true));
  });

  test('a batch starts with room for the previous batch, so a steady stream of equal batches does not move mid-batch', () => {
    const socket = new HoldingSocket();
    const slabs = new WriteSlabs(true);
    slabs.begin(32);
    psh(slabs, 9 * KiB, 0x05);
    slabs.write(socket.asWritable);
    const before = slabs.buf;
    slabs.begin(32); // 9 KiB are left in the 16 KiB slab, less than the previous batch: move now, not mid-batch
    expect(slabs.buf).not.toBe(before);
    expect(slabs.pos).toBe(0);
  });

  test('trim() releases the slabs only when no batch went out since its previous call and the writer is idle', () => {
    const socket = new HoldingSocket();
    const slabs = new WriteSlabs(true);
    slabs.begin(32);
    psh(slabs, KiB, 0x07);
    slabs.write(socket.asWritable);
    expect(slabs.trim(true)).toBe(true); // a batch went out since: kept
    expect(slabs.trim(false)).toBe(true); // not idle: kept
    expect(slabs.trim(true)).toBe(false); // released
    expect(slabs.bytes).toBe(0);
    slabs.begin(32);
    expect(slabs.bytes).toBe(16 * KiB);
  });

  test('shrink() keeps at most one smallest slab', () => {
    const socket = new HoldingSocket();
    const slabs = new WriteSlabs(true);
    // 6 KiB batches: two fit in a 16 KiB slab, the third moves to a second 16 KiB slab (the first is the spare).
    for (let i = 0; i < 3; i++) {
      slabs.begin(32);
      psh(slabs, 6 * KiB, 0x08);
      slabs.write(socket.asWritable);
    }
    expect(slabs.bytes).toBe(32 * KiB);
    slabs.shrink();
    expect(slabs.bytes).toBe(16 * KiB); // the spare is dropped, the small slab in use kept
    slabs.begin(32);
    psh(slabs, 100 * KiB, 0x09);
    slabs.write(socket.asWritable);
    while (socket.pending > 0) socket.complete();
    expect(slabs.bytes).toBeGreaterThan(16 * KiB);
    slabs.shrink();
    expect(slabs.bytes).toBe(0); // a grown slab is dropped, not kept
  });
});
