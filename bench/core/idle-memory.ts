/**
 * Heap bytes per open idle stream: one process holds both ends of a session over loopback TCP, opens N streams
 * (each has sent its SYN and a few bytes, which the other side has received), and measures the heap growth
 * after a full GC. Run with --expose-gc.  node idle-memory.js <streams> <duplex|channel>
 */
import net from 'node:net';
import { once } from 'node:events';
import { Session, type SmuxChannel, type SmuxStream } from '../../lib/smux/index.js';
import { report } from '../lib/process.js';

const count = Number(process.argv[2] ?? 10_000);
const face = (process.argv[3] ?? 'duplex') as 'duplex' | 'channel';
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');

function heap(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

const listener = net.createServer();
listener.listen(0, '127.0.0.1');
await once(listener, 'listening');
const accepted = once(listener, 'connection');
const socket = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
await once(socket, 'connect');
const [serverSocket] = (await accepted) as [net.Socket];
const config = { version: 2 as const, maxStreams: count + 10 };
const client = Session.client(socket, config);
const server = Session.server(serverSocket, config);
const held: Array<SmuxStream | SmuxChannel> = [];
const noop = { onData() {}, onEnd() {}, onClose() {} };
if (face === 'channel') server.on('channel', (ch) => (ch.setHandler(noop), held.push(ch)));
else server.on('stream', (s) => (s.on('data', () => undefined), s.on('error', () => undefined), held.push(s)));
const hello = Buffer.from('hi');

const before = heap();
for (let i = 0; i < count; i++) {
  if (face === 'channel') {
    const ch = client.openChannel(noop);
    ch.write(hello);
    held.push(ch);
  } else {
    const s = await client.openStream();
    s.on('data', () => undefined).on('error', () => undefined); // destroy() at the end errors them
    s.write(hello);
    held.push(s);
  }
}
while (server.numStreams < count || held.length < 2 * count) await new Promise((r) => setImmediate(r));
await new Promise((r) => setTimeout(r, 100));
const after = heap();
const perStream = (after - before) / (2 * count); // both ends of each stream live in this process
report({ face, streams: count, heapBytesPerStream: Math.round(perStream) });
client.destroy();
server.destroy();
listener.close();
