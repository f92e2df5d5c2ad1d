import { Buffer } from 'node:buffer';
import { type Clock, type SmuxChannel, SmuxError } from '../smux/index.js';
import { encodeMessage, Kind } from './call-codec.js';
import { ControlLink, type ControlLinkHost } from './control-link.js';
import { serverHelloBody } from './hello.js';
import type { ConnectionHost } from './server-connection-host.js';

/**
 * Why a client's HELLO is not answered, or null when it is: a server we dialled never says hello to us (its
 * connector's link is the control stream), a connection has one control stream, and a HELLO names its protocol.
 * @param body - the HELLO's body
 * @param dialled - the connection is one this server dialled (`connectTo`)
 * @param answered - a HELLO of this connection was answered already
 */
export function helloRefusal(body: unknown, dialled: boolean, answered: boolean): SmuxError | null {
  if (dialled) return new SmuxError('ERR_SMUX_PROTOCOL', 'a HELLO from the server we dialled');
  const hello = body as { protocol?: unknown } | null;
  if (answered || typeof hello !== 'object' || hello === null || typeof hello.protocol !== 'number') {
    return new SmuxError('ERR_SMUX_PROTOCOL', answered ? 'a second HELLO on one connection' : 'a malformed HELLO');
  }
  return null;
}

/**
 * Why a message on the control stream after the hello is refused, or null when the control link takes it: a client
 * sends PING and PONG there, nothing else (a second HELLO, a call's REQUEST, a server's DRAIN have no meaning on it).
 * The control stream is then refused as a malformed message on it is: ERR_SMUX_PROTOCOL on it, then FIN.
 * @param kind - the message's kind
 */
export function controlRefusal(kind: number): SmuxError | null {
  if (kind === Kind.PING || kind === Kind.PONG) return null;
  const what = kind === Kind.HELLO ? 'a second HELLO on one connection' : `a message of kind ${kind}`;
  return new SmuxError('ERR_SMUX_PROTOCOL', `${what} on the control stream (only PING and PONG are read there)`);
}

/**
 * The server's end of a connection's control stream (docs/PROTOCOL.md §3), from the moment it answers the client's
 * HELLO: the stream, and the {@link ControlLink} that carries PING, PONG and DRAIN on it. It is the link's host
 * itself (how the link writes and what it reports), so an answered hello costs this one object, as the host
 * object it replaces did, without that object's four functions.
 */
export class ServerControl implements ControlLinkHost {
  /** The control stream. */
  readonly channel: SmuxChannel;
  /** PING, PONG and DRAIN on the stream. */
  readonly link: ControlLink;
  readonly #host: ConnectionHost;

  /**
   * Answers the HELLO (checked with {@link helloRefusal}) with the server's own.
   * @param channel - the stream the HELLO came on
   * @param host - the server
   * @param body - the HELLO's body (its `features` say what the client reads on the control stream)
   */
  constructor(channel: SmuxChannel, host: ConnectionHost, body: unknown) {
    this.channel = channel;
    this.#host = host;
    const { maxMessageBytes, maxCallsPerConnection } = host.options;
    channel.write(Buffer.concat(encodeMessage(Kind.HELLO, 0, serverHelloBody(maxMessageBytes, maxCallsPerConnection))));
    this.link = new ControlLink(this, (body as { features?: unknown }).features);
  }

  // ── ControlLinkHost ────────────────────────────────────────────────────────────────────────────────────

  get clock(): Clock {
    return this.#host.clock;
  }

  write(buffers: Buffer[]): void {
    for (const buffer of buffers) this.channel.write(buffer);
  }

  get queuedBytes(): number {
    return this.channel.writableLength;
  }

  get open(): boolean {
    return !this.channel.isEnded && !this.channel.isClosed;
  }

  measured(ms: number): void {
    this.#host.callHost.metrics?.recordRtt(ms);
  }
}
