import type { ConnectionOptions, TlsOptions } from 'node:tls';
import type { Deserializer, Serializer } from '@nestjs/microservices';
import { type Clock, DEFAULT_CONFIG, type SmuxConfig, validateConfig } from '../smux/index.js';
import type { ClientSmuxOptions, ServerSmuxOptions } from './interfaces.js';
import { SERVE_CALLS, type ServeHook } from './control-link.js';
import { MIN_CONTENDED_WINDOW } from '../smux/config.js';
import { check, clientRules, dnsRules, fail, hostRules, reconnectRules, serverRules } from './option-rules.js';

/*
 * Both sides resolve and check all their options once, in the constructor: a wrong type, a value out of range
 * or an unknown name is a SmuxError ERR_SMUX_INVALID_CONFIG naming the option, the value with its type and
 * what is allowed — never a surprise on the first connection.
 */

const MiB = 1024 * 1024;
/** Streams a server connection may have open beyond maxCallsPerConnection: its control stream, and refused calls. */
export const STREAM_BAND = 64;
/**
 * The window each side of the transport gives a v2 stream (Go's default is 64 KiB): one stream moves up to this
 * much per round trip, and a 64 KiB window kept bulk transfers (uploads, byte streams) near half the socket's
 * speed (bench/README.md: +73 % for uploads at 256 KiB; 1 MiB was no better).
 */
const STREAM_WINDOW = 256 * 1024;
/**
 * How far the core's receive-window auto-tuning (smux `maxStreamWindow`) may grow a v2 stream's window while a
 * bulk transfer keeps it full and its reader keeps up (growth is lent from `maxReceiveBuffer`). 512 KiB doubles
 * what one stream moves per round trip on a real link and costs nothing on loopback; 1 MiB was slower on
 * loopback (docs/NOTES.md, issue 11).
 */
const MAX_STREAM_WINDOW = 512 * 1024;
/**
 * A stream's window while other streams of its connection receive data (smux `contendedStreamWindow`): what a bulk
 * reply or upload may have in the socket ahead of the small calls beside it. Measured on loopback with 64 MiB
 * replies back to back beside 64 small calls (docs/NOTES.md): with the window at 512 KiB the small calls' p99 was
 * 2.15 × their p99 alone (replies at 964 MB/s), limited to 128 KiB 1.19 × (352 MB/s); a harness of the same shape
 * put 256 KiB at ≈ 1.9 – 2.3 × and 64 KiB below 230 MB/s.
 */
const CONTENDED_STREAM_WINDOW = 128 * 1024;

/** Where to listen or connect. */
export type Address = { readonly path: string } | { readonly host: string; readonly port: number };

/** A side's options, resolved: every default filled in, every value checked. */
interface ResolvedCommon {
  readonly address: Address;
  readonly maxMessageBytes: number;
  readonly serializer: Serializer | undefined;
  readonly deserializer: Deserializer | undefined;
  readonly clock: Clock;
}

/** {@link ServerSmuxOptions}, resolved. */
export interface ResolvedServerOptions extends ResolvedCommon {
  readonly tls: TlsOptions | undefined;
  /** Session config for every connection (its version is `'auto'`: the policy below decides). */
  readonly smux: Partial<SmuxConfig>;
  /** The version a pinned server insists on, or null for `'auto'`. */
  readonly pinnedVersion: 1 | 2 | null;
  readonly maxConnections: number;
  readonly maxCallsPerConnection: number;
  readonly maxEventsPerConnection: number;
  readonly maxReplyBufferBytes: number;
  readonly closeTimeout: number;
  readonly finTimeout: number;
  readonly maxPendingRequestBytes: number;
  readonly maxQueuedReplyBytes: number;
  readonly replyStallTimeout: number;
  readonly requestTimeout: number;
  readonly evictIdleAfter: number;
  readonly maxConnectionsPerAddress: number;
  readonly maxConnectionAge: number;
  readonly maxConnectionAgeGrace: number;
  /** Where a server that dials out connects (checked by its ClientSmux), or undefined for a listening one. */
  readonly connectTo: ClientSmuxOptions | undefined;
}

