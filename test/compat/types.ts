// The package's types as a user's code meets them, compiled by run.mjs with `strict` and `skipLibCheck: false`
// (so our .d.ts files and Nest's are checked too) under several TypeScript versions and module settings:
// CommonJS (node10 resolution: "types" and "typesVersions"), node16 and nodenext from a CommonJS and from an
// ES module package ("exports", require and import conditions), and bundler. Never run, only compiled.
// run.mjs also checks that every name the package exports is imported here (by name) and which build's
// declarations (dist/cjs or dist/esm) the compiler read.
import 'reflect-metadata';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { type Duplex, PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Controller, Inject, Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type ClientProxy, ClientsModule, Ctx, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, map, type Observable, of } from 'rxjs';
import {
  type CallControl,
  ClientSmux,
  type ClientSmuxOptions,
  type ReconnectOptions,
  SMUX_TRANSPORT,
  ServerSmux,
  type ServerSmuxOptions,
  type SmuxClientAsyncRegistration,
  type SmuxClientEvents,
  type SmuxClientRegistration,
  SmuxContext,
  SmuxRecord,
  SmuxRecordBuilder,
  type SmuxRecordOptions,
  type SmuxServerEvents,
  SmuxStatus,
  type SmuxTransportOptions,
  smuxClient,
  smuxClientAsync,
  SmuxDuplex,
  type SmuxDuplexOptions,
  type SmuxFeedItem,
  type SmuxFeedOptions,
  type SmuxReplyOf,
  type SmuxSource,
  SmuxStreamedPayload,
  type SmuxStub,
  type SmuxStubEvents,
  type SmuxStubMethod,
  type SmuxStubOptions,
  type SmuxStubPattern,
  smuxFeed,
  smuxStub,
  SmuxConnection,
  type SmuxConnectionEvents,
  type SmuxConnectionInfo,
  type SmuxConnectionState,
  type SmuxDnsOptions,
  type SmuxHostAddress,
  SMUX_LATENCY_BUCKETS_MS,
  type SmuxCallFailure,
  type SmuxHistogramSnapshot,
  type SmuxMetrics,
  type SmuxMetricsSnapshot,
  // The root re-exports the smux core as well.
  Cmd,
  DEFAULT_CONFIG,
  HEADER_SIZE,
  INITIAL_PEER_WINDOW,
  MAX_FRAME_PAYLOAD,
  MAX_STREAM_ID,
  PROTOCOL_VERSIONS,
  type ProtocolVersion,
  Session,
  type SessionEvents,
  type SessionStats,
  SmuxChannel,
  type SmuxChannelHandler,
  type SmuxConfig,
  SmuxError,
  type SmuxErrorCode,
  type SmuxErrorOptions,
  SmuxStream,
  type StreamTimeoutOptions,
  type Clock,
  type TimerHandle,
  UPD_PAYLOAD_SIZE,
  isSmuxError,
  systemClock,
  validateConfig,
} from 'nestjs-smux';
import {
  Cmd as CoreCmd,
  DEFAULT_CONFIG as CORE_DEFAULT_CONFIG,
  HEADER_SIZE as CORE_HEADER_SIZE,
  INITIAL_PEER_WINDOW as CORE_INITIAL_PEER_WINDOW,
  MAX_FRAME_PAYLOAD as CORE_MAX_FRAME_PAYLOAD,
  MAX_STREAM_ID as CORE_MAX_STREAM_ID,
  PROTOCOL_VERSIONS as CORE_PROTOCOL_VERSIONS,
  type ProtocolVersion as CoreProtocolVersion,
  Session as CoreSession,
  type SessionEvents as CoreSessionEvents,
  type SessionStats as CoreSessionStats,
  SmuxChannel as CoreSmuxChannel,
  type SmuxChannelHandler as CoreSmuxChannelHandler,
  type SmuxConfig as CoreSmuxConfig,
  SmuxError as CoreSmuxError,
  type SmuxErrorCode as CoreSmuxErrorCode,
  type SmuxErrorOptions as CoreSmuxErrorOptions,
  SmuxStream as CoreSmuxStream,
  type StreamTimeoutOptions as CoreStreamTimeoutOptions,
  type Clock as CoreClock,
  type TimerHandle as CoreTimerHandle,
  UPD_PAYLOAD_SIZE as CORE_UPD_PAYLOAD_SIZE,
  isSmuxError as coreIsSmuxError,
  systemClock as coreSystemClock,
  validateConfig as coreValidateConfig,
} from 'nestjs-smux/smux';

