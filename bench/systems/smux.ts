/**
 * nestjs-smux: the bench's Nest microservice app (nest-app.ts) on `ServerSmux`, called through `ClientSmux`,
 * both with their defaults (smux protocol v2, one stream per call).
 *
 *   node smux.js server           prints LISTENING <port>; PEAK on stdin → peak RSS
 *   node smux.js client <port>    benchmark agent (RUN <spec> on stdin → RESULT)
 */
import 'reflect-metadata';
import type { AddressInfo, Server } from 'node:net';
import { finished } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ClientProxyFactory } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, ServerSmux } from '../../lib/index.js';
import type { Done, HeldCall } from '../cases/spec.js';
import { runAgent } from '../lib/agent.js';
import { chunkGenerator, type ChunkOptions, chunkReadable } from '../lib/chunks.js';
import { hostServer } from '../lib/server-host.js';
import { startBenchApp } from './nest-app.js';
import { DoneObserver, type Hold, NestClientDriver } from './nest-client.js';

/** ClientSmux's driver: the shared Nest one, plus the uploads only nestjs-smux has (issue 8). */
class SmuxDriver extends NestClientDriver {
  /** A streamed request (`send(pattern, source)`) and a byte stream (`openDuplex`). */
  readonly uploadVariants = ['stream', 'duplex'] as const;

  /** The memory case holds every kind of call open: unary, client stream, bidirectional, byte stream. */
  override readonly heldCalls: readonly HeldCall[] = ['unary', 'stream', 'bidi', 'duplex'];

  constructor(readonly smux: ClientSmux) {
    super(smux, (item) => (item as Buffer).length); // Buffers arrive as Buffers
  }

  /**
   * One held call of `call`'s kind. A streamed one sends one item (or 4 bytes), then keeps its source (or its side of
   * the Duplex) open until the server has measured; the handler then ends the call when the source ends.
   */
  override hold(call: HeldCall, done: Done): void {
    if (call === 'unary') return super.hold(call, done);
    const held = this.held;
    if (call === 'duplex') {
      const duplex = this.smux.openDuplex('hold.duplex');
      duplex.write('open');
      held.opened++;
      duplex.resume(); // the handler sends nothing back; read to its end
      finished(duplex, (error) => done(error ?? undefined));
      void held.released.then(() => duplex.end());
      return;
    }
    this.smux.send(call === 'stream' ? 'hold.stream' : 'hold.bidi', heldSource(held)).subscribe(new DoneObserver(done));
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

/** A held call's source: one item, then open until the hold is released. */
async function* heldSource(held: Hold): AsyncGenerator<string> {
  held.opened++;
  yield 'open';
  await held.released;
}

/**
 * The server's defaults, except two limits two cases exceed on purpose (issue 9's per-connection budget): the
 * head-of-line case's handler emits its 64 MiB reply in one synchronous burst (`from(array)`), which the default
 * `maxQueuedReplyBytes` (8 MiB; a burst up to twice that) refuses, and the memory case holds 10 000 calls open on one
 * connection, past the default `maxCallsPerConnection` (1 000). Nest TCP has neither limit.
 */
const BENCH_SERVER_LIMITS = { maxQueuedReplyBytes: 80 * 1024 * 1024, maxCallsPerConnection: 16_384 };

/**
 * The client's defaults, except the one the memory case exceeds: its 10 000 held calls plus the `hold.begin` call
 * that stays open beside them pass the default `maxConcurrentCalls` (10 000), and the last held call would wait in
 * the client's queue for a slot that never frees.
 */
const BENCH_CLIENT_LIMITS = { maxConcurrentCalls: 16_384 };

if (process.argv[2] === 'server') {
  const strategy = new ServerSmux({ host: '127.0.0.1', port: 0, ...BENCH_SERVER_LIMITS });
  // The memory case checks the held calls against the transport's own count of the calls it has open.
  await startBenchApp({ strategy }, { openCalls: () => strategy.metrics.snapshot().calls.inFlight });
  hostServer((strategy.unwrap<Server>().address() as AddressInfo).port);
} else {
  runAgent(
    (port) =>
      new SmuxDriver(
        ClientProxyFactory.create({ customClass: ClientSmux, options: { host: '127.0.0.1', port, ...BENCH_CLIENT_LIMITS } }) as ClientSmux,
      ),
  );
}
