/**
 * `npm run sample`: two smux sessions over real TCP on 127.0.0.1. The server echoes every stream the
 * client opens; the client runs several streams at once over the one connection and checks what comes back.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import { Session, type SmuxStream } from '../lib/smux/index.js';

const config = { version: 2 as const };

async function main(): Promise<void> {
  // Server: one smux session per connection; every stream the client opens is echoed back, then ended.
  const server = net.createServer((socket) => {
    const session = Session.server(socket, config);
    session.on('stream', (stream) => stream.pipe(stream));
    session.on('close', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;

  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const session = Session.client(socket, config);

  // Three streams at once, one of them moving 8 MiB: the small ones are not held up behind it.
  const big = randomBytes(8 * 1024 * 1024);
  const started = performance.now();
  const [hello, bulk, greeting] = await Promise.all([
    echo(session, [Buffer.from('hello, '), Buffer.from('smux')]),
    echo(session, [big]),
    echo(session, [Buffer.from('half-close: we end our side, the server still answers')]),
  ]);
  const ms = performance.now() - started;
  console.log(`stream 3 echoed: "${hello.toString()}"`);
  console.log(`stream 5 echoed ${bulk.length} bytes, sha256 ${sha(bulk) === sha(big) ? 'matches' : 'DIFFERS'}`);
  console.log(`stream 7 echoed: "${greeting.toString()}"`);
  console.log(
    `${session.stats.streamsOpened} streams, ${session.stats.framesOut} frames out, ${session.stats.framesIn} in, ${ms.toFixed(0)} ms`,
  );

  await session.close();
  server.close();
  if (sha(bulk) !== sha(big) || hello.toString() !== 'hello, smux') process.exitCode = 1;
}

/** Opens a stream, writes the chunks, ends it (FIN) and reads the echo to its end. */
async function echo(session: Session, chunks: Buffer[]): Promise<Buffer> {
  const stream: SmuxStream = await session.openStream();
  for (const chunk of chunks) stream.write(chunk);
  stream.end();
  const received: Buffer[] = [];
  for await (const chunk of stream) received.push(chunk as Buffer);
  return Buffer.concat(received);
}

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

await main();
