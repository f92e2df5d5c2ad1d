/**
 * Bulk-transfer peer for `npm run bench:core`, one process per role:
 *
 *   node bulk-peer.js server raw|smux|nest <version>          prints LISTENING <port>; counts what it receives
 *   node bulk-peer.js client raw|smux|nest|go <version> <port> <bytes>
 *
 * The client writes <bytes> in 64 KiB writes (honouring backpressure), the server replies with the byte count
 * (8 bytes) once it has them all; the client reports MB/s from its first write to that reply. `go` targets a
 * Go smux server (test/interop/peer `serve`) through the DISCARD command of the interop protocol. `nest` is smux
 * with the configuration the Nest transport gives its sessions (ServerSmux's and ClientSmux's defaults: v2, a
 * 256 KiB window, auto-tuning on); `<version>` is then ignored.
 */
import net from 'node:net';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { resolveClientOptions, resolveServerOptions } from '../../lib/nest/options.js';
import { Session, type SmuxConfig, type SmuxStream } from '../../lib/smux/index.js';
import { report } from '../lib/process.js';

const CHUNK = Buffer.alloc(64 * 1024, 0xa5);
const [role, kind, versionArg, portArg, bytesArg] = process.argv.slice(2);
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

async function writeAll(target: Writable, bytes: number): Promise<void> {
  for (let sent = 0; sent < bytes; sent += CHUNK.length) {
    const n = Math.min(CHUNK.length, bytes - sent);
    if (!target.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) await once(target, 'drain');
  }
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

async function client(): Promise<void> {
  const bytes = Number(bytesArg);
  const socket = net.connect(Number(portArg), '127.0.0.1');
  await once(socket, 'connect');
  socket.setNoDelay(true);
  let target: Writable & NodeJS.ReadableStream = socket;
  let session: Session | null = null;
  if (kind !== 'raw') {
    session = Session.client(socket, config('client'));
    const stream: SmuxStream = await session.openStream();
    target = stream;
    if (kind === 'go') {
      const header = Buffer.alloc(16);
      header[0] = 6; // DISCARD: the Go peer reads n bytes and replies with the count
      header.writeBigUInt64LE(BigInt(bytes), 8);
      stream.write(header);
    }
  }
  const started = performance.now();
  await writeAll(target, bytes);
  if (kind !== 'go') target.end();
  const reply = await readExactly(target, 8);
  const ms = performance.now() - started;
  const received = Number(reply.readBigUInt64LE());
  if (received !== bytes) throw new Error(`server received ${received} of ${bytes} bytes`);
  report({ kind, version, bytes, ms, mbps: bytes / 1e3 / ms });
  if (session !== null) await session.close();
  socket.destroy();
}

await (role === 'server' ? server() : client());
