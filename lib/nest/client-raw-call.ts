import { type SmuxChannel, SmuxError, type TimerHandle } from '../smux/index.js';
import type { AdmissionState } from './admission.js';
import { type CallMessage, decodeTransportError, Flag, Kind, type MessagePiece } from './call-codec.js';
import { CallEndpoint } from './call-endpoint.js';
import { registerEndpointOwner } from './endpoint-owner.js';
import { type CallAccess, type ClientCallHost, closedBy } from './client-call.js';
import { failDuplexLater, isStarting } from './late-failure.js';
import { failureOf, type SmuxCallFailure } from './metrics.js';
import { attachDuplex, byteStreamViolation, deliverToDuplex, duplexWrote, failDuplex, type SmuxDuplex } from './raw-duplex.js';
import type { ClientSpan } from './tracing.js';

const WAITING = 0;
const OPEN = 1;
const DONE = 2;

// Set by ClientRawCall's static block: what the transport reaches of a byte-stream call (its members are private).
let access!: CallAccess<ClientRawCall>;

/**
 * A byte-stream call on the caller's side (`client.openDuplex()`): the user's {@link SmuxDuplex} exists at once;
 * once a stream opens, the REQUEST (flag RAW) goes first and the Duplex is attached to it. The call completes
 * when both directions ended — ours with END, the server's with END + LAST — and then FINs; the server's error
 * (a plain RESPONSE + ERROR + LAST: no handler, a guard, the handler failed, a transport error) or a lost
 * connection errors the Duplex; destroying the Duplex before that cancels the call.
 *
 *   WAITING (for a slot and a connection) ──stream opened──▶ OPEN ──both ends / error / destroy──▶ DONE
 */
export class ClientRawCall {
  #admission: AdmissionState = 'none';
  /** Wait for a connection instead of failing fast while there is none. */
  readonly #waitForReady: boolean;
  readonly #host: ClientCallHost;
  readonly #duplex: SmuxDuplex;
  readonly #request: MessagePiece[];
  #endpoint: CallEndpoint | null = null;
  #state = WAITING;
  #ends = 0; // 1: our END is queued; 2: the server's END + LAST arrived
  #timer: TimerHandle | null = null;
  #startedAt = 0; // on the metrics' clock
  readonly #span: ClientSpan | null;

