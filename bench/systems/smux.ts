/**
 * nestjs-smux: the bench's Nest microservice app (nest-app.ts) on `ServerSmux`, called through `ClientSmux`,
 * both with their defaults (smux protocol v2, one stream per call).
 *
 *   node smux.js server           prints LISTENING <port>; PEAK on stdin → peak RSS
 *   node smux.js client <port>    benchmark agent (RUN <spec> on stdin → RESULT)
 */
import 'reflect-metadata';
import type { AddressInfo, Server } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { ClientProxyFactory } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, ServerSmux } from '../../lib/index.js';
import { runAgent } from '../lib/agent.js';
import { chunkGenerator, type ChunkOptions, chunkReadable } from '../lib/chunks.js';
import { hostServer } from '../lib/server-host.js';
import { startBenchApp } from './nest-app.js';
import { NestClientDriver } from './nest-client.js';

/** ClientSmux's driver: the shared Nest one, plus the uploads only nestjs-smux has (issue 8). */
class SmuxDriver extends NestClientDriver {
  /** A streamed request (`send(pattern, source)`) and a byte stream (`openDuplex`). */
  readonly uploadVariants = ['stream', 'duplex'] as const;

  constructor(readonly smux: ClientSmux) {
    super(smux, (item) => (item as Buffer).length); // Buffers arrive as Buffers
  }

  async upload(variant: string, chunks: ChunkOptions): Promise<number> {
    if (variant === 'stream') {
      // An async generator of Buffers: pulled as the stream's window allows; the handler answers with the count.
      return firstValueFrom(this.smux.send<number>('upload.stream', chunkGenerator(chunks)));
    }
    // A Readable piped into the Duplex; the handler reads it all and ends its side with the count.
    const duplex = this.smux.openDuplex('upload.duplex');
    const reply: Buffer[] = [];
    const answer = (async () => {
      for await (const chunk of duplex) reply.push(chunk as Buffer);
    })();
    await Promise.all([pipeline(chunkReadable(chunks), duplex), answer]);
    return Number(Buffer.concat(reply).toString());
  }
}

/**
 * The server's defaults, except two limits two cases exceed on purpose (issue 9's per-connection budget): the
 * head-of-line case's handler emits its 64 MiB reply in one synchronous burst (`from(array)`), which the default
 * `maxQueuedReplyBytes` (8 MiB; a burst up to twice that) refuses, and the memory case holds 10 000 calls open on one
 * connection, past the default `maxCallsPerConnection` (1 000). Nest TCP has neither limit.
 */
const BENCH_SERVER_LIMITS = { maxQueuedReplyBytes: 80 * 1024 * 1024, maxCallsPerConnection: 16_384 };

if (process.argv[2] === 'server') {
  const strategy = new ServerSmux({ host: '127.0.0.1', port: 0, ...BENCH_SERVER_LIMITS });
  await startBenchApp({ strategy });
  hostServer((strategy.unwrap<Server>().address() as AddressInfo).port);
} else {
  runAgent(
    (port) => new SmuxDriver(ClientProxyFactory.create({ customClass: ClientSmux, options: { host: '127.0.0.1', port } }) as ClientSmux),
  );
}
