import type { Clock } from '../smux/index.js';
import { closeWithin } from './connector.js';
import type { ServerConnection } from './server-connection.js';

/** What a drain did: the connections it closed and the calls it had to end. */
export interface DrainSummary {
  readonly connections: number;
  /** Calls still running at `closeTimeout`, ended with ERR_SMUX_SHUTTING_DOWN. */
  readonly ended: number;
}

/** The open connections of a {@link ServerSmux}, and the graceful drain that ends them. */
export class ServerConnections {
  readonly #clock: Clock;
  readonly #open = new Set<ServerConnection>();
  #settledWaiter: (() => void) | null = null;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  get size(): number {
    return this.#open.size;
  }

  add(connection: ServerConnection): void {
    this.#open.add(connection);
  }

  delete(connection: ServerConnection): void {
    this.#open.delete(connection);
  }

  /** A call stopped running: a drain waiting for the running calls looks again. */
  callSettled(): void {
    this.#settledWaiter?.();
  }

  /** Calls running on every connection (answered calls waiting for the caller's FIN are not counted). */
  get runningCalls(): number {
    let running = 0;
    for (const connection of this.#open) for (const call of connection.calls) if (call.running) running++;
    return running;
  }

  /**
   * Lets running calls finish within `closeTimeout` ms, ends the rest (and requests still arriving) with the
   * retryable ERR_SMUX_SHUTTING_DOWN, then closes every connection (each within 2 s).
   */
  async drain(closeTimeout: number): Promise<DrainSummary> {
    const clock = this.#clock;
    const deadline = clock.now() + closeTimeout;
    while (this.runningCalls > 0 && clock.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = clock.setTimeout(resolve, Math.max(0, deadline - clock.now()));
        this.#settledWaiter = () => {
          clock.clearTimeout(timer);
          resolve();
        };
      });
      this.#settledWaiter = null;
    }
    let ended = 0;
    for (const connection of this.#open) {
      for (const call of [...connection.calls]) {
        if (call.running) ended++;
        call.shutdown();
      }
    }
    const connections = this.#open.size;
    await Promise.all([...this.#open].map((c) => closeWithin(c.session, clock, 2_000)));
    return { connections, ended };
  }
}
