/**
 * The TypeScript side of the interop command protocol (README.md in this folder): an acceptor that serves
 * every command, and openers that drive one. Both use the public `SmuxStream` (Duplex) API.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { once } from 'node:events';
import type { Session, SmuxStream } from '../../lib/smux/index.js';

export const ECHO = 1;
export const EXCHANGE = 2;
export const SINK = 3;
export const FINREPLY = 4;
export const WRITECLOSE = 5;
export const DISCARD = 6;

const MiB = 1024 * 1024;
const RANDOM = randomBytes(2 * MiB); // sliced at random offsets: fast, and digests check the content

/** The 16-byte command header. */
export function commandHeader(cmd: number, a = 0, b = 0): Buffer {
  const header = Buffer.alloc(16);
  header[0] = cmd;
  header.writeUInt32LE(a, 4);
  header.writeBigUInt64LE(BigInt(b), 8);
  return header;
}

/** `n` random-looking bytes from the shared pool. */
export function randomSlice(n: number): Buffer {
  const start = randomInt(0, RANDOM.length - n + 1);
  return RANDOM.subarray(start, start + n);
}

/** The byte pattern of WRITECLOSE / FINREPLY: byte i is i % 251. */
export function pattern(n: number, offset = 0): Buffer {
  const buf = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) buf[i] = (offset + i) % 251;
  return buf;
}

