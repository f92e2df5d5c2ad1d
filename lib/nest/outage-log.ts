import type { Clock } from '../smux/index.js';
import type { RateLimitedLog } from './log.js';

/** Attempts to one address failing in a row since its last success. */
interface Outage {
  /** The reason last logged as a warning. */
  message: string;
  attempts: number;
  since: number;
}

/**
 * What a client logs of its connection attempts, per address: the first failure of an outage (and a failure for a
 * new reason) is a warning, the attempts after it — 1 s apart while calls come — debug lines on a budget of their own,
 * and the success that ends it says how many failed and for how long (a migration trial: 5 warnings in a second of a
 * server's graceful restart). Several connections to one address share its outage.
 */
export class OutageLog {
  readonly #log: RateLimitedLog;
  readonly #clock: Clock;
  readonly #outages = new Map<string, Outage>();

  constructor(log: RateLimitedLog, clock: Clock) {
    this.#log = log;
    this.#clock = clock;
  }

  /**
   * An attempt to `where` failed. `retrying` false: nobody asked for it (a drained connection's successor) and nothing
   * retries — it is warned about, but starts no outage: the next call's attempt, maybe hours later, would count the
   * idle time as one.
   */
  failed(where: string, error: Error, retrying: boolean): void {
    const line = `Could not connect to ${where}: ${error.message} (${retrying ? 'retrying in the background' : 'the next call reconnects'})`;
    const outage = this.#outages.get(where);
    if (outage !== undefined && outage.message === error.message) {
      outage.attempts++;
      return this.#log.debug('failed connect', line); // its own budget: repeats must not use up the warnings'
    }
    this.#log.warn('connect', line);
    if (outage !== undefined) {
      outage.message = error.message;
      outage.attempts++;
    } else if (retrying) {
      this.#outages.set(where, { message: error.message, attempts: 1, since: this.#clock.now() });
    }
  }

  /** A connection to `where` is ready: a debug line, or the end of its outage. */
  connected(where: string, version: number | null): void {
    const outage = this.#outages.get(where);
    if (outage === undefined) return this.#log.debug('connection', `Connected to ${where} (smux protocol version ${version})`);
    this.#outages.delete(where);
    const attempts = `${outage.attempts} failed attempt${outage.attempts === 1 ? '' : 's'}`;
    const seconds = ((this.#clock.now() - outage.since) / 1000).toFixed(1);
    this.#log.log('reconnected', `Connected to ${where} after ${attempts} over ${seconds} s`);
  }

  /** `where` is no longer an address of the client (DNS dropped it): its outage is forgotten. */
  forget(where: string): void {
    this.#outages.delete(where);
  }

  /** The client closed: a later call starts over. */
  clear(): void {
    this.#outages.clear();
  }
}
