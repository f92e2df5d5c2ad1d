/**
 * A raw smux peer for attacks: a TCP socket that writes hand-built frames (no Session of its own, so it can open
 * 200 000 streams, ignore windows and never read) and, when it reads, parses just enough of what the server sends
 * to follow the streams it asked about — a round trip to know the server has processed everything sent before, a
 * HELLO's answer. What it never does: send UPDs, or FIN its streams.
 */
import net from 'node:net';
import { type CallMessage, encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { MessageReader } from '../../lib/nest/message-reader.js';
import { writeHeader } from '../../lib/smux/frame.js';
import { Cmd, HEADER_SIZE, MAX_FRAME_PAYLOAD } from '../../lib/smux/index.js';
import { readHeader } from './frames.js';

/** How a peer treats what the server sends. */
export interface PeerOptions {
  /** Read and parse the server's frames (default), or never read a byte (the socket stays paused). */
  read?: boolean;
}

/** The answer a round trip got: the call's last message, or the connection closed, or nothing in time. */
export type RoundTrip = CallMessage | 'closed' | 'timeout';

interface Watched {
  reader: MessageReader;
  onMessage(message: CallMessage): void;
}

/** One attacking connection. */
export class AttackPeer {
  readonly socket: net.Socket;
  /** Bytes written to the socket. */
  bytesOut = 0;
  #nextId = 3; // a client's first stream id, as Go's
  #left = false;
  #closed = false;
  #pending: Buffer = Buffer.alloc(0);
  readonly #watched = new Map<number, Watched>();
  readonly #closeWaiters = new Set<() => void>();

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number, options: PeerOptions = {}): Promise<AttackPeer> {
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
    if (options.read === false) socket.pause();
    socket.on('error', () => undefined); // a reset is how many attacks end; 'close' reports it
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('close', () => reject(new Error('the connection closed before it was established')));
    });
    return new AttackPeer(socket, options.read !== false);
  }

  private constructor(socket: net.Socket, read: boolean) {
    this.socket = socket;
    socket.on('close', () => {
      this.#closed = true;
      for (const waiter of this.#closeWaiters) waiter();
      this.#closeWaiters.clear();
    });
    if (read) socket.on('data', (chunk: Buffer) => this.#parse(chunk));
  }

  /** The connection is gone. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The server closed (or reset) the connection before the attacker left: it was cut off. */
  get cutOff(): boolean {
    return this.#closed && !this.#left;
  }

  /** Stream ids this peer has used. */
  get streamsOpened(): number {
    return (this.#nextId - 3) / 2;
  }

  // ── frames ─────────────────────────────────────────────────────────────────────────────────────────────

  /** `count` SYN frames for new streams, in one buffer. */
  synFrames(count: number): Buffer {
    const bytes = Buffer.allocUnsafe(count * HEADER_SIZE);
    for (let i = 0; i < count; i++) writeHeader(bytes, i * HEADER_SIZE, 2, Cmd.SYN, 0, this.#newId());
    return bytes;
  }

  /** A NOP frame (keep-alive). */
  nop(): Buffer {
    return frame(Cmd.NOP, 0);
  }

  /** PSH frames carrying `data` on stream `id` (split at the largest payload a frame holds). */
  dataFrames(id: number, data: Buffer): Buffer[] {
    const frames: Buffer[] = [];
    for (let at = 0; at < data.length; at += MAX_FRAME_PAYLOAD) {
      const payload = data.subarray(at, Math.min(data.length, at + MAX_FRAME_PAYLOAD));
      frames.push(frame(Cmd.PSH, id, payload.length), payload);
    }
    return frames;
  }

  /** Opens a stream: its SYN and PSH frames with `data` (a call's first messages). */
  open(data: Buffer | Buffer[]): { id: number; frames: Buffer[] } {
    const id = this.#newId();
    return { id, frames: [frame(Cmd.SYN, id), ...this.dataFrames(id, Array.isArray(data) ? Buffer.concat(data) : data)] };
  }

  /**
   * Writes `bytes`; resolves true once the socket takes more (no backpressure, or 'drain'), false when the
   * connection closed or `deadline` (a `Date.now()` time) passed first.
   */
  write(bytes: Buffer | Buffer[], deadline = Number.POSITIVE_INFINITY): Promise<boolean> {
    if (this.#closed || this.socket.destroyed) return Promise.resolve(false);
    let flowing = true;
    for (const buffer of Array.isArray(bytes) ? bytes : [bytes]) {
      flowing = this.socket.write(buffer);
      this.bytesOut += buffer.length;
    }
    if (flowing) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (value: boolean): void => {
        clearTimeout(timer);
        this.socket.off('drain', drained);
        this.#closeWaiters.delete(gone);
        resolve(value);
      };
      const drained = (): void => done(true);
      const gone = (): void => done(false);
      const timer = setTimeout(gone, Math.max(0, Math.min(deadline - Date.now(), 0x7fff_ffff)));
      this.socket.once('drain', drained);
      this.#closeWaiters.add(gone);
    });
  }

  // ── round trips (a reading peer) ───────────────────────────────────────────────────────────────────────

  /**
   * Opens a stream with `messages`, writes it and waits for the server's message with LAST on it (a reply, a
   * transport error, a HELLO's answer counts as soon as it arrives). As frames are processed in order, an answer
   * means the server has processed everything sent before it.
   */
  roundTrip(messages: Buffer[], timeoutMs = 10_000): Promise<RoundTrip> {
    if (this.#closed) return Promise.resolve('closed');
    const { id, frames } = this.open(messages);
    const answer = new Promise<RoundTrip>((resolve) => {
      const done = (value: RoundTrip): void => {
        clearTimeout(timer);
        this.#watched.delete(id);
        this.#closeWaiters.delete(gone);
        resolve(value);
      };
      const gone = (): void => done('closed');
      const timer = setTimeout(() => done('timeout'), timeoutMs);
      this.#closeWaiters.add(gone);
      const hello = messages.length > 0 && messages[0][0] === Kind.HELLO;
      this.#watched.set(id, {
        reader: new MessageReader(1 << 30),
        onMessage: (message) => (hello || (message.flags & Flag.LAST) !== 0) && done(message),
      });
    });
    void this.write(frames);
    return answer;
  }

  /** A `ping` call's round trip (see {@link roundTrip}). */
  ping(timeoutMs?: number): Promise<RoundTrip> {
    return this.roundTrip(encodeMessage(Kind.REQUEST, 0, 0, { id: 'probe', pattern: 'ping' }), timeoutMs);
  }

  /** Says HELLO as a ClientSmux does: `'hello'` when the server answers with its HELLO, else its error code, or `'closed'`/`'timeout'`. */
  async hello(timeoutMs?: number): Promise<string> {
    const answer = await this.roundTrip(encodeMessage(Kind.HELLO, 0, { protocol: 1 }), timeoutMs);
    if (typeof answer === 'string') return answer;
    if (answer.kind === Kind.HELLO) return 'hello';
    const code = (answer.body as { code?: unknown } | null)?.code;
    return typeof code === 'string' ? code : `kind ${answer.kind} flags ${answer.flags}`;
  }

  /** Waits until the connection is closed (by the server), at most `ms`. */
  whenClosed(ms: number): Promise<boolean> {
    if (this.#closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#closeWaiters.delete(gone);
        resolve(false);
      }, ms);
      const gone = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.#closeWaiters.add(gone);
    });
  }

  /** Sends a NOP every `everyMs` until `deadline` (a `Date.now()` time) or until the connection closes: an idle peer that stays. */
  async holdUntil(deadline: number, everyMs = 500): Promise<void> {
    while (!this.#closed && Date.now() < deadline) {
      void this.write(this.nop());
      await new Promise((resolve) => setTimeout(resolve, Math.min(everyMs, Math.max(0, deadline - Date.now()))));
    }
  }

  /** The attacker leaves: the connection is destroyed at once (unread data makes it a reset). Idempotent. */
  leave(): void {
    if (!this.#closed) this.#left = true;
    this.socket.destroy();
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  #newId(): number {
    const id = this.#nextId;
    this.#nextId += 2;
    return id;
  }

  /** Parses frames; PSH payloads of watched streams go to their message readers, everything else is dropped. */
  #parse(chunk: Buffer): void {
    let data = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    let at = 0;
    while (data.length - at >= HEADER_SIZE) {
      const header = readHeader(data, at);
      const end = at + HEADER_SIZE + header.length;
      if (end > data.length) break;
      const watched = header.cmd === Cmd.PSH ? this.#watched.get(header.streamId) : undefined;
      if (watched !== undefined) {
        try {
          watched.reader.push(Buffer.from(data.subarray(at + HEADER_SIZE, end)), watched);
        } catch {
          this.#watched.delete(header.streamId); // a malformed reply: the round trip times out
        }
      }
      at = end;
    }
    data = data.subarray(at);
    this.#pending = data.length === 0 ? Buffer.alloc(0) : Buffer.from(data);
  }
}

/** One frame header (and no payload, or a payload of `length` bytes that the caller writes next). */
function frame(cmd: number, id: number, length = 0): Buffer {
  const header = Buffer.allocUnsafe(HEADER_SIZE);
  writeHeader(header, 0, 2, cmd, length, id);
  return header;
}

/** A REQUEST message as a caller writes it: `pattern`, `body`, and STREAM or RAW in `flags`. */
export function request(pattern: string, body: unknown, flags = 0): Buffer[] {
  return encodeMessage(Kind.REQUEST, flags, body, { id: 'a', pattern });
}