export function sha256(...parts: Buffer[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Reads from a stream in paused mode: exact sizes, or to the end. */
export class StreamReader {
  #ended = false;
  #error: Error | null = null;
  constructor(readonly stream: SmuxStream) {
    stream.on('end', () => (this.#ended = true));
    stream.on('error', (e) => (this.#error = e));
  }

  /** Exactly `n` bytes; rejects on EOF or error before that. */
  async read(n: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      if (this.#error) throw this.#error;
      const chunk = this.stream.read() as Buffer | null;
      if (chunk === null) {
        if (this.#ended) throw new Error(`EOF after ${have} of ${n} bytes on stream ${this.stream.id}`);
        await this.wait();
        continue;
      }
      const need = n - have;
      if (chunk.length > need) {
        this.stream.unshift(chunk.subarray(need));
        parts.push(chunk.subarray(0, need));
        have = n;
      } else {
        parts.push(chunk);
        have += chunk.length;
      }
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /** Everything until EOF. */
  async readToEnd(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (;;) {
      if (this.#error) throw this.#error;
      const chunk = this.stream.read() as Buffer | null;
      if (chunk !== null) parts.push(chunk);
      else if (this.#ended || this.stream.readableEnded) return Buffer.concat(parts);
      else await this.wait();
    }
  }

  /** Discards exactly `n` bytes, hashing them, with reads of random sizes (1 B – 1 MiB). */
  async hashRandomly(n: number): Promise<Buffer> {
    const h = createHash('sha256');
    let left = n;
    while (left > 0) {
      const part = await this.read(Math.min(left, randomInt(1, MiB + 1)));
      h.update(part);
      left -= part.length;
    }
    return h.digest();
  }

  /** Resolves once the stream is readable, ended or failed (listeners removed again either way). */
  wait(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.stream.off('readable', done).off('end', done).off('error', done);
        resolve();
      };
      this.stream.on('readable', done).on('end', done).on('error', done);
    });
  }
}

/** Writes `data` in writes of random sizes (1 B – 1 MiB), honouring backpressure. */
export async function writeRandomly(stream: SmuxStream, data: Buffer, maxWrite = MiB): Promise<void> {
  for (let at = 0; at < data.length;) {
    const n = Math.min(data.length - at, randomInt(1, maxWrite + 1));
    if (!stream.write(data.subarray(at, at + n))) await once(stream, 'drain');
    at += n;
  }
}

/** Writes `total` random bytes in random sizes and returns their digest. */
async function writeRandomBytes(stream: SmuxStream, total: number): Promise<Buffer> {
  const h = createHash('sha256');
  for (let at = 0; at < total;) {
    const n = Math.min(total - at, randomInt(1, MiB + 1));
    const part = randomSlice(n);
    h.update(part);
    if (!stream.write(part)) await once(stream, 'drain');
    at += n;
  }
  return h.digest();
}

/** Serves one accepted stream by the command protocol. Rejects (and destroys the stream) on failure. */
export async function serveCommand(stream: SmuxStream): Promise<void> {
  const reader = new StreamReader(stream);
  try {
    const header = await reader.read(16);
    const cmd = header[0];
    const a = header.readUInt32LE(4);
    const b = Number(header.readBigUInt64LE(8));
    switch (cmd) {
      case ECHO:
        for (;;) {
          const chunk = stream.read() as Buffer | null;
          if (chunk !== null) {
            if (!stream.write(chunk)) await once(stream, 'drain');
          } else if (stream.readableEnded) break;
          else await reader.wait();
        }
        break;
      case EXCHANGE: {
        const [received, sent] = await Promise.all([reader.hashRandomly(b), writeRandomBytes(stream, b)]);
        stream.write(Buffer.concat([received, sent]));
        break;
      }
      case SINK:
        stream.write(await reader.hashRandomly(b));
        break;
      case FINREPLY:
        stream.write(sha256(await reader.readToEnd()));
        await writeRandomly(stream, pattern(a), 16 * 1024);
        break;
      case WRITECLOSE:
        await writeRandomly(stream, pattern(b));
        break;
      case DISCARD: {
        await reader.read(b);
        const count = Buffer.alloc(8);
        count.writeBigUInt64LE(BigInt(b));
        stream.write(count);
        break;
      }
      default:
        throw new Error(`unknown command ${cmd}`);
    }
    stream.end();
  } catch (error) {
    stream.destroy();
    throw error;
  }
}

// ── Openers ─────────────────────────────────────────────────────────────────────────────────────────────

/** ECHO: `roundTrips` messages of random length (1..200 bytes), each read back and compared. */
export async function driveEcho(session: Session, roundTrips = 100): Promise<void> {
  const stream = await session.openStream();
  const reader = new StreamReader(stream);
  stream.write(commandHeader(ECHO));
  for (let i = 0; i < roundTrips; i++) {
    const message = randomSlice(randomInt(1, 201));
    stream.write(message);
    const back = await reader.read(message.length);
    if (!back.equals(message)) throw new Error(`echo round trip ${i} differs`);
  }
  stream.end();
  await reader.readToEnd();
}

/** EXCHANGE: `bytes` each way at once, both digests checked. */
export async function driveExchange(session: Session, bytes: number): Promise<void> {
  const stream = await session.openStream();
  const reader = new StreamReader(stream);
  stream.write(commandHeader(EXCHANGE, 0, bytes));
  const [sentDigest, receivedDigest] = await Promise.all([writeRandomBytes(stream, bytes), reader.hashRandomly(bytes)]);
  const trailer = await reader.read(64);
  if (!trailer.subarray(0, 32).equals(sentDigest)) throw new Error(`stream ${stream.id}: peer received different bytes`);
  if (!trailer.subarray(32).equals(receivedDigest)) throw new Error(`stream ${stream.id}: we received different bytes`);
  stream.end();
  await reader.readToEnd();
}

/** SINK: `bytes` in random write sizes; the peer's digest must match ours. */
export async function driveSink(session: Session, bytes: number): Promise<void> {
  const stream = await session.openStream();
  const reader = new StreamReader(stream);
  stream.write(commandHeader(SINK, 0, bytes));
  const digest = await writeRandomBytes(stream, bytes);
  const theirs = await reader.read(32);
  if (!theirs.equals(digest)) throw new Error('SINK digest differs');
  stream.end();
  await reader.readToEnd();
}

/** FINREPLY: we write, half-close, and read the peer's digest and reply after our FIN, then EOF. */
export async function driveFinReply(session: Session, bytes: number, replyBytes: number): Promise<void> {
  const stream = await session.openStream();
  const reader = new StreamReader(stream);
  const data = randomSlice(bytes);
  stream.write(commandHeader(FINREPLY, replyBytes));
  stream.end(data);
  const digest = await reader.read(32);
  if (!digest.equals(sha256(data))) throw new Error('FINREPLY digest differs');
  const reply = await reader.readToEnd();
  if (!reply.equals(pattern(replyBytes))) throw new Error(`FINREPLY reply differs (${reply.length} of ${replyBytes} bytes)`);
}

/** WRITECLOSE: the peer writes `bytes` and closes; we read every byte, then EOF. */
export async function driveWriteClose(session: Session, bytes: number): Promise<void> {
  const stream = await session.openStream();
  const reader = new StreamReader(stream);
  stream.write(commandHeader(WRITECLOSE, 0, bytes));
  const data = await reader.readToEnd();
  if (data.length !== bytes || !data.equals(pattern(bytes)))
    throw new Error(`WRITECLOSE got ${data.length} of ${bytes} bytes or wrong content`);
  stream.end();
}