  /**
   * @param host - the client
   * @param duplex - the caller's Duplex
   * @param request - the encoded REQUEST (flag RAW)
   * @param timeout - the call's deadline in ms (0: none)
   * @param waitForReady - wait for a connection instead of failing fast
   * @param span - the call's trace span, ended when the call is over (its context is in `request`'s headers)
   */
  constructor(
    host: ClientCallHost,
    duplex: SmuxDuplex,
    request: MessagePiece[],
    timeout: number,
    waitForReady: boolean,
    span: ClientSpan | null = null,
  ) {
    if (host.metrics !== undefined) this.#startedAt = host.metrics.callStarted();
    this.#span = span;
    this.#host = host;
    this.#duplex = duplex;
    this.#request = request;
    this.#waitForReady = waitForReady;
    if (timeout > 0) {
      this.#timer = host.clock.setTimeout(() => {
        this.#timer = null;
        this.#fail(new SmuxError('ERR_SMUX_TIMEOUT', `the byte stream did not complete within its deadline of ${timeout} ms`));
      }, timeout);
    }
    // Destroyed (or ended both ways) before a stream opened: nothing to wait for.
    duplex.on('close', () => duplex.destroyed && this.#state === WAITING && this.#settle(false, 'ERR_SMUX_CANCELLED')); // a real close only: anyone may emit one
  }

  static {
    access = {
      done: (call) => call.#state === DONE,
      waitForReady: (call) => call.#waitForReady,
      admission: (call) => call.#admission,
      setAdmission: (call, state) => (call.#admission = state),
      launch: (call) => call.#host.launch(call),
      open: (call, channel) => call.#open(channel),
      fail: (call, error) => call.#fail(error),
    };
    registerEndpointOwner(ClientRawCall, {
      onMessage: (call, message) => call.#onMessage(message),
      onReadError: (call, error) => call.#fail(error),
      onPeerEnd: (call) => call.#onPeerEnd(),
      onClosed: (call, error) => call.#onClosed(error),
      rawPieces: () => true, // the server's RAW messages are bytes of one stream: one that arrives in pieces is taken in pieces
    });
  }

  // ── what the transport does with it (rawCallAccess) ────────────────────────────────────────────────────

  /** Sends the request on a freshly opened stream and attaches the Duplex to it. */
  #open(channel: SmuxChannel): void {
    if (this.#state !== WAITING) return channel.destroy();
    this.#state = OPEN;
    this.#endpoint = new CallEndpoint(channel, this.#host.maxMessageBytes, this, 'client', true, null, this.#host.metrics ?? null);
    this.#endpoint.write(this.#request);
    attachDuplex(this.#duplex, this.#endpoint, this.#owner);
  }

  /** Fails the call: the Duplex errors with `error` (on a later turn inside `openDuplex()`), the server sees a cancel. */
  #fail(error: unknown, failure: SmuxCallFailure = failureOf(error)): void {
    if (this.#state === DONE) return;
    this.#settle(true, failure);
    // Inside openDuplex(): told on a later turn (late-failure.ts says why).
    if (isStarting(this)) failDuplexLater(this.#duplex, error);
    else failDuplex(this.#duplex, error);
  }

  // ── what its endpoint reports (registered handlers) ────────────────────────────────────────────────────

  #onMessage(message: CallMessage): void {
    if (this.#state !== OPEN) return;
    if (message.kind === Kind.RESPONSE && (message.flags & Flag.ERROR) !== 0) {
      return (message.flags & Flag.TRANSPORT) !== 0 ? this.#fail(decodeTransportError(message.body)) : this.#fail(message.body, 'handler');
    }
    const violation = byteStreamViolation(message);
    if (violation !== null) return this.#fail(violation);
    if (message.kind === Kind.END && (message.flags & Flag.ERROR) !== 0) return this.#fail(message.body, 'handler');
    if (message.kind === Kind.END) this.#endpoint?.stopReading(); // the server's last message: nothing after it is read
    deliverToDuplex(this.#duplex, message);
  }

  #onPeerEnd(): void {
    if (this.#state === OPEN && (this.#ends & 2) === 0) {
      this.#fail(new SmuxError('ERR_SMUX_STREAM_CLOSED', 'the server ended the stream before the byte stream completed'));
    }
  }

  #onClosed(error: SmuxError | undefined): void {
    if (this.#state !== OPEN) return;
    if (error !== undefined) this.#host.cutOff(); // counted in the lost connection's log line, as calls are
    // The server's direction is complete and the caller wrote nothing (a download whose caller never called end()):
    // nothing was lost, so the Duplex closes quietly, as a half-open socket destroyed locally does. An 'error' there
    // reached no one once a `for await` over it had finished, and crashed the process (a new-user trial). Anything
    // written may have been queued unsent, whatever its callback said: that errors, as before.
    if ((this.#ends & 2) !== 0 && !duplexWrote(this.#duplex) && this.#duplex.writableLength === 0) {
      this.#settle(true, 'ERR_SMUX_SESSION_CLOSED');
      return void this.#duplex.destroy();
    }
    this.#fail(error ?? new SmuxError('ERR_SMUX_SESSION_CLOSED', `${closedBy(this.#host)} before the byte stream completed`));
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────────────────

  /** What the Duplex reports: our END queued, the server's END + LAST read, or a destroy by the user. */
  readonly #owner = {
    lastEnd: false,
    writableEnded: () => this.#ended(1),
    readableEnded: () => this.#ended(2),
    destroyed: () => this.#settle(true, 'ERR_SMUX_CANCELLED'), // before both ends: a cancel
  };

  #ended(end: 1 | 2): void {
    this.#ends |= end;
    if (this.#ends === 3 && this.#state === OPEN) this.#settle(false, null);
  }

  /** Over: `cancel` FINs at once (dropping what is queued), else FIN after our END; `failure` null when complete. */
  #settle(cancel: boolean, failure: SmuxCallFailure | null): void {
    if (this.#state === DONE) return;
    const endpoint = this.#endpoint;
    this.#state = DONE;
    this.#host.metrics?.callEnded(this.#startedAt, failure);
    this.#span?.end(failure);
    this.#endpoint = null;
    if (this.#timer !== null) this.#host.clock.clearTimeout(this.#timer);
    this.#timer = null;
    if (cancel) endpoint?.cancel();
    else endpoint?.end();
    this.#host.settled(this);
  }
}

/** What the transport reaches of a byte-stream call: the table its static block (run above) made. */
export const rawCallAccess: CallAccess<ClientRawCall> = access;
