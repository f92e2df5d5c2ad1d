import net from 'node:net';
import type { INestMicroservice, ModuleMetadata } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { ClientSmux, type ClientSmuxOptions, ServerSmux, type ServerSmuxOptions } from '../../lib/index.js';
import { type CallMessage, encodeMessage, Kind } from '../../lib/nest/call-codec.js';
import { MessageReader } from '../../lib/nest/message-reader.js';
import { Session, type SmuxChannel, type SmuxConfig, SmuxError, type SmuxErrorCode } from '../../lib/smux/index.js';

export { closedPort, until } from '../helpers/net.js';

import { collectingLogger } from '../helpers/logs.js';

export { collectingLogger, collectLogs, loggedErrors, type LogLine, logLines } from '../helpers/logs.js';

/** A running microservice on 127.0.0.1 and what the tests need from it. */
export interface AppHandle {
  readonly app: INestMicroservice;
  readonly server: ServerSmux;
  readonly port: number;
  /** The server ends of every client connection, in accept order. */
  readonly sessions: Session[];
  /** A new client of this app (closed by {@link AppHandle.close} / {@link closeAll}). */
  client(options?: Partial<ClientSmuxOptions>): ClientSmux;
  /** Closes this app's clients, then the app. Idempotent. */
  close(): Promise<void>;
}

export interface StartOptions extends ModuleMetadata {
  /** ServerSmux options (host defaults to 127.0.0.1, port to 0). */
  server?: ServerSmuxOptions;
}

const apps = new Set<AppHandle>();
const clients = new Set<ClientSmux>();

/** Starts a Nest microservice with `controllers`/`providers`/`imports` on ServerSmux and returns its handle. */
export async function startApp(options: StartOptions = {}): Promise<AppHandle> {
  const { server: serverOptions, ...metadata } = options;
  const moduleRef = await Test.createTestingModule(metadata).compile();
  // A server that dials out (connectTo) has no address of its own to listen on.
  const listens = serverOptions?.path === undefined && serverOptions?.connectTo === undefined;
  const server = new ServerSmux(listens ? { host: '127.0.0.1', port: 0, ...serverOptions } : serverOptions);
  const sessions: Session[] = [];
  server.on('session', (session) => void sessions.push(session));
  const app = moduleRef.createNestMicroservice({ strategy: server, logger: collectingLogger });
  try {
    await app.listen();
  } catch (error) {
    await app.close();
    throw error;
  }
  const address = listens ? server.unwrap<net.Server>().address() : null;
  const port = typeof address === 'object' && address !== null ? address.port : 0; // 0 on a unix socket
  const own = new Set<ClientSmux>();
  let closing: Promise<void> | null = null;
  const handle: AppHandle = {
    app,
    server,
    port,
    sessions,
    client(clientOptions = {}) {
      const client = trackClient(
        new ClientSmux(clientOptions.path !== undefined ? clientOptions : { host: '127.0.0.1', port, ...clientOptions }),
      );
      own.add(client);
      return client;
    },
    close() {
      closing ??= (async () => {
        await Promise.all([...own].map((c) => c.close()));
        await app.close();
        apps.delete(handle);
      })();
      return closing;
    },
  };
  apps.add(handle);
  return handle;
}

/** Registers a client made outside an {@link AppHandle} so {@link closeAll} closes it. */
export function trackClient<T extends ClientSmux>(client: T): T {
  clients.add(client);
  return client;
}

/** Closes every client and app started through these helpers (use in afterEach). */
export async function closeAll(): Promise<void> {
  await Promise.all([...clients].map((c) => c.close()));
  clients.clear();
  await Promise.all([...apps].map((a) => a.close()));
  for (const raw of rawSessions) raw.destroy();
  rawSessions.clear();
}

