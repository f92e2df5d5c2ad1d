import { type Session, SmuxError } from '../smux/index.js';
import { Fifo } from '../util/fifo.js';
import { Admission } from './admission.js';
import { type MessagePiece, PREFIX_SIZE } from './call-codec.js';
import { callAdmission, callDone, callWaitsForReady, failCall, openCall, type PendingCall } from './client-call.js';
import type { Lane } from './client-lane.js';
import type { ConnectorPool } from './connector-pool.js';

/** Something waiting for a connection: a call, an event, a `connect()`. */
interface ConnectionWaiter {
  readonly waitForReady: boolean;
  /** True once it no longer waits (settled elsewhere). */
  gone(): boolean;
  /** A connection is ready: go on it. @returns false when none could take it after all (it waits on) */
  connected(): boolean;
  unavailable(error: SmuxError): void;
}

/** A refusal of a call this client never sent (its queue is full): retrying it later is safe. */
const NOT_SENT = { retryable: true } as const;

/** The client's limits on calls. */
export interface SchedulerLimits {
  readonly maxConcurrentCalls: number;
  readonly maxQueuedCalls: number;
}

/**
 * Takes a client's calls to its connections: a slot each (bounded concurrency and queue, {@link Admission}),
 * a connection to open their streams on, chosen by the {@link ConnectorPool} — waited for, or failed fast while
 * the last attempts failed (gRPC's sticky transient failure) — and the process held alive while anything waits.
 * It knows nothing of Nest.
 */
export class CallScheduler {
  readonly #pool: ConnectorPool;
  readonly #limits: SchedulerLimits;
  readonly #admission: Admission;
  readonly #awaiting = new Fifo<ConnectionWaiter>();
  #waitingCalls = 0; // calls waiting for a connection (they hold no slot yet)
  #keepAlive: NodeJS.Timeout | null = null; // holds the process while anything waits for a connection

  constructor(pool: ConnectorPool, limits: SchedulerLimits) {
    this.#pool = pool;
    this.#limits = limits;
    this.#admission = new Admission(limits.maxConcurrentCalls, limits.maxQueuedCalls);
  }

  /**
   * A new call: it takes a slot once connected (until then the server's `maxCallsPerConnection`, from its hello,
   * is unknown), or waits for a connection.
   */
  schedule(call: PendingCall): void {
    if (this.#pool.hasReady) this.#admit(call);
    else this.#awaitConnection(call);
  }

  /** A call took a slot: open its stream (should no connection take it meanwhile, wait for the next one). */
  launch(call: PendingCall): void {
    if (callDone(call)) return;
    const lane = this.#pool.pick(true);
    if (lane !== null) return this.#openOn(lane, call);
    const waitForReady = callWaitsForReady(call);
    if (this.#failsFast(waitForReady)) return failCall(call, this.unavailable());
    this.#wait({
      waitForReady,
      gone: () => callDone(call),
      connected: () => {
        const next = this.#pool.pick(true);
        if (next !== null) this.#openOn(next, call);
        return next !== null;
      },
      unavailable: (error) => failCall(call, error),
    });
  }

  /** A call is over: its slot, and its share of its connection, are free. */
  release(call: PendingCall): void {
    const lane = callAdmission(call);
    this.#admission.release(call);
    if (typeof lane === 'object') this.#pool.settled(lane as Lane);
    // A call that found every ready connection at its server's limit waits for a share to free up.
    if (this.#awaiting.length > 0 && this.#pool.hasReady) this.connected();
  }

  /** A session for an event: a ready one, or the next one (failing fast while there is none, unless waiting). */
  sessionFor(waitForReady: boolean): Promise<Session> {
    const session = this.#usableSession();
    if (session !== null) return Promise.resolve(session);
    if (this.#failsFast(waitForReady)) return Promise.reject(this.unavailable());
    return this.nextSession(waitForReady);
  }

  /** The next session: starts an attempt unless one runs (a backoff wait is cut short), waits for its outcome. */
  nextSession(waitForReady: boolean): Promise<Session> {
    return new Promise((resolve, reject) => {
      let settled = false;
      this.#wait({
        waitForReady,
        gone: () => settled,
        connected: () => {
          const session = this.#usableSession();
          if (session === null) return false;
          settled = true;
          resolve(session);
          return true;
        },
        unavailable: (error) => {
          settled = true;
          reject(error);
        },
      });
    });
  }

