import type net from 'node:net';
import { Cmd, HEADER_SIZE, Session, type SmuxConfig, type SmuxStream } from '../../lib/smux/index.js';
import { encodeFrame } from './frames.js';
import { sessionPair, tcpPair, until } from './net.js';

/*
 * Helpers for session behaviour tests over real TCP: a cleanup registry (every session and socket a test
 * creates is destroyed in afterEach), a raw TCP peer that speaks hand-built frames and records what it
 * receives, a stream collector, and an uncaught-exception watch.
 */

const live = new Set<Session | net.Socket>();

/** Registers a session or socket for {@link cleanup}. */
export function track<T extends Session | net.Socket>(item: T): T {
  live.add(item);
  return item;
}

/** Destroys every tracked session and socket and waits (bounded) for the sockets to close. */
export async function cleanup(): Promise<void> {
  const items = [...live];
  live.clear();
  const sockets: net.Socket[] = [];
  for (const item of items) {
    if (item instanceof Session) item.destroy();
    else sockets.push(item);
  }
  for (const socket of sockets) socket.destroy();
  await until(() => sockets.every((s) => s.closed), 2_000, 'sockets to close');
}

/** A tracked client/server session pair over real TCP. */
export async function pair(
  clientConfig: Partial<SmuxConfig> = {},
  serverConfig: Partial<SmuxConfig> = clientConfig,
): ReturnType<typeof sessionPair> {
  const p = await sessionPair(clientConfig, serverConfig);
  track(p.clientSocket);
  track(p.serverSocket);
  track(p.client);
  track(p.server);
  return p;
}

/** A frame as a raw peer received it. */
export interface RawFrame {
  version: number;
  cmd: number;
  streamId: number;
  payload: Buffer;
}

/** A peer that is just a TCP socket: it writes hand-built frames and parses what the session sends. */
export class RawPeer {
  readonly frames: RawFrame[] = [];
  /** The socket read EOF. */
  ended = false;
  /** The socket closed. */
  closed = false;
  /** The socket's error, if any (ECONNRESET when the session destroyed the connection). */
  error: NodeJS.ErrnoException | null = null;
  /** Frames sent with {@link send}. */
  framesSent = 0;
  #pending = Buffer.alloc(0);

