/**
 * Request/response peer for `npm run bench:core` (the lean SmuxChannel API on both ends):
 *
 *   node rr-peer.js server <version>                       ECHO acceptor of the interop command protocol
 *   node rr-peer.js streams <version> <port> <streams> <roundTrips>
 *        <streams> long-lived streams at once, each doing <roundTrips> 64-byte echo round trips
 *   node rr-peer.js per-request <version> <port> <count> <inFlight>
 *        a new stream per request: open, 16-byte ECHO header + 64 bytes, read 64 bytes, FIN; <inFlight> at once
 *
 * Both clients speak the interop command protocol (test/interop/README.md), so they run against a Go server
 * too, and Go's own bench-rr can drive our server.
 */
import net from 'node:net';
import { once } from 'node:events';
import { Session, type SmuxChannel, type SmuxChannelHandler } from '../../lib/smux/index.js';
import { report } from '../lib/process.js';

const [mode, versionArg, portArg, aArg, bArg] = process.argv.slice(2);
const version = Number(versionArg ?? 2) as 1 | 2;
const MESSAGE = Buffer.alloc(64, 0x42);
const ECHO_HEADER = Buffer.alloc(16);
ECHO_HEADER[0] = 1;
const REQUEST = Buffer.concat([ECHO_HEADER, MESSAGE]);

/** Server side: skip the 16-byte command header, echo the rest, FIN when the peer does. */
class EchoHandler implements SmuxChannelHandler {
  #skip = 16;
  constructor(readonly channel: SmuxChannel) {}
  onData(data: Buffer): void {
    if (this.#skip > 0) {
      const n = Math.min(this.#skip, data.length);
      this.#skip -= n;
      data = data.subarray(n);
      if (data.length === 0) return;
    }
    this.channel.write(data);
  }
  onEnd(): void {
    this.channel.end();
  }
  onClose(): void {}
}

async function server(): Promise<void> {
  const listener = net.createServer((socket) => {
    const session = Session.server(socket, { version });
    session.on('channel', (channel) => channel.setHandler(new EchoHandler(channel)));
    session.on('close', () => undefined);
  });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  process.stdout.write(`LISTENING ${(listener.address() as net.AddressInfo).port}\n`);
  process.stdin.resume().on('end', () => process.exit(0));
}

/** A long-lived stream doing `left` round trips, then FIN. */
class RoundTripper implements SmuxChannelHandler {
  #pending = 0;
  constructor(
    readonly channel: SmuxChannel,
    public left: number,
    readonly done: () => void,
  ) {
    channel.setHandler(this);
    channel.write(REQUEST);
    this.#pending = MESSAGE.length;
  }
  onData(data: Buffer): void {
    this.#pending -= data.length;
    if (this.#pending > 0) return;
    if (--this.left === 0) {
      this.channel.end();
      this.done();
      return;
    }
    this.channel.write(MESSAGE);
    this.#pending = MESSAGE.length;
  }
  onEnd(): void {}
  onClose(): void {}
}

/** One request on a fresh stream; like Go's `stream.Close()` after reading the reply, destroy() sends FIN and forgets it. */
class OneShot implements SmuxChannelHandler {
  #received = 0;
  constructor(
    readonly channel: SmuxChannel,
    readonly done: () => void,
  ) {}
  onData(data: Buffer): void {
    this.#received += data.length;
    if (this.#received === MESSAGE.length) this.channel.destroy();
  }
  onEnd(): void {}
  onClose(): void {
    this.done();
  }
}

async function connect(): Promise<Session> {
  const socket = net.connect(Number(portArg), '127.0.0.1');
  await once(socket, 'connect');
  return Session.client(socket, { version });
}

async function streams(): Promise<void> {
  const session = await connect();
  const count = Number(aArg);
  const roundTrips = Number(bArg);
  const started = performance.now();
  await new Promise<void>((resolve) => {
    let running = count;
    for (let i = 0; i < count; i++) new RoundTripper(session.openChannel(), roundTrips, () => --running === 0 && resolve());
  });
  const ms = performance.now() - started;
  report({ mode, version, streams: count, roundTrips, ms, rps: (count * roundTrips) / (ms / 1000) });
  await session.close();
}

async function perRequest(): Promise<void> {
  const session = await connect();
  const total = Number(aArg);
  const inFlight = Number(bArg);
  const started = performance.now();
  await new Promise<void>((resolve) => {
    let issued = 0;
    let finished = 0;
    const next = (): void => {
      if (issued === total) return;
      issued++;
      const channel = session.openChannel();
      channel.setHandler(new OneShot(channel, onDone));
      channel.write(REQUEST);
    };
    const onDone = (): void => {
      if (++finished === total) resolve();
      else next();
    };
    for (let i = 0; i < inFlight; i++) next();
  });
  const ms = performance.now() - started;
  report({ mode, version, count: total, inFlight, ms, rps: total / (ms / 1000) });
  await session.close();
}

await (mode === 'server' ? server() : mode === 'streams' ? streams() : perRequest());
