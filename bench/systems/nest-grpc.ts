/**
 * Nest gRPC: a Nest microservice app on `Transport.GRPC` (@grpc/grpc-js) with one unary method, `Echo`, whose
 * message carries the payload as a string field (bench/echo.proto); the client is Nest's `ClientGrpcProxy`.
 *
 *   node nest-grpc.js server           prints LISTENING <port>; PEAK on stdin → peak RSS
 *   node nest-grpc.js client <port>    benchmark agent (RUN <spec> on stdin → RESULT)
 */
import 'reflect-metadata';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  type ClientGrpc,
  ClientProxyFactory,
  GrpcMethod,
  GrpcStreamMethod,
  type MicroserviceOptions,
  Transport,
} from '@nestjs/microservices';
import { firstValueFrom, from, map, type Observable, type Observer, reduce } from 'rxjs';
import type { Done, Driver } from '../cases/spec.js';
import { runAgent } from '../lib/agent.js';
import { chunkGenerator, type ChunkOptions } from '../lib/chunks.js';
import { hostServer } from '../lib/server-host.js';
import { freePort } from '../lib/free-port.js';

interface EchoMessage {
  data: string;
}
interface Chunk {
  data: Buffer;
}
interface UploadReply {
  bytes: number;
}
interface EchoService {
  Echo(message: EchoMessage): Observable<EchoMessage>;
  Upload(chunks: Observable<Chunk>): Observable<UploadReply>;
}

// build/bench/systems/ → the repository's bench/echo.proto
const protoPath = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'echo.proto');
const grpcOptions = (port: number) => ({ package: 'bench', protoPath, url: `127.0.0.1:${port}` });

@Controller()
class EchoController {
  @GrpcMethod('Echo', 'Echo')
  echo(message: EchoMessage): EchoMessage {
    return message;
  }

  /** The upload cases: a client-streaming rpc; the chunks arrive as an Observable, the count goes back. */
  @GrpcStreamMethod('Echo', 'Upload')
  upload(chunks: Observable<Chunk>): Observable<UploadReply> {
    return chunks.pipe(
      reduce((bytes, chunk) => bytes + chunk.data.length, 0),
      map((bytes) => ({ bytes })),
    );
  }
}

@Module({ controllers: [EchoController] })
class GrpcBenchModule {}

class EchoObserver implements Observer<EchoMessage> {
  #reply: string | undefined;
  constructor(
    readonly payload: string,
    readonly done: Done,
  ) {}
  next(value: EchoMessage): void {
    this.#reply = value.data;
  }
  error(error: unknown): void {
    this.done(error);
  }
  complete(): void {
    this.done(this.#reply === this.payload ? undefined : new Error(`echo reply differs: got ${this.#reply?.length ?? 'no'} chars`));
  }
}

class GrpcDriver implements Driver {
  readonly #client: ClientGrpc & { close(): void };
  readonly #service: EchoService;
  constructor(port: number) {
    this.#client = ClientProxyFactory.create({ transport: Transport.GRPC, options: grpcOptions(port) });
    this.#service = this.#client.getService<EchoService>('Echo');
  }
  async connect(): Promise<void> {
    await firstValueFrom(this.#service.Echo({ data: 'hello' }));
  }
  echo(payload: string, done: Done): void {
    this.#service.Echo({ data: payload }).subscribe(new EchoObserver(payload, done));
  }

  /** The upload cases: client streaming. */
  readonly uploadVariants = ['grpc'] as const;

  async upload(_variant: string, options: ChunkOptions): Promise<number> {
    // The same async generator as nestjs-smux's streamed request, as the Observable Nest's gRPC client takes.
    // (ClientGrpcProxy subscribes and calls the call's write() per value without waiting for it: no backpressure.)
    let handed = 0;
    const counted = { ...options, onChunk: (n: number) => ((handed += n), options.onChunk(n)) };
    const source = from(chunkGenerator(counted)).pipe(map((data) => ({ data })));
    const reply = await firstValueFrom(this.#service.Upload(source));
    // The count is a uint32 in echo.proto: an upload sized by time may pass 4 GiB (≈ 750 MB/s for 5.75 s).
    return reply.bytes === handed % 2 ** 32 ? handed : reply.bytes;
  }

  async close(): Promise<void> {
    this.#client.close();
  }
}

if (process.argv[2] === 'server') {
  const port = await freePort();
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(GrpcBenchModule, {
    transport: Transport.GRPC,
    options: grpcOptions(port),
    logger: false,
  });
  await app.listen();
  hostServer(port);
} else {
  runAgent((port) => new GrpcDriver(port));
}
