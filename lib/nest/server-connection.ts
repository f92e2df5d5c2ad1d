import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { Session, type SmuxChannel, SmuxError } from '../smux/index.js';
import { holdReading, observeSession } from '../smux/session-layer.js';
import { SlotSet } from '../util/slot-set.js';
import type { CallMessage } from './call-codec.js';
import { ConnectionBudget } from './connection-budget.js';
import { closeWithin } from './dial.js';
import { ConnectionDrain, type DrainedConnection } from './connection-drain.js';
import { EventGate } from './event-gate.js';
import type { ControlLink } from './control-link.js';
import { ServerCall } from './server-call.js';
import type { ConnectionHost, ConnectionOrigin } from './server-connection-host.js';
import { endFailure, hangUpAfter, logConnectionEnd, versionRefusal } from './server-connection-end.js';
import { helloRefusal, ServerControl } from './server-control.js';
import { callsCutOff, newSmuxConnection, type SmuxConnection } from './smux-connection.js';

/**
 * One client connection on the server: its smux session, the calls running on it, and the connection-level
 * rules — the version policy, the hello, refusing a connection over `maxConnections` with a clear error — and
 * the log line for how it ended.
 */
export class ServerConnection implements DrainedConnection {
  /** The smux session. */
  readonly session: Session;
  /** Calls counted against `maxCallsPerConnection`: from their SYN until they are answered (or end otherwise). */
  readonly calls = new SlotSet<ServerCall>({
    get: (call) => call.connectionSlot,
    set: (call, slot) => {
      call.connectionSlot = slot;
    },
  });
  /** `address:port` of the client. */
  readonly remote: string;
  /** The client's address (its IP), for the per-address limit. */
  readonly address: string;
  /** What the connection holds of the server's memory. */
  readonly budget: ConnectionBudget;
  /** Its event handlers running and their events' bytes: past either limit, the connection is not read. */
  readonly events: EventGate;
  /** When the last call started, or the connection opened (for evicting idle connections). */
  lastCallAt: number;
  /** The app's face of the connection (`ctx.getConnection()`, `server.connections`); null when it is refused. */
  readonly face: SmuxConnection | null;
  readonly #host: ConnectionHost;
  #refusal: SmuxError | null;
  #hangingUp = false; // a refused connection's first stream arrived: it hangs up shortly
  #control: ServerControl | null = null; // the control stream and its PING, PONG and DRAIN, once the hello is done
  #firstBytes: Buffer | null = null;
  readonly #where: string; // `from <address>` (accepted) or `to <address>` (dialled), as log lines say it
  #versionChecked = false;
  readonly #drain: ConnectionDrain; // maxConnectionAge, its grace, DRAIN
  #dialledLink: (() => ControlLink | null) | null = null; // a dialled connection's control link (its connector's)
  #disconnected = false; // closed by sweep() with an error of ours: a caller that does not read
  #runningAtFailure: number | null = null; // calls the client waited for when its socket failed (before they were ended)
  #announced = false; // 'connection' went out