/** A promise with its settle functions, for test-controlled ordering. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
  readonly settled: boolean;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  let settled = false;
  const promise = new Promise<T>((res, rej) => {
    resolve = (v) => {
      settled = true;
      res(v);
    };
    reject = (e) => {
      settled = true;
      rej(e);
    };
  });
  promise.catch(() => undefined);
  return {
    promise,
    resolve,
    reject,
    get settled() {
      return settled;
    },
  };
}

/** `promise`, or a clear failure naming `what` if it does not settle within `ms` (a bound, not a timing assertion). */
export async function within<T>(promise: Promise<T>, what: string, ms = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Settles the promise and returns what it rejected with (fails if it resolves). */
export async function rejection(promise: Promise<unknown>, what = 'the call'): Promise<unknown> {
  try {
    const value = await within(promise, what);
    throw new Error(`${what} resolved with ${JSON.stringify(value)} instead of failing`);
  } catch (error) {
    if (error instanceof Error && error.message.startsWith(`${what} resolved with`)) throw error;
    return error;
  }
}

/** Counts of the active handles of the kinds a transport might leak. */
export function activeResources(): Record<string, number> {
  const counts: Record<string, number> = { TCPSocketWrap: 0, TCPServerWrap: 0, Timeout: 0 };
  for (const kind of process.getActiveResourcesInfo()) if (kind in counts) counts[kind]++;
  return counts;
}

// ── raw smux callers (no ClientSmux): for what the client would not do ─────────────────────────────────────

const rawSessions = new Set<Session>();

/** A plain smux client session (transport defaults: protocol v2) over a new TCP connection. */
export async function rawSession(port: number, config: Partial<SmuxConfig> = {}): Promise<Session> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const session = Session.client(socket, { version: 2, ...config });
  rawSessions.add(session);
  return session;
}

/** A call made by hand: the messages received, the peer's FIN and the stream's close. */
export interface RawCall {
  readonly channel: SmuxChannel;
  readonly messages: CallMessage[];
  /** The first message with LAST. */
  readonly last: Promise<CallMessage>;
  /** The server's FIN. */
  readonly ended: Promise<void>;
  /** The stream closed (with its error, if any). */
  readonly closed: Promise<SmuxError | undefined>;
}

/** Opens a stream and writes `buffers` (e.g. `encodeMessage(Kind.REQUEST, …)`); never sends FIN itself. */
export function rawCall(session: Session, buffers: Buffer[]): RawCall {
  const messages: CallMessage[] = [];
  const last = deferred<CallMessage>();
  const ended = deferred();
  const closed = deferred<SmuxError | undefined>();
  const reader = new MessageReader(1 << 30);
  const sink = {
    onMessage(message: CallMessage) {
      messages.push(message);
      if ((message.flags & 1) !== 0 && !last.settled) last.resolve(message);
    },
  };
  const channel = session.openChannel({
    onData: (data) => reader.push(data, sink),
    onEnd: () => ended.resolve(),
    onClose: (error) => closed.resolve(error),
  });
  for (const buffer of buffers) channel.write(buffer);
  return { channel, messages, last: last.promise, ended: ended.promise, closed: closed.promise };
}

/**
 * An asymmetric matcher for `toEqual`: a real {@link SmuxError} instance (not a look-alike object) with `code`,
 * and optionally a message that contains `text`.
 */
export function smuxError(code: SmuxErrorCode, text?: string): unknown {
  const what = `SmuxError ${code}${text === undefined ? '' : ` containing "${text}"`}`;
  return {
    asymmetricMatch: (value: unknown) =>
      value instanceof SmuxError && value.code === code && (text === undefined || value.message.includes(text)),
    toString: () => what,
    toAsymmetricMatcher: () => what,
  };
}

/** The `code` of an error-like value (SmuxError, a Nest `{ code, message }` object, a Node error). */
export const codeOf = (error: unknown): unknown => (error as { code?: unknown } | null)?.code;

/** One encoded RESPONSE message. */
export const response = (value: unknown, flags = 0): Buffer => Buffer.concat(encodeMessage(Kind.RESPONSE, flags, value));

/** A hand-written smux server speaking the call protocol (no ServerSmux): `onRequest` decides what happens on each call. */
export async function rawServer(
  onRequest: (channel: SmuxChannel, request: CallMessage, session: Session) => void,
): Promise<{ port: number; sessions: Session[]; close(): Promise<void> }> {
  const sessions: Session[] = [];
  const listener = net.createServer((socket) => {
    const session = Session.server(socket, { version: 2 });
    sessions.push(session);
    session.on('channel', (channel) => {
      const reader = new MessageReader(1 << 20);
      // The hello is answered as a ServerSmux does; every other stream goes to `onRequest`.
      const onMessage = (m: CallMessage): void =>
        m.kind === Kind.HELLO
          ? void channel.write(Buffer.concat(encodeMessage(Kind.HELLO, 0, { protocol: 1 })))
          : onRequest(channel, m, session);
      channel.setHandler({
        onData: (data) => reader.push(data, { onMessage }),
        onEnd: () => undefined,
        onClose: () => undefined,
      });
    });
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  return {
    port: (listener.address() as net.AddressInfo).port,
    sessions,
    async close() {
      for (const session of sessions) session.destroy();
      await new Promise((resolve) => listener.close(resolve));
    },
  };
}
