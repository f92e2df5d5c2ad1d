/**
 * Bulk-transfer peer for `npm run bench:core`, one process per role:
 *
 *   node bulk-peer.js server raw|smux|nest <version>          prints LISTENING <port>; counts what it receives
 *   node bulk-peer.js client raw|smux|nest|go <version> <port> <bytes>|<seconds>s [<warm-up seconds>s]
 *
 * The client writes <bytes> (or for <seconds>) in 64 KiB writes (honouring backpressure), the server replies with
 * the byte count (8 bytes) once it has them all; the client reports MB/s from its first write to that reply.
 * Sized by time, a transfer first runs a warm-up transfer of its own (a stream of the same session, or a socket
 * of its own for raw TCP) that is not measured: a process starts with cold code, and at 512 MiB a transfer
 * measured the JIT as much as the transport (issue 11: size every run by time). `go` targets a
 * Go smux server (test/interop/peer `serve`) through the DISCARD command of the interop protocol, by bytes. `nest` is smux
 * with the configuration the Nest transport gives its sessions (ServerSmux's and ClientSmux's defaults: v2, a
 * 256 KiB window, auto-tuning on); `<version>` is then ignored.
 */
import net from 'node:net';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { resolveClientOptions, resolveServerOptions } from '../../lib/nest/options.js';
import { Session, type SmuxConfig } from '../../lib/smux/index.js';
import { report } from '../lib/process.js';

const CHUNK = Buffer.alloc(64 * 1024, 0xa5);
const [role, kind, versionArg, portArg, amountArg, warmupArg] = process.argv.slice(2);
const version = Number(versionArg ?? 1) as 1 | 2;

/** The session configuration of this side. */
function config(side: 'client' | 'server'): Partial<SmuxConfig> {
  if (kind !== 'nest') return { version };
  return side === 'server' ? resolveServerOptions({}).smux : resolveClientOptions({}).smux;
}

function countBytes(stream: NodeJS.ReadableStream & Writable): void {
  let total = 0;
  stream.on('data', (chunk: Buffer) => (total += chunk.length));
  stream.on('end', () => {
    const reply = Buffer.alloc(8);
    reply.writeBigUInt64LE(BigInt(total));
    stream.end(reply);
  });
}

async function server(): Promise<void> {
  const listener = net.createServer((socket) => {
    if (kind === 'raw') return countBytes(socket);
    const session = Session.server(socket, config('server'));
    session.on('stream', (stream) => countBytes(stream));
    session.on('close', () => undefined);
  });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  process.stdout.write(`LISTENING ${(listener.address() as net.AddressInfo).port}\n`);
  process.stdin.resume().on('end', () => process.exit(0));
}

/** How much one transfer sends: a byte count, or a time (the bytes are then what fits in it). */
type Amount = { bytes: number } | { ms: number };

function parseAmount(arg: string | undefined): Amount {
  if (arg === undefined) throw new Error('bulk-peer client: missing <bytes> or <seconds>s');
  if (arg.endsWith('s')) return { ms: Number(arg.slice(0, -1)) * 1000 };
  return { bytes: Number(arg) };
}

/** Writes the amount in 64 KiB writes, honouring backpressure; resolves with the bytes written. */
async function writeAll(target: Writable, amount: Amount): Promise<number> {
  let sent = 0;
  if ('ms' in amount) {
    // Bounded by the clock: checked once per 64 KiB write.
    const deadline = performance.now() + amount.ms;
    while (performance.now() < deadline) {
      sent += CHUNK.length;
      if (!target.write(CHUNK)) await once(target, 'drain');
    }
    return sent;
  }
  for (; sent < amount.bytes; sent += CHUNK.length) {
    const n = Math.min(CHUNK.length, amount.bytes - sent);
    if (!target.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) await once(target, 'drain');
  }
  return amount.bytes;
}

async function readExactly(source: NodeJS.ReadableStream, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let have = 0;
  for await (const chunk of source) {
    chunks.push(chunk as Buffer);
    have += (chunk as Buffer).length;
    if (have >= n) break;
  }
  return Buffer.concat(chunks).subarray(0, n);
}

/** One transfer on `target`: the amount written, then the server's count read back; returns bytes and ms. */
async function transfer(target: Writable & NodeJS.ReadableStream, amount: Amount): Promise<{ bytes: number; ms: number }> {
  const started = performance.now();
  const sent = await writeAll(target, amount);
  if (kind !== 'go') target.end();
  const reply = await readExactly(target, 8);
  const ms = performance.now() - started;
  const received = Number(reply.readBigUInt64LE());
  if (received !== sent) throw new Error(`server received ${received} of ${sent} bytes`);
  return { bytes: sent, ms };
}

async function client(): Promise<void> {
  const amount = parseAmount(amountArg);
  const warmup = warmupArg === undefined ? null : parseAmount(warmupArg);
  if (kind === 'go' && !('bytes' in amount && warmup === null)) throw new Error('bulk-peer client go: a byte count, no warm-up');
  const socket = net.connect(Number(portArg), '127.0.0.1');
  await once(socket, 'connect');
  socket.setNoDelay(true);
  const session = kind === 'raw' ? null : Session.client(socket, config('client'));
  /** A fresh target: a stream of the session, or for raw TCP the socket (first) or a socket of its own. */
  const open = async (first: boolean): Promise<Writable & NodeJS.ReadableStream> => {
    if (session !== null) return session.openStream();
    if (first) return socket;
    const own = net.connect(Number(portArg), '127.0.0.1');
    await once(own, 'connect');
    own.setNoDelay(true);
    return own;
  };
  let warmed: { bytes: number; ms: number } | null = null;
  if (warmup !== null) {
    const target = await open(false);
    warmed = await transfer(target, warmup);
    if (target !== socket && session === null) (target as net.Socket).destroy();
  }
  const target = await open(true);
  if (kind === 'go') {
    const header = Buffer.alloc(16);
    header[0] = 6; // DISCARD: the Go peer reads n bytes and replies with the count
    header.writeBigUInt64LE(BigInt((amount as { bytes: number }).bytes), 8);
    target.write(header);
  }
  const { bytes, ms } = await transfer(target, amount);
  report({ kind, version, bytes, ms, mbps: bytes / 1e3 / ms, warmupBytes: warmed?.bytes ?? 0 });
  if (session !== null) await session.close();
  socket.destroy();
}

await (role === 'server' ? server() : client());
