import type { SmuxError } from './errors.js';
import type { SmuxStream } from './stream.js';
import type { StreamCore } from './stream-core.js';
import { Fifo } from '../util/fifo.js';

/** What the acceptor needs from its session. */
export interface AcceptorHost {
  /** Wraps a peer-opened stream for `acceptStream()`. */
  open(core: StreamCore): SmuxStream;
  /** The backlog is full: stop reading the socket (as Go does). */
  pauseReading(): void;
  /** The backlog has room again. */
  resumeReading(): void;
}

interface Waiter {
  resolve(stream: SmuxStream): void;
  reject(error: SmuxError): void;
}

/**
 * The streams the peer opened that no `'stream'`/`'channel'` listener took, up to `acceptBacklog` of them, and
 * the `acceptStream()` calls waiting for one: a stream goes to the oldest waiter, else to the backlog.
 */
export class StreamAcceptor {
  readonly #backlog = new Fifo<StreamCore>();
  readonly #limit: number;
  readonly #host: AcceptorHost;
  #waiters: Waiter[] = [];

  /**
   * @param limit - `acceptBacklog`
   * @param host - the session
   */
  constructor(limit: number, host: AcceptorHost) {
    this.#limit = limit;
    this.#host = host;
  }

  /** A stream the peer opened, for the oldest waiter or the backlog (reading pauses once the backlog is full). */
  offer(core: StreamCore): void {
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) return waiter.resolve(this.#host.open(core));
    this.#backlog.push(core);
    if (this.#backlog.length >= this.#limit) this.#host.pauseReading();
  }

  /** The oldest stream of the backlog (reading resumes below the limit), or null when it is empty. */
  take(): SmuxStream | null {
    const core = this.#backlog.shift();
    if (core === undefined) return null;
    if (this.#backlog.length < this.#limit) this.#host.resumeReading();
    return this.#host.open(core);
  }

  /** Resolves with the next stream offered. */
  wait(): Promise<SmuxStream> {
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** The session is closing or gone: waiters get `error`; returns the backlog's streams (now forgotten). */
  close(error: SmuxError): StreamCore[] {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(error);
    return this.#backlog.drain();
  }
}
