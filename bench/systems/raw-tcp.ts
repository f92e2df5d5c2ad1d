/**
 * Raw Node `net`, the ceiling: one socket, length-prefixed frames (u32 LE length + bytes), the server echoes
 * each frame; no Nest, no JSON, no multiplexing. Writes are gathered per event-loop turn on both ends, as a
 * careful hand-written protocol would. The payload is the same string as the others', sent as its bytes.
 *
 * The upload cases: a plain socket of its own (opened per upload, first 4 bytes "UPLD"), the chunks written as
 * fast as the socket takes them (`write()` until it says wait, then `drain`), `end()`; the server counts what
 * arrives and answers the count (u64 LE) at the end.
 *
 *   node raw-tcp.js server           prints LISTENING <port>; PEAK on stdin → peak RSS
 *   node raw-tcp.js client <port>    benchmark agent (RUN <spec> on stdin → RESULT)
 */
import net from 'node:net';
import { once } from 'node:events';
import type { Done, Driver } from '../cases/spec.js';
import { runAgent } from '../lib/agent.js';
import { type ChunkOptions, chunks } from '../lib/chunks.js';
import { hostServer } from '../lib/server-host.js';

/** The first 4 bytes of an upload connection (as a frame length it would be 1.1 GB: never an echo frame). */
const UPLOAD = Buffer.from('UPLD');

/** Splits a byte stream into length-prefixed frames. */
class FrameReader {
  #pending: Buffer | null = null;
  constructor(readonly onFrame: (frame: Buffer) => void) {}
  push(chunk: Buffer): void {
    let data = this.#pending === null ? chunk : Buffer.concat([this.#pending, chunk]);
    this.#pending = null;
    while (data.length >= 4) {
      const end = 4 + data.readUInt32LE(0);
      if (data.length < end) break;
      this.onFrame(data.subarray(4, end));
      data = data.subarray(end);
    }
    if (data.length > 0) this.#pending = data;
  }
}

function frame(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + payload.length);
  out.writeUInt32LE(payload.length, 0);
  payload.copy(out, 4);
  return out;
}

/** Gathers writes made in one event-loop turn into one `write()` (cork until the next tick). */
function gatherWrites(socket: net.Socket): (data: Buffer) => void {
  let corked = false;
  const uncork = (): void => {
    corked = false;
    socket.uncork();
  };
  return (data) => {
    if (!corked) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    socket.write(data);
  };
}

/** Reads the whole of what `socket` sends until it ends. */
async function readAll(socket: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of socket) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

class RawDriver implements Driver {
  readonly uploadVariants = ['tcp'] as const;
  readonly #socket: net.Socket;
  readonly #queue: Array<{ done: Done; length: number }> = [];
  #head = 0;
  readonly #write: (data: Buffer) => void;
  #payload: string | null = null;
  #framed: Buffer | null = null;

  constructor(readonly port: number) {
    this.#socket = net.connect(port, '127.0.0.1');
    this.#socket.setNoDelay(true);
    this.#write = gatherWrites(this.#socket);
    const reader = new FrameReader((reply) => this.#reply(reply));
    this.#socket.on('data', (chunk: Buffer) => reader.push(chunk));
    this.#socket.on('error', (error) => this.#failAll(error));
    this.#socket.on('close', () => this.#failAll(new Error('connection closed')));
  }

  async connect(): Promise<void> {
    await once(this.#socket, 'connect');
  }

  echo(payload: string, done: Done): void {
    if (payload !== this.#payload) {
      this.#payload = payload;
      this.#framed = frame(Buffer.from(payload, 'latin1'));
    }
    this.#queue.push({ done, length: this.#framed!.length - 4 });
    this.#write(this.#framed!);
  }

  #reply(reply: Buffer): void {
    const call = this.#queue[this.#head++];
    if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#head);
      this.#head = 0;
    }
    call?.done(reply.length === call.length ? undefined : new Error(`echo reply of ${reply.length} bytes, expected ${call.length}`));
  }

  /** An upload on a socket of its own: the bytes, `end()`, then the server's count. */
  async upload(_variant: string, options: ChunkOptions): Promise<number> {
    const socket = net.connect(this.port, '127.0.0.1');
    try {
      await once(socket, 'connect');
      socket.setNoDelay(true);
      const reply = readAll(socket);
      socket.write(UPLOAD);
      for (const chunk of chunks(options)) if (!socket.write(chunk)) await once(socket, 'drain');
      socket.end();
      const count = await reply;
      if (count.length !== 8) throw new Error(`the upload's answer has ${count.length} bytes, not 8`);
      return Number(count.readBigUInt64LE(0));
    } finally {
      socket.destroy();
    }
  }

  #failAll(error: Error): void {
    for (const call of this.#queue.splice(this.#head)) call.done(error);
    this.#head = 0;
    this.#queue.length = 0;
  }

  async close(): Promise<void> {
    this.#socket.destroy();
  }
}

if (process.argv[2] === 'server') {
  /** An echo connection: frames back as they come. */
  const echo = (socket: net.Socket, first: Buffer): void => {
    const write = gatherWrites(socket);
    const reader = new FrameReader((payload) => write(frame(payload)));
    reader.push(first);
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
  };
  /** An upload connection: counts the bytes after the 4-byte "UPLD", answers the count when it ends. */
  const upload = (socket: net.Socket, first: Buffer): void => {
    let bytes = first.length - UPLOAD.length;
    socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
    socket.on('end', () => {
      const count = Buffer.alloc(8);
      count.writeBigUInt64LE(BigInt(bytes), 0);
      socket.end(count);
    });
  };
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    // The first 4 bytes tell an upload from an echo connection.
    let head = Buffer.alloc(0);
    const start = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      if (head.length < UPLOAD.length) return;
      socket.off('data', start);
      if (head.subarray(0, UPLOAD.length).equals(UPLOAD)) upload(socket, head);
      else echo(socket, head);
    };
    socket.on('data', start);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  hostServer((server.address() as net.AddressInfo).port);
} else {
  runAgent((port) => new RawDriver(port));
}
