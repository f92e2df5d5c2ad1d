import type { ConnectionOptions, TlsOptions } from 'node:tls';
import type { Deserializer, Serializer } from '@nestjs/microservices';
import type { SmuxConfig } from '../smux/index.js';

/** Options shared by {@link ServerSmux} and {@link ClientSmux}. */
export interface SmuxTransportOptions {
  /** Host to listen on / connect to. Default `'localhost'`. */
  host?: string;
  /** TCP port. Default 3000. */
  port?: number;
  /** A unix socket path instead of host and port. */
  path?: string;
  /**
   * smux session configuration (see `nestjs-smux/smux`). The transport defaults to protocol `version: 2`
   * (per-stream flow control is the point); both ends must use the same version.
   */
  smux?: Partial<SmuxConfig>;
  /** Largest call message accepted, in bytes (prefix `length`). Default 64 MiB. */
  maxMessageBytes?: number;
  /** Nest serializer for outgoing packets. Default: identity (packets travel in the native message format). */
  serializer?: Serializer;
  /** Nest deserializer for incoming packets. Default: Nest's own. */
  deserializer?: Deserializer;
}

/** Options of {@link ServerSmux}. */
export interface ServerSmuxOptions extends SmuxTransportOptions {
  /** TLS: `tls.createServer` options. */
  tls?: TlsOptions;
  /** Most connections at once; the extra ones get `ERR_SMUX_LIMIT` on their calls and are closed. Default 1024. */
  maxConnections?: number;
  /** Most calls running at once on one connection; extra calls fail with `ERR_SMUX_LIMIT`. Default 10 000. */
  maxCallsPerConnection?: number;
  /**
   * Most bytes of an Observable reply queued on one call (values come faster than the caller reads); beyond
   * it the call fails with `ERR_SMUX_LIMIT`. Default 128 MiB.
   */
  maxReplyBufferBytes?: number;
  /** Graceful `close()`: ms to let in-flight calls finish before ending them with `ERR_SMUX_SHUTTING_DOWN`. Default 10 000. */
  closeTimeout?: number;
  /** After its last message and FIN, ms to wait for the caller's FIN before forgetting the stream. Default 30 000. */
  finTimeout?: number;
}

/** Reconnection backoff of {@link ClientSmux}. */
export interface ReconnectOptions {
  /** First delay after a failed attempt, in ms. Default 100. */
  initialDelay?: number;
  /** Longest delay, in ms. Default 5000. */
  maxDelay?: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
}

/** Options of {@link ClientSmux} (the `options` of `ClientsModule.register([{ customClass: ClientSmux, options }])`). */
export interface ClientSmuxOptions extends SmuxTransportOptions {
  /** TLS: `tls.connect` options. */
  tls?: ConnectionOptions;
  /** Default deadline of every call, in ms (0 = none). It travels with the call; the server cancels the handler. */
  timeout?: number;
  /** Calls in flight at once; more wait in a queue. Default 10 000. */
  maxConcurrentCalls?: number;
  /** Calls waiting for a slot; beyond it a call fails at once with `ERR_SMUX_LIMIT`. Default 10 000. */
  maxQueuedCalls?: number;
  /** ms to establish a connection before failing. Default 10 000. */
  connectTimeout?: number;
  /** Backoff between reconnection attempts after failures. */
  reconnect?: ReconnectOptions;
}
