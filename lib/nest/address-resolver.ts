import { lookup } from 'node:dns/promises';
import { type Clock, SmuxError, type TimerHandle } from '../smux/index.js';
import { describeValue } from '../util/describe.js';
import { type Address, formatAddress, type ResolvedDnsOptions } from './options.js';

/** Resolves a host name to its IP addresses. */
export type HostResolver = (hostname: string) => Promise<readonly string[]>;

/** The system's resolver, as `net.connect` uses it (/etc/hosts, then DNS), with every address instead of the first. */
export const systemResolver: HostResolver = async (hostname) => (await lookup(hostname, { all: true })).map((entry) => entry.address);

/**
 * The least time between two resolutions a lost connection asks for, in ms: a server that accepts and drops
 * connections in a loop must not turn each loss into a DNS query.
 */
export const MIN_RESOLVE_GAP = 1_000;

/** An address to connect to, and the name it was resolved from (TLS checks the server's certificate against it). */
export interface ResolvedAddress {
  readonly address: Address;
  /** The DNS name, or null when the address was given as it is. */
  readonly name: string | null;
}

/** What an {@link AddressResolver} reports. */
export interface ResolverListener {
  /**
   * A resolution ended. `addresses`: every address found, with the last ones found for a name that failed this
   * time (a failing resolver must not empty a working pool); `error`: the first failure, or null.
   */
  resolved(addresses: ResolvedAddress[], error: Error | null): void;
}

/**
 * Resolves the client's host names to all their addresses, now and then: every `refreshInterval`, at once when a
 * connection is lost ({@link refresh}, at most once per {@link MIN_RESOLVE_GAP}), and — while no name resolved to
 * anything — after the reconnect backoff's delays. One resolution runs at a time; all time goes through the clock,
 * whose timers do not hold the process.
 */
export class AddressResolver {
  readonly #targets: readonly { readonly host: string; readonly port: number }[];
  readonly #resolve: HostResolver;
  readonly #interval: number;
  readonly #clock: Clock;
  readonly #backoff: (failures: number) => number;
  readonly #listener: ResolverListener;
  readonly #known: (ResolvedAddress[] | null)[]; // per name: what it last resolved to
  #started = false;
  #running = false;
  #again = false; // a refresh was asked for while one ran
  #lastStart = -Infinity;
  #timer: TimerHandle | null = null;
  #dueAt = Infinity;
  #failures = 0; // resolutions in a row that left no address at all
  #generation = 0; // bumped by stop(): a resolution still running then is dropped

  /**
   * @param targets - the host names (and ports) to resolve
   * @param options - the interval and the resolver
   * @param clock - the client's clock
   * @param backoff - ms to wait after `failures` empty resolutions in a row
   * @param listener - told about every resolution
   */
  constructor(
    targets: readonly Address[],
    options: ResolvedDnsOptions,
    clock: Clock,
    backoff: (failures: number) => number,
    listener: ResolverListener,
  ) {
    this.#targets = targets.map((target) => {
      if ('path' in target) throw new SmuxError('ERR_SMUX_INVALID_CONFIG', `ClientSmux option dns needs host names, got ${target.path}`);
      return target;
    });
    this.#resolve = options.resolve ?? systemResolver;
    this.#interval = options.refreshInterval;
    this.#clock = clock;
    this.#backoff = backoff;
    this.#listener = listener;
    this.#known = this.#targets.map(() => null);
  }

  /** The names, as messages show them. */
  get where(): string {
    return this.#targets.map((target) => formatAddress(target)).join(', ');
  }

  /** Starts resolving (now, then every interval); once started, resolves now if nothing is known yet (a backoff is cut short). */
  start(): void {
    if (!this.#started) {
      this.#started = true;
      this.#run();
    } else if (this.#known.every((known) => known === null)) this.#run();
  }

  /** A connection was lost: resolve again soon, in case the server moved. */
  refresh(): void {
    if (!this.#started) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    const wait = this.#lastStart + MIN_RESOLVE_GAP - this.#clock.now();
    if (wait <= 0) this.#run();
    else this.#schedule(wait);
  }

  /** Stops resolving (a resolution still running is ignored); {@link start} begins again. */
  stop(): void {
    this.#started = false;
    this.#running = false;
    this.#again = false;
    this.#generation++;
    this.#clearTimer();
  }

  #run(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#clearTimer();
    this.#running = true;
    this.#lastStart = this.#clock.now();
    const generation = this.#generation;
    const lookups = this.#targets.map((target) => this.#lookup(target.host));
    void Promise.allSettled(lookups).then((results) => {
      if (generation !== this.#generation) return;
      this.#running = false;
      const error = this.#learn(results);
      const addresses = this.#known.flatMap((known) => known ?? []);
      this.#failures = addresses.length === 0 ? this.#failures + 1 : 0;
      this.#listener.resolved(addresses, error);
      if (!this.#started || generation !== this.#generation) return;
      if (this.#again) {
        this.#again = false;
        this.#schedule(MIN_RESOLVE_GAP);
      } else this.#schedule(this.#failures > 0 ? this.#backoff(this.#failures) : this.#interval);
    });
  }

  /** Asks the resolver now (a resolver that throws instead of rejecting fails the same way). */
  #lookup(hostname: string): Promise<readonly string[]> {
    try {
      return Promise.resolve(this.#resolve(hostname));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** Keeps what each name resolved to; @returns the first failure (an error, or a name with no address), or null */
  #learn(results: PromiseSettledResult<readonly string[]>[]): Error | null {
    let error: Error | null = null;
    results.forEach((result, i) => {
      const target = this.#targets[i];
      const ips = result.status === 'fulfilled' && Array.isArray(result.value) ? result.value.filter(isName) : [];
      if (ips.length > 0) {
        const unique = [...new Set(ips)];
        this.#known[i] = unique.map((ip) => ({ address: { host: ip, port: target.port }, name: target.host }));
        return;
      }
      const reason: unknown = result.status === 'rejected' ? result.reason : null;
      error ??=
        reason instanceof Error
          ? reason
          : new SmuxError(
              'ERR_SMUX_UNAVAILABLE',
              `${target.host} resolved to no address${reason === null ? '' : `: ${describeValue(reason)}`}`,
            );
    });
    return error;
  }

  /** Arms the next resolution `ms` from now, unless one is due sooner. */
  #schedule(ms: number): void {
    const at = this.#clock.now() + ms;
    if (this.#timer !== null && this.#dueAt <= at) return;
    this.#clearTimer();
    this.#dueAt = at;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = null;
      this.#dueAt = Infinity;
      if (this.#started) this.#run();
    }, ms);
  }

  #clearTimer(): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
    this.#dueAt = Infinity;
  }
}

function isName(value: unknown): value is string {
  return typeof value === 'string' && value !== '';
}
