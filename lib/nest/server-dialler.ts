import type { Socket } from 'node:net';
import { isSmuxError, type Session, SmuxError } from '../smux/index.js';
import { ClientSmux, failClientCalls } from './client-smux.js';
import { type ControlLink, SERVE_CALLS, type ServeHook } from './control-link.js';
import type { ClientSmuxOptions } from './interfaces.js';
import { formatAddress, resolveClientOptions } from './options.js';

/** What a {@link ServerDialler} hands its server. */
export interface DiallerHost {
  /** A session to the other side is up, over `socket`: serve the calls it makes (a ServerConnection of its own). */
  adopt(session: Session, link: () => ControlLink | null, remote: string, socket: Socket): void;
}

/**
 * The dialling side of a ServerSmux with `connectTo`: a {@link ClientSmux} that keeps its connection up — dialled at
 * `listen()`, redialled after a loss (with the client's backoff) — and whose HELLO says it serves calls, so the
 * listening side may call this server's handlers over it. The same ClientSmux is `server.client`, for this side's
 * own calls over the same connection.
 */
export class ServerDialler {
  /** The ClientProxy of the connection (this side's calls to the other side). */
  readonly client: ClientSmux;
  /** The address dialled, as logs show it. */
  readonly where: string;
  #running = false;
  #keepAlive: NodeJS.Timeout | null = null;

  constructor(options: ClientSmuxOptions, host: DiallerHost) {
    const where = formatAddress(resolveConnectTo(options).address);
    const serve: ServeHook = (session, link, socket) => host.adopt(session, link, where, socket);
    this.client = new ClientSmux({ ...options, [SERVE_CALLS]: serve } as ClientSmuxOptions);
    this.where = where;
    // A lost (or drained) connection is redialled at once: the other side can only call us while we are connected.
    this.client.on('close', () => this.#dial());
  }

  /** Starts dialling; failures are retried in the background until one succeeds or {@link stop}. */
  start(): void {
    this.#running = true;
    // A listening server's socket keeps the process alive; a dialling one has only our (unref'd) timers.
    this.#keepAlive ??= setInterval(noop, 0x7fff_ffff);
    this.#dial();
  }

  /** Calls of this server's own ({@link client}) whose stream is open: a close lets them finish, as those it serves. */
  callsInFlight(): number {
    let calls = 0;
    for (const connection of this.client.connections) calls += connection.callsInFlight;
    return calls;
  }

  /** Fails this server's own calls with `error`, cancelled on the other side (the close's time is up). @returns how many */
  failCalls(error: SmuxError): number {
    return failClientCalls(this.client, error);
  }

  /** Stops redialling (the server is closing; its connection's calls finish first). */
  halt(): void {
    this.#running = false;
  }

  /** Stops redialling and closes the connection gracefully. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#keepAlive !== null) clearInterval(this.#keepAlive);
    this.#keepAlive = null;
    await this.client.close();
  }

  #dial(): void {
    if (this.#running) this.client.connect().catch(noop); // a failed attempt is retried with backoff by the client
  }
}

function noop(): void {}

/** The client options of `connectTo`, checked: a refusal names the ServerSmux option it came from. */
function resolveConnectTo(options: ClientSmuxOptions): ReturnType<typeof resolveClientOptions> {
  try {
    return resolveClientOptions(options);
  } catch (error) {
    if (!isSmuxError(error, 'ERR_SMUX_INVALID_CONFIG')) throw error;
    throw new SmuxError('ERR_SMUX_INVALID_CONFIG', `ServerSmux option connectTo: ${error.message}`, { cause: error });
  }
}