  /** A request the server will refuse as too large fails here, before its bytes are sent. */
  checkSize(request: MessagePiece[]): void {
    const limit = this.#pool.maxMessageBytes;
    if (limit === undefined) return;
    let length = -PREFIX_SIZE;
    for (const buffer of request) length += buffer.length;
    if (length > limit)
      throw new SmuxError(
        'ERR_SMUX_LIMIT',
        `a call message of ${length} bytes exceeds the server's maxMessageBytes (${limit} bytes): stream larger data ` +
          "(client.send(pattern, source) or client.openDuplex()), or raise the server's maxMessageBytes",
      );
  }

  /** The error of a call that finds no connection, with why the last attempt failed as its `cause`. */
  unavailable(): SmuxError {
    const cause = this.#pool.lastError ?? undefined;
    // A server that does not speak this transport will not start speaking it: retrying that is pointless.
    const retryable = !(cause instanceof SmuxError && cause.code === 'ERR_SMUX_PROTOCOL');
    return new SmuxError('ERR_SMUX_UNAVAILABLE', `no connection: ${cause?.message ?? `not connected to ${this.#pool.where}`}`, {
      cause,
      retryable,
    });
  }

  /**
   * A connection is ready: the servers' call limits apply (the sum over the ready connections), and whatever
   * waited goes on one.
   */
  connected(): void {
    this.#limitToServers();
    for (const waiter of this.#awaiting.drain()) {
      if (waiter.gone()) continue;
      if (!waiter.connected()) this.#awaiting.push(waiter); // ids ran out at once, or no room: the next one takes it
    }
    this.#holdProcess();
  }