/** {@link ClientSmuxOptions}, resolved. */
export interface ResolvedClientOptions extends ResolvedCommon {
  readonly tls: ConnectionOptions | undefined;
  readonly smux: Partial<SmuxConfig>;
  readonly timeout: number;
  readonly waitForReady: boolean;
  readonly maxSourceBufferBytes: number;
  readonly maxConcurrentCalls: number;
  readonly maxQueuedCalls: number;
  readonly connectTimeout: number;
  readonly reconnect: { readonly initialDelay: number; readonly maxDelay: number; readonly factor: number; readonly jitter: number };
  /** Every address to connect to (`hosts`, or `host`/`port`/`path` as one); `address` is the first. With `dns`, the names. */
  readonly addresses: readonly Address[];
  /** DNS resolution of the addresses' host names, or null. */
  readonly dns: ResolvedDnsOptions | null;
  /** Connections to each address. */
  readonly connectionsPerAddress: number;
  /** Calls the server makes on our connections, served by a dialling ServerSmux (internal: `SERVE_CALLS`); null for a plain client. */
  readonly serveCalls: ServeHook | null;
  readonly pingInterval: number;
}

/** {@link SmuxDnsOptions}, resolved (`resolve` undefined: the system's resolver). */
export interface ResolvedDnsOptions {
  readonly refreshInterval: number;
  readonly resolve: ((hostname: string) => Promise<readonly string[]>) | undefined;
}

/** Checks and completes {@link ServerSmuxOptions}. @throws SmuxError `ERR_SMUX_INVALID_CONFIG` */
export function resolveServerOptions(input: ServerSmuxOptions | undefined): ResolvedServerOptions {
  const options = check('ServerSmux', input, serverRules);
  refuseWindowsOfV2('ServerSmux', options.smux);
  const maxCallsPerConnection = options.maxCallsPerConnection ?? 1_000;
  // What every session gets: the transport's defaults under the user's smux options. Validated whole, as each
  // session validates it: checked alone, a maxStreamWindow below the transport's 256 KiB window passed here and
  // threw on the first connection (found by a new-user trial).
  const sessionSmux = {
    // Streams beyond the calls a connection may run (plus its control stream and a band answered with a clear
    // ERR_SMUX_LIMIT) are refused by the session itself, at a constant tiny cost.
    maxStreams: maxCallsPerConnection + STREAM_BAND,
    maxStreamBuffer: streamWindow(options.smux),
    maxStreamWindow: maxStreamWindow(options.smux),
    contendedStreamWindow: contendedStreamWindow(options.smux),
    ...options.smux,
  };
  const smux = validateConfig({ version: 'auto', ...sessionSmux }, 'ServerSmux option smux.');
  const common = resolveCommon('ServerSmux', options);
  // A connection may hold one whole request at least: the default follows a raised maxMessageBytes. 12 MiB, not 16:
  // with twice maxQueuedReplyBytes beside it a connection's bound was 33–37 MiB, above the 32 MiB issue 9 set, and the
  // raw-stall attack read 34.4 MiB once in a clean-clone CI run (docs/NOTES.md, "A byte stream's write buffer counted").
  const maxPendingRequestBytes = options.maxPendingRequestBytes ?? Math.max(12 * MiB, common.maxMessageBytes);
  if (maxPendingRequestBytes < common.maxMessageBytes) {
    fail(
      'ServerSmux',
      'maxPendingRequestBytes',
      `must be at least maxMessageBytes (${common.maxMessageBytes} bytes)`,
      maxPendingRequestBytes,
    );
  }
  if (
    options.connectTo !== undefined &&
    (options.host !== undefined || options.port !== undefined || options.path !== undefined || options.tls !== undefined)
  ) {
    fail(
      'ServerSmux',
      'connectTo',
      'cannot be combined with host, port, path or tls: those say where to listen (give the address to dial, and its tls, inside connectTo)',
      options.connectTo,
    );
  }
  const maxConnections = options.maxConnections ?? 1024;
  return {
    ...common,
    tls: options.tls,
    smux: { ...sessionSmux, version: 'auto' },
    pinnedVersion: smux.version === 'auto' ? null : smux.version,
    maxConnections,
    maxCallsPerConnection,
    maxEventsPerConnection: options.maxEventsPerConnection ?? 1_000,
    maxReplyBufferBytes: options.maxReplyBufferBytes ?? 128 * MiB,
    closeTimeout: options.closeTimeout ?? 10_000,
    finTimeout: options.finTimeout ?? 30_000,
    maxPendingRequestBytes,
    maxQueuedReplyBytes: options.maxQueuedReplyBytes ?? 8 * MiB,
    replyStallTimeout: options.replyStallTimeout ?? 30_000,
    requestTimeout: options.requestTimeout ?? 30_000,
    evictIdleAfter: options.evictIdleAfter ?? 10_000,
    maxConnectionsPerAddress: options.maxConnectionsPerAddress ?? maxConnections,
    maxConnectionAge: options.maxConnectionAge ?? 0,
    maxConnectionAgeGrace: options.maxConnectionAgeGrace ?? 0,
    connectTo: options.connectTo,
  };
}