  /**
   * @param host - the server
   * @param origin - the socket the server accepted, or the session it dialled (`connectTo`)
   * @param refusal - set when the connection is over `maxConnections`: every stream is answered with it, then
   *   the connection closes
   */
  constructor(host: ConnectionHost, origin: ConnectionOrigin, refusal: SmuxError | null) {
    this.#host = host;
    this.#refusal = refusal;
    this.budget = new ConnectionBudget(host.options, host.clock);
    this.#drain = new ConnectionDrain(this, host);
    this.lastCallAt = host.clock.now();
    if ('accepted' in origin) {
      const socket = origin.accepted;
      this.address = socket.remoteAddress ?? 'unix';
      this.remote = socket.remoteAddress === undefined ? 'a unix socket peer' : `${socket.remoteAddress}:${socket.remotePort}`;
      socket.once('data', (chunk: Buffer) => (this.#firstBytes = chunk)); // what a client that is not smux sent
      // Before the session's own listener, which ends the calls: by the time the session reports its end, none runs.
      socket.once('error', () => (this.#runningAtFailure = this.runningCalls));
      this.session = Session.server(socket, host.options.smux);
    } else {
      // We dialled: the peer is a listening ServerSmux, which said hello to us (our connector holds that link). The
      // session listens to its socket already: ours goes first, so the calls it ends on an error are counted too.
      this.address = origin.remote;
      this.remote = origin.remote;
      this.session = origin.dialled;
      origin.socket.prependOnceListener('error', () => (this.#runningAtFailure = this.runningCalls));
      this.#dialledLink = origin.link;
      this.#versionChecked = true;
    }
    const session = this.session;
    // A connection we dialled has our control stream open for good: it is not a call waiting for an answer.
    this.events = new EventGate(host.options.maxEventsPerConnection, host.options.maxPendingRequestBytes, (hold) =>
      holdReading(session, hold, (this.#dialledLink?.() ?? null) === null ? 0 : 1),
    );
    observeSession(this.session, { channel: (channel) => this.#open(channel) });
    // The face first: its own 'close' listener marks it closed before 'disconnect' is emitted (#ended).
    this.face = refusal === null ? this.#createFace(host, 'accepted' in origin ? origin.accepted : null) : null;
    observeSession(this.session, { close: (error) => this.#ended(error) });
    if (refusal !== null) hangUpAfter(this.session, host.clock, 10_000); // a client that never opens a stream
    const { maxConnectionAge } = host.options;
    if (refusal === null && maxConnectionAge > 0 && 'accepted' in origin) this.#drain.startAge(maxConnectionAge);
    this.#where = `${'accepted' in origin ? 'from' : 'to'} ${this.remote}`;
    host.debug('connection', `Connection ${this.#where}`);
  }

  #createFace(host: ConnectionHost, socket: Socket | null): SmuxConnection {
    const certificate = socket instanceof TLSSocket ? socket.getPeerCertificate() : null;
    return newSmuxConnection({
      id: host.nextConnectionId(),
      remoteAddress: this.remote,
      peerCertificate: certificate === null || Object.keys(certificate).length === 0 ? null : certificate,
      session: this.session,
      clock: host.clock,
      maxMessageBytes: host.options.maxMessageBytes,
      servesCalls: () => this.#dialledLink !== null || this.#control?.link.peerServes === true, // a server we dialled serves
      // A handler still running may call its caller back during the close: that is its work, bounded by closeTimeout
      // (past it the connection is closed, and a handler that ignored its signal is refused as closing too).
      closing: () => host.closing() && (this.session.isClosed || !this.#handlerRunning()),
      ping: (timeoutMs) => this.ping(timeoutMs),
      rtt: () => this.rtt,
      close: () => closeWithin(this.session, host.clock, host.options.closeTimeout),
      failure: (error) => this.#failure(error),
      callSettled: () => host.callHost.callStopped(), // a close waiting for our calls to the peer looks again
    });
  }

  /** Answers a HELLO: this stream is the connection's control stream. */
  answerHello(call: ServerCall, message: CallMessage): void {
    this.calls.delete(call); // not a call
    const refusal = helloRefusal(message.body, this.#dialledLink !== null, this.#control !== null);
    if (refusal !== null) return call.refuse(refusal);
    this.#control = new ServerControl(call.channel, this.#host, message.body);
    this.#drain.helloArrived(); // drained before the hello arrived: DRAIN now, or close once idle
    this.announce();
  }

  /**
   * Announces the connection (`'connection'`) once: at its peer's hello, so that `servesCalls` is known (found by a
   * new-user trial); from a peer that says none, before its first call or event; a dialled one, as it is adopted.
   */
  announce(): void {
    if (this.#announced || this.face === null) return;
    this.#announced = true;
    this.#host.established(this);
  }

  /** True once DRAIN went to a client that reads it: it closes the connection itself when its calls are done. */
  get leavesByItself(): boolean {
    return this.#drain.leavesByItself;
  }

  /** A message on the control stream after the hello. */
  controlMessage(message: CallMessage): void {
    this.#control?.link.receive(message);
  }

  /** The last round-trip time measured to the peer (ms), or null. */
  get rtt(): number | null {
    return this.#controlLink()?.rtt ?? null;
  }

  /** The control stream's link: ours (we answered the hello), or our connector's (we dialled). */
  #controlLink(): ControlLink | null {
    return this.#dialledLink === null ? (this.#control?.link ?? null) : this.#dialledLink();
  }

  /**
   * Measures the round trip to the client on the control stream. @returns ms
   * @throws SmuxError `ERR_SMUX_UNAVAILABLE` before the hello, for a client too old to answer, or once closed;
   *   `ERR_SMUX_TIMEOUT` without an answer within `timeoutMs`
   */
  ping(timeoutMs: number): Promise<number> {
    const link = this.#controlLink();
    if (link === null) return Promise.reject(new SmuxError('ERR_SMUX_UNAVAILABLE', `${this.remote} has not said hello`));
    return link.ping(timeoutMs);
  }

  /** Sends DRAIN, when the client reads it (the server's close() tells every client first). */
  announceDrain(reason: string): void {
    this.#drain.announce(reason);
  }

  // ── DrainedConnection ──────────────────────────────────────────────────────────────────────────────────

  /** Calls counted on the connection: running, answered ones waiting for their caller's FIN, cancelled ones whose handler runs on. */
  get callCount(): number {
    return this.calls.size;
  }

  /** Ends the calls still running with ERR_SMUX_SHUTTING_DOWN (`why`): a drained connection's grace is over. */
  shutdownCalls(why: string): void {
    for (const call of this.calls.toArray()) call.shutdown(why);
  }

  /** The control link of the client's hello (ours: we answered it), or null before it. */
  helloLink(): ControlLink | null {
    return this.#control?.link ?? null;
  }

  /** A stream of this connection is gone; the control stream's going ends its pings (they fail at once). */
  callClosed(call: ServerCall): void {
    if (!call.handlerRunning) this.calls.delete(call); // else when it returns (callDone): it holds its slot till then
    if (call.channel === this.#control?.channel) {
      this.#control.link.close(new SmuxError('ERR_SMUX_UNAVAILABLE', `the control stream of ${this.remote} closed`, { retryable: true }));
    }
  }

  #handlerRunning(): boolean {
    let running = false;
    this.calls.forEach((call) => (running ||= call.handlerRunning));
    return running;
  }

  /** Calls the caller still waits for (not answered ones waiting for its FIN, nor cancelled ones whose handler runs on). */
  get runningCalls(): number {
    let running = 0;
    this.calls.forEach((call) => {
      if (call.running) running++;
    });
    return running;
  }

  /** A call is over and its handler returned: the limit counts the others; a drained connection may close now. */
  callDone(call: ServerCall): void {
    this.calls.delete(call);
    this.#drain.callDone();
  }

  /**
   * A stream the client opened. Calls count against `maxCallsPerConnection` from their SYN, so requests still
   * arriving cannot pile up beyond it; one over the limit (or on a refused connection, or during shutdown) is
   * answered with the error as soon as its first bytes arrive, without buffering its request.
   */
  #open(channel: SmuxChannel): void {
    if (!this.#versionChecked) this.#checkVersion();
    const { maxCallsPerConnection } = this.#host.options;
    let refusal = this.#refusal;
    if (refusal === null && this.#host.closing()) refusal = new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'the server is shutting down');
    else if (refusal === null && this.calls.size >= maxCallsPerConnection) {
      refusal = new SmuxError('ERR_SMUX_LIMIT', `the connection has reached its limit of ${maxCallsPerConnection} calls in flight`);
      this.#host.warn('limit', `A call from ${this.remote} was refused: ${refusal.message}`);
    }
    const call = new ServerCall(this.#host.callHost, channel, this, refusal, refusal === null ? this.budget : null);
    if (refusal === null) {
      this.calls.add(call);
      this.lastCallAt = call.openedAt;
    } else if (this.#refusal !== null && !this.#hangingUp) {
      this.#hangingUp = true;
      hangUpAfter(this.session, this.#host.clock, 1_000); // time for its first bytes to arrive and the refusal to go out
    }
  }

  /** True when no call is running and none started for `ms`. */
  idleFor(ms: number, now: number): boolean {
    // A peer that serves calls is never idle for eviction: this side's own calls to it are not counted in `calls`.
    if (this.#dialledLink !== null || this.#control?.link.peerServes === true) return false;
    return this.calls.size === 0 && now - this.lastCallAt >= ms;
  }

  /**
   * True when the client has opened no stream — no hello, no call — for `ms` since it connected: a ClientSmux that
   * got no answer to its hello within HELLO_TIMEOUT (hello.ts) has given the connection up already.
   */
  silentFor(ms: number, now: number): boolean {
    return !this.#versionChecked && now - this.lastCallAt >= ms; // lastCallAt: still when it connected
  }

  /**
   * Closes the connection to give its slot to a new one (it is idle, or silent): gracefully, so a ClientSmux simply
   * connects again when it next calls.
   */
  evict(): void {
    const which = this.#versionChecked ? 'idle connection' : 'connection that opened no stream';
    this.#host.debug('eviction', `Closed the ${which} from ${this.remote} to admit a new one`);
    void this.session.close();
  }

  /**
   * The periodic check: requests that do not arrive in time, and a caller that has left its replies unread with
   * its budget exhausted for `replyStallTimeout` (it is disconnected).
   */
  sweep(now: number): void {
    const { requestTimeout, replyStallTimeout } = this.#host.options;
    for (const call of this.calls.toArray()) call.sweep(now, requestTimeout);
    this.budget.settle();
    const stalled = this.budget.stalledFor();
    if (stalled >= replyStallTimeout) {
      const why = `it left ${this.budget.queuedReplyBytes} bytes of replies unread for ${Math.round(stalled)} ms (maxQueuedReplyBytes, replyStallTimeout)`;
      this.#host.warn('stalled', `Disconnected ${this.remote}: ${why}`);
      this.#disconnected = true;
      this.session.destroy(new SmuxError('ERR_SMUX_LIMIT', `the server disconnected a caller that does not read: ${why}`));
    }
  }

  /** The first stream shows the client's protocol version: a server that pins one refuses the other. */
  #checkVersion(): void {
    this.#versionChecked = true;
    this.#refusal ??= versionRefusal(this.#host, this.session.version, this.remote);
  }

  /**
   * Why the connection failed, or undefined (see `endFailure`) — and whatever ended it when calls this server made
   * on it were in flight: the peer leaving, or dying, lost them (a new-user trial: a worker SIGKILLed mid-call left the
   * gateway's log a debug line and its `'disconnect'` without an error).
   */
  #failure(closedWith: SmuxError | undefined): SmuxError | undefined {
    if (this.face !== null && callsCutOff(this.face) > 0) return closedWith;
    return endFailure(closedWith, this.#runningAtFailure ?? this.runningCalls);
  }

  /** The connection is over: its timers stop, pings in flight fail, and the log line says how it ended. */
  #ended(closedWith: SmuxError | undefined): void {
    const running = this.#runningAtFailure ?? this.runningCalls;
    this.#host.closed(this, this.#failure(closedWith));
    this.#drain.stop();
    this.#control?.link.close(closedWith ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', 'the connection closed'));
    const ownCutOff = this.face === null ? 0 : callsCutOff(this.face);
    logConnectionEnd(this.#host, this.#where, this.session, this.#firstBytes, running, closedWith, this.#disconnected, ownCutOff);
  }
}
