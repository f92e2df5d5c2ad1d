import type { Socket } from 'node:net';
import { type Clock, type Session, SmuxError, type TimerHandle } from '../smux/index.js';
import { type CallMessage, encodeMessage, Kind } from './call-codec.js';

/** The features a peer names in its HELLO (`features`): `control` — it reads PING, PONG and DRAIN on the control stream. */
export const FEATURE_CONTROL = 'control';
/** `calls` — the peer that dialled serves calls on streams the other side opens (a ServerSmux with `connectTo`). */
export const FEATURE_CALLS = 'calls';

/**
 * Serves the calls a server makes on a connection we dialled (a ServerSmux with `connectTo`): called once per
 * session before its hello, with a way to reach the session's control link once the hello is done, and the session's
 * socket (whose errors tell the server how many of its calls a lost connection cut off).
 */
export type ServeHook = (session: Session, link: () => ControlLink | null, socket: Socket) => void;

/** The internal option (a symbol key, so no user can set it) through which a dialling ServerSmux hands its ClientSmux a {@link ServeHook}. */
export const SERVE_CALLS = Symbol('nestjs-smux: serve calls');

/** Queued control bytes past which a PING is not answered: a peer that pings and never reads cannot grow our queue. */
const MAX_QUEUED_PONGS = 16 * 1024;

/** What a {@link ControlLink} writes with and reports to. */
export interface ControlLinkHost {
  readonly clock: Clock;
  /** Queues one encoded message on the control stream. */
  write(buffers: Buffer[]): void;
  /** Bytes queued on the control stream and not yet taken by the socket. */
  readonly queuedBytes: number;
  /** False once the control stream is ended or gone (nothing can be written). */
  readonly open: boolean;
  /** The server asked for new calls to go to a fresh connection (`reason`: why, for logs). Client side only. */
  drain?(reason: string): void;
  /** A ping came back after `ms` (for the side's RTT metrics). */
  measured?(ms: number): void;
}

interface PendingPing {
  readonly sentAt: number;
  readonly resolve: (rtt: number) => void;
  readonly reject: (error: SmuxError) => void;
  readonly timer: TimerHandle;
}

/**
 * A connection's control stream once the hello is done (docs/PROTOCOL.md §3), the same on both sides: PING is
 * answered with PONG (the same ID), a PONG settles our PING with the round-trip time, and DRAIN tells a client
 * that new calls belong on a fresh connection. A peer that did not name the `control` feature in its HELLO is
 * never sent PING or DRAIN (an older peer would not read them).
 */
export class ControlLink {
  readonly #host: ControlLinkHost;
  readonly #peerReads: boolean;
  readonly #peerServes: boolean;
  readonly #pending = new Map<string, PendingPing>();
  #nextId = 0;
  #rtt: number | null = null;
  #closed: SmuxError | null = null;

  /**
   * @param host - where the link writes, its clock, and what it reports
   * @param peerFeatures - the `features` of the peer's HELLO
   */
  constructor(host: ControlLinkHost, peerFeatures: unknown) {
    this.#host = host;
    this.#peerReads = Array.isArray(peerFeatures) && peerFeatures.includes(FEATURE_CONTROL);
    this.#peerServes = Array.isArray(peerFeatures) && peerFeatures.includes(FEATURE_CALLS);
  }

  /** True when the peer serves calls on streams we open (it named the `calls` feature). */
  get peerServes(): boolean {
    return this.#peerServes;
  }

  /** True when the peer reads PING and DRAIN (it named the `control` feature). */
  get peerReads(): boolean {
    return this.#peerReads;
  }

  /** The last round-trip time measured, ms; null before the first PONG. */
  get rtt(): number | null {
    return this.#rtt;
  }

  /** A message the peer sent on the control stream. Unknown kinds are ignored (a later version's). */
  receive(message: CallMessage): void {
    if (message.kind === Kind.PING) {
      if (this.#host.open && this.#host.queuedBytes <= MAX_QUEUED_PONGS)
        this.#host.write(encodeMessage(Kind.PONG, 0, undefined, { id: message.id }));
    } else if (message.kind === Kind.PONG && message.id !== undefined) {
      const ping = this.#pending.get(message.id);
      if (ping === undefined) return;
      this.#pending.delete(message.id);
      this.#host.clock.clearTimeout(ping.timer);
      const rtt = this.#host.clock.now() - ping.sentAt;
      this.#rtt = rtt;
      this.#host.measured?.(rtt);
      ping.resolve(rtt);
    } else if (message.kind === Kind.DRAIN) {
      const reason = (message.body as { reason?: unknown } | null)?.reason;
      this.#host.drain?.(typeof reason === 'string' ? reason : 'the server asked');
    }
  }

  /**
   * Measures the round trip: PING, then the peer's PONG. @returns the time in ms.
   * @throws SmuxError `ERR_SMUX_TIMEOUT` without a PONG within `timeoutMs`; `ERR_SMUX_UNAVAILABLE` when the peer
   *   does not answer pings (an older version) or the connection closed
   */
  ping(timeoutMs: number): Promise<number> {
    if (this.#closed !== null) return Promise.reject(this.#closed);
    if (!this.#host.open) return Promise.reject(new SmuxError('ERR_SMUX_UNAVAILABLE', 'the control stream is closed', { retryable: true }));
    if (!this.#peerReads) {
      return Promise.reject(new SmuxError('ERR_SMUX_UNAVAILABLE', 'the peer does not answer pings (it did not name the control feature)'));
    }
    const id = (++this.#nextId).toString(36);
    const clock = this.#host.clock;
    return new Promise((resolve, reject) => {
      // Judged after the socket was read (setImmediate comes after the poll phase): after a stall of our own event
      // loop the timer fires before a PONG that is waiting in the socket, as the hello's bound does.
      const timer = clock.setTimeout(
        () =>
          setImmediate(() => {
            if (!this.#pending.delete(id)) return;
            reject(new SmuxError('ERR_SMUX_TIMEOUT', `no answer to a ping within ${timeoutMs} ms`, { retryable: true }));
          }),
        timeoutMs,
      );
      this.#pending.set(id, { sentAt: clock.now(), resolve, reject, timer });
      this.#host.write(encodeMessage(Kind.PING, 0, undefined, { id }));
    });
  }

  /** Asks the client to move new calls to a fresh connection. @returns false when it would not understand. */
  drain(reason: string): boolean {
    if (!this.#peerReads || this.#closed !== null || !this.#host.open) return false;
    this.#host.write(encodeMessage(Kind.DRAIN, 0, { reason }));
    return true;
  }

  /** The control stream is gone: pings in flight fail with `error`. */
  close(error: SmuxError): void {
    this.#closed ??= error;
    for (const ping of this.#pending.values()) {
      this.#host.clock.clearTimeout(ping.timer);
      ping.reject(error);
    }
    this.#pending.clear();
  }
}