/**
 * Window growth and the contended window are version 2's flow control: on a side pinned to version 1 they would do
 * nothing, so a value there is a mistake (0, off, is what v1 has). `maxStreamBuffer` is not refused: Go's default
 * config carries it for both versions.
 */
function refuseWindowsOfV2(
  side: string,
  smux: { version?: unknown; maxStreamWindow?: number; contendedStreamWindow?: number } | undefined,
): void {
  if (smux?.version !== 1) return;
  for (const name of ['maxStreamWindow', 'contendedStreamWindow'] as const) {
    const value = smux[name];
    if (value !== undefined && value !== 0)
      fail(side, `smux.${name}`, 'does nothing in smux protocol version 1 (smux.version is 1): leave it out', value);
  }
}

/** Checks and completes {@link ClientSmuxOptions}. @throws SmuxError `ERR_SMUX_INVALID_CONFIG` */
export function resolveClientOptions(input: ClientSmuxOptions | undefined): ResolvedClientOptions {
  const options = check('ClientSmux', input, clientRules);
  const version: unknown = options.smux?.version;
  if (version !== undefined && version !== 1 && version !== 2)
    fail('ClientSmux', 'smux.version', "must be 1 or 2 ('auto' is for servers)", version);
  refuseWindowsOfV2('ClientSmux', options.smux);
  const smux = {
    version: 2 as const,
    maxStreamBuffer: streamWindow(options.smux),
    maxStreamWindow: maxStreamWindow(options.smux),
    contendedStreamWindow: contendedStreamWindow(options.smux),
    ...options.smux,
  };
  validateConfig(smux, 'ClientSmux option smux.');
  const reconnect = check('ClientSmux', options.reconnect, reconnectRules, 'reconnect.');
  const initialDelay = reconnect.initialDelay ?? 100;
  const maxDelay = reconnect.maxDelay ?? Math.max(5_000, initialDelay);
  if (maxDelay < initialDelay)
    fail('ClientSmux', 'reconnect.maxDelay', `must be at least reconnect.initialDelay (${initialDelay} ms)`, maxDelay);
  const common = resolveCommon('ClientSmux', options);
  const addresses = options.hosts === undefined ? [common.address] : resolveHosts(options);
  const dnsInput = options.dns === true ? {} : options.dns === false ? undefined : options.dns;
  const dns = dnsInput === undefined ? undefined : check('ClientSmux', dnsInput, dnsRules, 'dns.');
  if (dns !== undefined && options.path !== undefined)
    fail('ClientSmux', 'dns', 'needs host names: it cannot be combined with path', options.dns);
  return {
    ...common,
    address: addresses[0],
    tls: options.tls,
    smux,
    timeout: options.timeout ?? 0,
    waitForReady: options.waitForReady ?? false,
    maxSourceBufferBytes: options.maxSourceBufferBytes ?? 16 * MiB,
    maxConcurrentCalls: options.maxConcurrentCalls ?? 10_000,
    maxQueuedCalls: options.maxQueuedCalls ?? 10_000,
    connectTimeout: options.connectTimeout ?? 10_000,
    reconnect: { initialDelay, maxDelay, factor: reconnect.factor ?? 2, jitter: reconnect.jitter ?? 0.2 },
    addresses,
    dns: dns === undefined ? null : { refreshInterval: dns.refreshInterval ?? 30_000, resolve: dns.resolve },
    connectionsPerAddress: options.connectionsPerAddress ?? 1,
    serveCalls: (input as { [SERVE_CALLS]?: ServeHook } | undefined)?.[SERVE_CALLS] ?? null,
    pingInterval: options.pingInterval ?? 0,
  };
}