// Subclasses overriding the public methods with compatible signatures.
export class MyClient extends ClientSmux {
  override async connect(): Promise<Session> {
    return super.connect();
  }
  override async close(): Promise<void> {
    await super.close();
  }
  override unwrap<T = Session>(): T {
    return super.unwrap<T>();
  }
  override on<K extends keyof SmuxClientEvents>(event: K, callback: SmuxClientEvents[K]): void {
    super.on(event, callback);
  }
  override send<TResult = unknown, TInput = unknown>(pattern: unknown, data: TInput): Observable<TResult> {
    return super.send<TResult, TInput>(pattern, data);
  }
}

export class MyServer extends ServerSmux {
  override listen(callback: (error?: unknown) => void): void {
    super.listen(callback);
  }
  override async close(): Promise<void> {
    await super.close();
  }
  override on<K extends keyof SmuxServerEvents>(event: K, callback: SmuxServerEvents[K]): void {
    super.on(event, callback);
  }
  override unwrap<T = NetServer>(): T {
    return super.unwrap<T>();
  }
}

@Controller()
export class MathController {
  @MessagePattern('sum')
  sum(@Payload() numbers: number[], @Ctx() ctx: SmuxContext): number {
    const headers: Readonly<Record<string, string>> = ctx.getHeaders();
    const remaining: number | undefined = ctx.getRemainingTime();
    const session: Session = ctx.getSession();
    const stream: SmuxChannel = ctx.getStream();
    const caller: SmuxConnection = ctx.getConnection();
    void [headers, remaining, session.stats.bytesIn, stream.id, ctx.signal.aborted, ctx.getPattern(), caller.id];
    return numbers.reduce((a, b) => a + b, 0);
  }

  @EventPattern('evt')
  evt(@Payload() data: { x: number }): void {
    void data.x;
  }
}

const feedOptions: SmuxFeedOptions = { bufferSize: 16 };
const pattern: SmuxStubPattern = 'sum';

// Streaming handlers: a client stream, a bidirectional stream, a byte stream, a real-time feed.
@Controller()
export class StreamController {
  @MessagePattern('total')
  async total(@Payload() items: SmuxStreamedPayload<number>): Promise<number> {
    let sum = 0;
    for await (const item of items) sum += item;
    return sum;
  }

  @MessagePattern('doubled')
  doubled(@Payload() items: SmuxStreamedPayload<number>): Observable<number> {
    return items.pipe(map((item) => item * 2));
  }

  @MessagePattern('upload')
  async upload(@Payload() name: string, @Ctx() ctx: SmuxContext): Promise<void> {
    const duplex: Duplex = ctx.getDuplex();
    await pipeline(duplex, new PassThrough());
    duplex.end(name);
  }

  @MessagePattern('frames', smuxFeed(feedOptions))
  frames(): Observable<number> {
    return of(1, 2, 3);
  }
}

/** A typed contract for smuxStub: requests, replies, streams; and events. */
export interface MathContract {
  sum(numbers: number[]): number;
  total(items: SmuxSource<number>): Promise<number>;
  frames(count: number): Observable<SmuxFeedItem<number>>;
}
export interface MathEvents {
  evt: { x: number };
}

@Injectable()
export class MathService {
  constructor(@Inject('MATH') private readonly client: ClientProxy) {}

  sum(numbers: number[]): Promise<number> {
    const record: SmuxRecord<number[]> = new SmuxRecordBuilder(numbers).setHeaders({ x: 'y' }).setTimeout(100).setWaitForReady().build();
    return firstValueFrom(this.client.send<number>('sum', record));
  }
}

const registration: SmuxClientRegistration = { name: 'MATH', options: { host: '127.0.0.1', port: 4000, timeout: 5000 } };
const asyncRegistration: SmuxClientAsyncRegistration = {
  name: 'MATH_ASYNC',
  inject: ['PORT'],
  useFactory: (port: number): ClientSmuxOptions => ({ host: '127.0.0.1', port }),
};

@Module({
  imports: [
    ClientsModule.register([
      smuxClient({ name: 'MATH', options: { host: '127.0.0.1', port: 4000, timeout: 5000 } }),
      smuxClient(registration),
    ]),
    ClientsModule.registerAsync([smuxClientAsync(asyncRegistration)]),
  ],
  controllers: [MathController, StreamController],
  providers: [MathService, { provide: 'PORT', useValue: 4000 }],
})
export class AppModule {}