  constructor(
    readonly socket: net.Socket,
    readonly version: 1 | 2 = 1,
  ) {
    socket.on('data', (chunk: Buffer) => this.#parse(chunk));
    socket.on('end', () => (this.ended = true));
    socket.on('error', (error: NodeJS.ErrnoException) => (this.error = error));
    socket.on('close', () => (this.closed = true));
  }

  /** Sends one frame of this peer's version. */
  send(cmd: number, streamId: number, payload: Buffer | string = Buffer.alloc(0)): void {
    this.framesSent++;
    this.socket.write(encodeFrame(this.version, cmd, streamId, typeof payload === 'string' ? Buffer.from(payload) : payload));
  }

  /** Sends `count` frames of this peer's version in one write (they arrive as one read). */
  sendMany(count: number, cmd: number, streamId: number, payload: Buffer): void {
    this.framesSent += count;
    const frame = encodeFrame(this.version, cmd, streamId, payload);
    this.socket.write(Buffer.concat(Array.from({ length: count }, () => frame)));
  }

  /** Sends bytes as they are. */
  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Frames received for `streamId` (optionally of one command). */
  framesFor(streamId: number, cmd?: number): RawFrame[] {
    return this.frames.filter((f) => f.streamId === streamId && (cmd === undefined || f.cmd === cmd));
  }

  /** Every PSH payload received for `streamId`, concatenated. */
  dataFor(streamId: number): Buffer {
    return Buffer.concat(this.framesFor(streamId, Cmd.PSH).map((f) => f.payload));
  }

  /** True once a FIN for `streamId` arrived. */
  finFor(streamId: number): boolean {
    return this.framesFor(streamId, Cmd.FIN).length > 0;
  }

  #parse(chunk: Buffer): void {
    let buf = Buffer.concat([this.#pending, chunk]);
    while (buf.length >= HEADER_SIZE) {
      const length = buf.readUInt16LE(2);
      if (buf.length < HEADER_SIZE + length) break;
      this.frames.push({
        version: buf[0],
        cmd: buf[1],
        streamId: buf.readUInt32LE(4),
        payload: Buffer.from(buf.subarray(HEADER_SIZE, HEADER_SIZE + length)),
      });
      buf = buf.subarray(HEADER_SIZE + length);
    }
    this.#pending = Buffer.from(buf);
  }
}

/** A tracked `Session.server` whose peer is a {@link RawPeer} (the raw side is the client). */
export async function rawClientOf(
  serverConfig: Partial<SmuxConfig> = {},
): Promise<{ raw: RawPeer; server: Session; serverSocket: net.Socket }> {
  const { client, server: serverSocket } = await tcpPair();
  track(client);
  track(serverSocket);
  const server = track(Session.server(serverSocket, serverConfig));
  return { raw: new RawPeer(client, serverConfig.version === 2 ? 2 : 1), server, serverSocket };
}

/** A tracked `Session.client` whose peer is a {@link RawPeer} (the raw side is the server). */
export async function rawServerOf(
  clientConfig: Partial<SmuxConfig> = {},
): Promise<{ raw: RawPeer; client: Session; clientSocket: net.Socket }> {
  const { client: clientSocket, server } = await tcpPair();
  track(clientSocket);
  track(server);
  const client = track(Session.client(clientSocket, clientConfig));
  return { raw: new RawPeer(server, clientConfig.version === 2 ? 2 : 1), client, clientSocket };
}

/** What a stream delivered, gathered by a flowing 'data' listener. */
export interface Collected {
  readonly chunks: Buffer[];
  bytes: number;
  ended: boolean;
  closed: boolean;
  error: (Error & { code?: string }) | null;
  /** Everything received so far. */
  data(): Buffer;
}

/** Reads `stream` as fast as data comes, recording data, end, close and error (so 'error' is never unhandled). */
export function collect(stream: SmuxStream): Collected {
  const c: Collected = {
    chunks: [],
    bytes: 0,
    ended: false,
    closed: false,
    error: null,
    data: () => Buffer.concat(c.chunks),
  };
  stream.on('data', (chunk: Buffer) => {
    c.chunks.push(chunk);
    c.bytes += chunk.length;
  });
  stream.on('end', () => (c.ended = true));
  stream.on('close', () => (c.closed = true));
  stream.on('error', (error: Error) => (c.error = error));
  return c;
}

/** Records a stream's 'error' (so it is never unhandled) without reading it. */
export function errorOf(stream: SmuxStream): { error: (Error & { code?: string }) | null } {
  const box: { error: (Error & { code?: string }) | null } = { error: null };
  stream.on('error', (error: Error) => (box.error = error));
  return box;
}

/** Echoes everything back and ends when the peer ends. */
export function echo(stream: SmuxStream): void {
  stream.on('error', () => {});
  stream.pipe(stream);
}

/** Deterministic pseudo-random bytes (xorshift32), so a failure can be replayed. */
export function pattern(length: number, seed = 1): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf[i] = x & 0xff;
  }
  return buf;
}

/**
 * Watches for exceptions nobody caught while a test runs. (Jest also fails the running test on one; the listener
 * makes the expectation explicit.) Call `dispose()` in afterEach.
 */
export function watchUncaught(): { errors: unknown[]; dispose(): void } {
  const errors: unknown[] = [];
  const listener = (error: unknown): void => void errors.push(error);
  process.on('uncaughtException', listener);
  process.on('unhandledRejection', listener);
  return {
    errors,
    dispose() {
      process.off('uncaughtException', listener);
      process.off('unhandledRejection', listener);
    },
  };
}

/**
 * Lets the event loop run `turns` times plus `ms` of real time, for asserting that something does NOT happen
 * (e.g. paused reading). Used only for negative checks; timing logic uses a FakeClock.
 */
export async function settle(ms = 50, turns = 10): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/** Marks a stream whose error is not under test: its 'error' (e.g. when the session is torn down) is recorded, not thrown. */
export function quiet<T extends SmuxStream>(stream: T): T {
  errorOf(stream);
  return stream;
}

/**
 * Waits until both directions between two sessions are quiet: every byte each side handed to its socket has
 * been received by the other. With no timers running, nothing moves after that unless a test acts.
 */
export async function quiesced(a: Session, b: Session, ms = 10_000): Promise<void> {
  // Frames queued for the end of the turn are not counted in bytesOut yet: the balance must hold across a turn.
  const balanced = (): boolean => a.stats.bytesOut === b.stats.bytesIn && b.stats.bytesOut === a.stats.bytesIn;
  const deadline = Date.now() + ms;
  for (;;) {
    await until(balanced, Math.max(1, deadline - Date.now()), 'both directions to go quiet');
    const before = [a.stats.bytesOut, b.stats.bytesOut];
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    if (balanced() && a.stats.bytesOut === before[0] && b.stats.bytesOut === before[1]) return;
  }
}

/** The error a session ended with, once it is closed (bounded wait). */
export async function closeError(session: Session, ms = 5_000): Promise<Session['error']> {
  await until(() => session.isClosed, ms, 'the session to close');
  return session.error;
}
