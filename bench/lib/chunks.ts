import { Readable } from 'node:stream';

/*
 * The bytes of the upload cases, the same for every system: `bytes` handed out as `chunkBytes` Buffers (the last
 * one shorter), all views of one filled Buffer, so that producing them costs nothing and every system sends the
 * same chunks. Each source calls `onChunk(n)` as it hands a chunk out (the case's progress, for stall detection)
 * and ends early once `stop()` says so (an upload that lasts as long as something else runs).
 */

/** How a source hands its chunks out. */
export interface ChunkOptions {
  bytes: number;
  chunkBytes: number;
  onChunk: (bytes: number) => void;
  /** Checked before each chunk: true ends the source there. */
  stop?: () => boolean;
}

const filled = new Map<number, Buffer>();

function chunkOf(chunkBytes: number): Buffer {
  let chunk = filled.get(chunkBytes);
  if (chunk === undefined) filled.set(chunkBytes, (chunk = Buffer.alloc(chunkBytes, 0xa5)));
  return chunk;
}

/** The chunks in order, as a plain (synchronous) generator. */
export function* chunks({ bytes, chunkBytes, onChunk, stop = () => false }: ChunkOptions): Generator<Buffer> {
  const chunk = chunkOf(chunkBytes);
  for (let sent = 0; sent < bytes && !stop(); sent += chunkBytes) {
    const n = Math.min(chunkBytes, bytes - sent);
    onChunk(n);
    yield n === chunkBytes ? chunk : chunk.subarray(0, n);
  }
}

/** The chunks as an async generator: pulled one at a time, as a consumer with backpressure takes them. */
export async function* chunkGenerator(options: ChunkOptions): AsyncGenerator<Buffer> {
  yield* chunks(options);
}

/** The chunks as a byte Readable (as a file would be read), for `pipeline()`. */
export function chunkReadable(options: ChunkOptions): Readable {
  const source = chunks(options);
  return new Readable({
    highWaterMark: options.chunkBytes,
    read() {
      const step = source.next();
      this.push(step.done === true ? null : step.value);
    },
  });
}