// A misspelt option is a compile error (tsc fails here if it is not: an unused @ts-expect-error is an error).
// @ts-expect-error 'hots' is not an option of ClientSmux
smuxClient({ name: 'X', options: { hots: 'h' } });
// @ts-expect-error a port is a number
smuxClient({ name: 'X', options: { port: '4000' } });
// @ts-expect-error not an error code of the package
isSmuxError(new Error('x'), 'ERR_NOT_A_CODE');

export async function bootstrap(socket: Socket): Promise<void> {
  const serverOptions: ServerSmuxOptions = { host: '127.0.0.1', port: 0, maxConnections: 10 };
  const server = new MyServer(serverOptions);
  const app = await NestFactory.createMicroservice(AppModule, { strategy: server, logger: false });
  await app.listen();
  const { port }: AddressInfo = server.unwrap().address() as AddressInfo;
  server.on('session', (session: Session) => void session.numStreams);

  const reconnect: ReconnectOptions = { initialDelay: 10 };
  const client = new MyClient({ host: '127.0.0.1', port, reconnect });
  client.on('connect', (session) => void session.version);
  client.on('close', (error?: SmuxError) => void error?.code);
  const viaClient: Session = await client.connect();
  const sum = await firstValueFrom(client.send<number, number[]>('sum', [1, 2]));

  const duplexOptions: SmuxDuplexOptions = { headers: { name: 'a.bin' }, timeout: 10_000, waitForReady: true };
  const duplex: SmuxDuplex = client.openDuplex('upload', 'a.bin', duplexOptions);
  await pipeline(Readable.from([Buffer.alloc(16)]), duplex);
  const stubOptions: SmuxStubOptions<MathContract, MathEvents> = { patterns: { sum: pattern } };
  const math: SmuxStub<MathContract, MathEvents> = smuxStub<MathContract, MathEvents>(client, stubOptions);
  const total: number = await firstValueFrom(math.total(of(1, 2, 3)));
  const frame: SmuxFeedItem<number> = await firstValueFrom(math.frames(3));
  const sumMethod: SmuxStubMethod<MathContract['sum']> = math.sum;
  const events: SmuxStubEvents<MathEvents> = math.emit;
  const reply: SmuxReplyOf<Promise<Observable<string>>> = 'x';
  await firstValueFrom(events.evt({ x: 1 }), { defaultValue: undefined });
  void [total, frame.seq, frame.dropped, sumMethod, reply];
  const status: SmuxStatus = SmuxStatus.CONNECTED;
  await client.close();
  await app.close();

  try {
    await firstValueFrom(of(sum));
  } catch (e) {
    if (isSmuxError(e, 'ERR_SMUX_UNAVAILABLE')) {
      const code: SmuxErrorCode = e.code;
      const retry: boolean = e instanceof SmuxError;
      void [code, retry];
    }
  }

  // The smux core, from both entry points: the same declarations (one Session, one SmuxError), not two copies.
  const session: Session = CoreSession.client(socket, { version: 2 });
  const coreSession: CoreSession = Session.server(socket, { version: 'auto' });
  const stream: CoreSmuxStream = await session.openStream();
  const sameStream: SmuxStream = stream;
  const channel: SmuxChannel = coreSession.openChannel({
    onData: (_data: Buffer) => undefined,
    onEnd: () => undefined,
    onClose: () => undefined,
  });
  const sameChannel: CoreSmuxChannel = channel;
  const timeouts: StreamTimeoutOptions & CoreStreamTimeoutOptions = { read: 1000 };
  sameChannel.setTimeouts(timeouts);
  const error: CoreSmuxError = new SmuxError('ERR_SMUX_TIMEOUT', 'late');
  const alsoError: SmuxError = error;
  const timeoutCode: CoreSmuxErrorCode = 'ERR_SMUX_TIMEOUT';
  const isCore: boolean = coreIsSmuxError(alsoError, timeoutCode);
  const config: Readonly<SmuxConfig> = validateConfig({ version: 1 });
  const coreConfig: Readonly<CoreSmuxConfig> = coreValidateConfig(config);
  const versions: readonly ProtocolVersion[] = CORE_PROTOCOL_VERSIONS;
  const coreVersions: readonly CoreProtocolVersion[] = PROTOCOL_VERSIONS;
  const stats: SessionStats = session.stats;
  const coreStats: CoreSessionStats = stats;
  const clock: Clock = systemClock;
  const coreClock: CoreClock = coreSystemClock;
  const handle: TimerHandle & CoreTimerHandle = clock.setTimeout(() => undefined, 1);
  coreClock.clearTimeout(handle);
  const handler: SmuxChannelHandler & CoreSmuxChannelHandler = {
    onData: () => undefined,
    onEnd: () => undefined,
    onClose: () => undefined,
  };
  const sessionEvents: Array<keyof SessionEvents | keyof CoreSessionEvents> = ['stream', 'channel', 'close'];
  const errorOptions: SmuxErrorOptions | CoreSmuxErrorOptions | undefined = undefined;
  const numbers: number[] = [
    Cmd.SYN,
    CoreCmd.FIN,
    HEADER_SIZE,
    CORE_HEADER_SIZE,
    UPD_PAYLOAD_SIZE,
    CORE_UPD_PAYLOAD_SIZE,
    MAX_FRAME_PAYLOAD,
    CORE_MAX_FRAME_PAYLOAD,
    INITIAL_PEER_WINDOW,
    CORE_INITIAL_PEER_WINDOW,
    MAX_STREAM_ID,
    CORE_MAX_STREAM_ID,
    DEFAULT_CONFIG.maxFrameSize,
    CORE_DEFAULT_CONFIG.keepAliveInterval,
  ];
  const recordOptions: SmuxRecordOptions = { headers: { x: 'y' } };
  const record = new SmuxRecord({ a: 1 }, recordOptions);
  const built: SmuxRecord<{ a: number }> = new SmuxRecordBuilder({ a: 1 }).setHeaders({ x: 'y' }).setTimeout(100).setWaitForReady().build();
  const control: CallControl | undefined = undefined;
  const transportOptions: SmuxTransportOptions = { path: '/tmp/smux.sock', smux: { version: 2 } };
  const clientOptions: ClientSmuxOptions = { ...transportOptions, waitForReady: true };
  const transport: symbol = SMUX_TRANSPORT;
  const ctor: typeof SmuxContext = SmuxContext;
  const netServer: NetServer = server.unwrap<NetServer>();
  void [viaClient, status, sameStream, isCore, coreConfig, versions, coreVersions, coreStats, handler, sessionEvents, errorOptions];
  void [numbers, record.data.a, built.options.timeout, control, clientOptions, transport, ctor, netServer.listening];
}