/** The servers of the `hosts` option, each checked; an address given twice is refused (`connectionsPerAddress` is the way). */
function resolveHosts(options: ClientSmuxOptions): Address[] {
  const hosts = options.hosts ?? [];
  const alone = options.host !== undefined ? 'host' : options.port !== undefined ? 'port' : options.path !== undefined ? 'path' : null;
  if (alone !== null) fail('ClientSmux', 'hosts', `cannot be combined with ${alone} (list every server in hosts)`, hosts);
  if (hosts.length === 0) fail('ClientSmux', 'hosts', 'must list at least one server ({ host, port })', hosts);
  const seen = new Map<string, number>();
  return hosts.map((entry, i) => {
    const name = `hosts[${i}]`;
    const { host, port } = check('ClientSmux', entry, hostRules, `${name}.`);
    if (host === undefined) fail('ClientSmux', `${name}.host`, 'is required (a host name or address)', host);
    if (port === undefined) fail('ClientSmux', `${name}.port`, 'is required (a TCP port, 1–65535)', port);
    if (/^[^:]*:\d+$/.test(host))
      fail('ClientSmux', `${name}.host`, 'must be a host name or address without a port (give it as port)', host);
    const key = `${host}:${port}`;
    const first = seen.get(key);
    if (first !== undefined) {
      fail('ClientSmux', name, `repeats hosts[${first}] (${key}): for several connections to one address use connectionsPerAddress`, entry);
    }
    seen.set(key, i);
    return { host, port };
  });
}

function resolveCommon(side: string, options: ServerSmuxOptions | ClientSmuxOptions): ResolvedCommon {
  if (options.host !== undefined && /^[^:]*:\d+$/.test(options.host)) {
    fail(side, 'host', `must be a host name or address without a port (give the port as the port option)`, options.host);
  }
  if (options.path !== undefined && (options.host !== undefined || options.port !== undefined)) {
    fail(side, 'path', 'cannot be combined with host or port (a unix socket path, or a TCP host and port)', options.path);
  }
  return {
    address: options.path !== undefined ? { path: options.path } : { host: options.host ?? 'localhost', port: options.port ?? 3000 },
    maxMessageBytes: options.maxMessageBytes ?? 8 * MiB,
    serializer: options.serializer,
    deserializer: options.deserializer,
    clock: validateConfig({ clock: options.smux?.clock } as Partial<SmuxConfig>).clock,
  };
}

/** The transport's stream window, within a smaller `maxReceiveBuffer` the user gave. */
function streamWindow(smux: Partial<SmuxConfig> | undefined): number {
  return Math.min(STREAM_WINDOW, smux?.maxReceiveBuffer ?? STREAM_WINDOW);
}

/** The transport's auto-tuning ceiling, within the user's `maxReceiveBuffer` and never below the stream window. */
function maxStreamWindow(smux: Partial<SmuxConfig> | undefined): number {
  const base = smux?.maxStreamBuffer ?? streamWindow(smux);
  return Math.max(base, Math.min(MAX_STREAM_WINDOW, smux?.maxReceiveBuffer ?? DEFAULT_CONFIG.maxReceiveBuffer));
}

/**
 * The transport's contended window, within the largest window the user's options leave a stream; none (0) when
 * that is below the core's 16 KiB minimum (such a window is small already).
 */
function contendedStreamWindow(smux: Partial<SmuxConfig> | undefined): number {
  const base = smux?.maxStreamBuffer ?? streamWindow(smux);
  const window = Math.min(CONTENDED_STREAM_WINDOW, Math.max(base, smux?.maxStreamWindow ?? maxStreamWindow(smux)));
  return window < MIN_CONTENDED_WINDOW ? 0 : window;
}

/** The address as logs and errors show it. */
export function formatAddress(address: Address): string {
  return 'path' in address ? address.path : `${address.host}:${address.port}`;
}