  /** A connection was lost: the calls the others' servers allow are what the client may run. */
  lost(): void {
    if (this.#pool.hasReady) this.#limitToServers();
  }

  /**
   * An attempt failed: once every connection's last attempt has failed, what waits fails fast (unless it waits for
   * ready). `retrying` false: an attempt nobody had asked for (a drained connection's successor) — calls that were
   * already waiting (for room on a connection) ask now, or nothing would dial for them.
   */
  attemptFailed(retrying: boolean): void {
    if (!retrying && this.#awaiting.length > 0) return this.#pool.connect();
    if (this.#pool.lastError === null) return; // others are still on their first try, or ready
    const unavailable = this.unavailable();
    for (const waiter of this.#awaiting.drain()) {
      if (waiter.gone()) continue;
      if (waiter.waitForReady) this.#awaiting.push(waiter);
      else waiter.unavailable(unavailable);
    }
    if (this.#awaiting.length > 0) this.#pool.hurry(); // calls wait for ready: the next attempt comes soon
    this.#holdProcess();
  }

  /** The client closes: every call in flight, queued or waiting fails with `error`. */
  close(error: SmuxError): void {
    for (const call of this.#admission.drain()) failCall(call, error);
    for (const waiter of this.#awaiting.drain()) if (!waiter.gone()) waiter.unavailable(error);
    this.#holdProcess();
  }

  #admit(call: PendingCall): void {
    if (callDone(call) || this.#admission.admit(call)) return;
    const { maxConcurrentCalls, maxQueuedCalls } = this.#limits;
    failCall(
      call,
      new SmuxError(
        'ERR_SMUX_LIMIT',
        `${this.#admission.running} calls in flight and ${this.#admission.queued} queued ` +
          `(maxConcurrentCalls ${maxConcurrentCalls}, maxQueuedCalls ${maxQueuedCalls})`,
        NOT_SENT, // the call never left this client: the same call may go through once the queue has room
      ),
    );
  }

  /** No connection: wait for one (bounded like the queue), or fail fast while the last attempt failed. */
  #awaitConnection(call: PendingCall): void {
    const waitForReady = callWaitsForReady(call);
    if (this.#failsFast(waitForReady)) return failCall(call, this.unavailable());
    const { maxConcurrentCalls, maxQueuedCalls } = this.#limits;
    if (this.#waitingCalls >= maxConcurrentCalls + maxQueuedCalls) {
      const limits = `maxConcurrentCalls ${maxConcurrentCalls} + maxQueuedCalls ${maxQueuedCalls}`;
      const waiting = `${this.#waitingCalls} call${this.#waitingCalls === 1 ? '' : 's'} wait${this.#waitingCalls === 1 ? 's' : ''}`;
      return failCall(call, new SmuxError('ERR_SMUX_LIMIT', `${waiting} for a connection (${limits})`, NOT_SENT));
    }
    this.#waitingCalls++;
    let waiting = true;
    const leave = (): boolean => {
      if (waiting) this.#waitingCalls--;
      waiting = false;
      return true;
    };
    this.#wait({
      waitForReady,
      gone: () => callDone(call) && leave(),
      connected: () => {
        leave();
        this.#admit(call); // it takes a slot now, and a connection once it has one
        return true;
      },
      unavailable: (error) => leave() && failCall(call, error),
    });
  }

  #openOn(lane: Lane, call: PendingCall): void {
    if (callDone(call)) return;
    const session = lane.session!; // pick() returns lanes with a session
    try {
      const channel = session.openChannel();
      this.#admission.place(call, lane);
      openCall(call, channel);
    } catch (error) {
      const reason = toSmuxError(error, 'the call could not be opened');
      // The session died before its close was reported (a ping gave up, a socket error): nothing was sent, so
      // the call certainly did not run — retryable, unlike a call cut off in flight.
      failCall(
        call,
        session.isClosed
          ? new SmuxError('ERR_SMUX_UNAVAILABLE', `no connection: ${reason.message}`, { cause: reason, retryable: true })
          : reason,
      );
    }
  }

  /** At most what the ready connections' servers allow at once (their hellos' `maxCallsPerConnection`, summed). */
  #limitToServers(): void {
    const capacity = this.#pool.capacity;
    if (capacity > 0) this.#admission.limit(Math.min(capacity, this.#limits.maxConcurrentCalls));
  }

  /**
   * Fail at once, or wait for a connection? Once an attempt has failed, calls fail fast until one succeeds — also
   * while the background retries run (gRPC's "sticky" transient failure): a peer that accepts TCP but never
   * answers must not make every call wait out a hello timeout. The first attempt, and the one after a lost
   * connection, are waited for. A call failed fast hurries the background retries (Connector.hurry).
   */
  #failsFast(waitForReady: boolean): boolean {
    if (waitForReady || this.#pool.lastError === null) return false;
    this.#pool.hurry(); // calls keep coming: the next attempt comes soon (a server back up is found within a second)
    return true;
  }

  /** Waits for a connection (starting an attempt if none runs); the process stays alive while anyone waits. */
  #wait(waiter: ConnectionWaiter): void {
    this.#awaiting.push(waiter);
    this.#holdProcess();
    this.#pool.connect();
  }

  /**
   * Our timers are unref'd (a client must not keep an app alive), and during a backoff there is no socket: a
   * script whose only work is a call waiting for the server would exit with the call pending. A ref'd handle is
   * held while anything waits for a connection.
   */
  #holdProcess(): void {
    if (this.#awaiting.length > 0) this.#keepAlive ??= setInterval(noop, 0x7fff_ffff);
    else if (this.#keepAlive !== null) {
      clearInterval(this.#keepAlive);
      this.#keepAlive = null;
    }
  }

  /** A ready session for an event, if one still has stream ids (a spent one rotates: new calls move to a fresh one). */
  #usableSession(): Session | null {
    return this.#pool.pick(false)?.session ?? null;
  }
}

function noop(): void {}

/** `error` as a SmuxError: ours as they are, anything else (a custom serializer's) as ERR_SMUX_ENCODING. */
export function toSmuxError(error: unknown, what: string): SmuxError {
  return error instanceof SmuxError
    ? error
    : new SmuxError('ERR_SMUX_ENCODING', `${what}: ${(error as Error)?.message ?? String(error)}`, { cause: error });
}