// Connections (issue 10): both directions, many hosts, ping, metrics.
export async function connections(): Promise<void> {
  const hosts: SmuxHostAddress[] = [
    { host: '127.0.0.1', port: 4000 },
    { host: '127.0.0.2', port: 4000 },
  ];
  const dns: SmuxDnsOptions = { refreshInterval: 30_000, resolve: (name) => Promise.resolve([name]) };
  const client = new ClientSmux({ hosts, connectionsPerAddress: 2, pingInterval: 5_000 });
  const named = new ClientSmux({ host: 'orders', port: 4000, dns });
  const infos: SmuxConnectionInfo[] = client.connections;
  const state: SmuxConnectionState | undefined = infos[0]?.state;
  const rtt: number = await client.ping(1_000);
  const gateway = new ServerSmux({ port: 4000, maxConnectionAge: 60_000, maxConnectionAgeGrace: 10_000 });
  gateway.on('connection', (connection: SmuxConnection) => void (connection.data['seen'] = connection.remoteAddress));
  gateway.on('disconnect', (connection: SmuxConnection, error?: SmuxError) => void [connection.id, error?.code]);
  const close: SmuxConnectionEvents['close'] = (error?: SmuxError) => void error;
  for (const connection of gateway.connections.values()) {
    connection.on('close', close);
    const proxy: ClientProxy = connection;
    const doubled: number = await firstValueFrom(connection.send<number>('double', 21));
    const ms: number = await connection.ping();
    void [proxy, doubled, ms, connection.servesCalls, connection.peerCertificate?.subject, connection.rtt];
  }
  const worker = new ServerSmux({ connectTo: { host: 'gateway', port: 4000, reconnect: { maxDelay: 10_000 } } });
  const workerClient: ClientSmux = worker.client;
  const metrics: SmuxMetrics = client.metrics;
  const snapshot: SmuxMetricsSnapshot = gateway.metrics.snapshot();
  const latency: SmuxHistogramSnapshot = snapshot.latency;
  const failures: Partial<Record<SmuxCallFailure, number>> = snapshot.calls.failed;
  const buckets: readonly number[] = SMUX_LATENCY_BUCKETS_MS;
  void [named, state, rtt, workerClient, metrics.side, latency.count, failures, buckets];
}
