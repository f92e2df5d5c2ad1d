import { Duplex } from 'node:stream';
import { Session, type SmuxConfig } from '../../lib/smux/index.js';
import { FakeClock } from './fake-clock.js';

/**
 * Two connected in-memory Duplexes: what one writes, the other reads (in order, chunk by chunk). No socket,
 * no port: unit tests of protocol state run on these with a fake clock.
 */
export function memoryPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (peer: () => Duplex): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        peer().push(chunk);
        callback();
      },
      final(callback) {
        peer().push(null);
        callback();
      },
      destroy(error, callback) {
        const other = peer();
        if (!other.destroyed) other.destroy();
        callback(error);
      },
    });
  ends.push(
    make(() => ends[1]),
    make(() => ends[0]),
  );
  return [ends[0], ends[1]];
}

/** A client and a server session over an in-memory pair, both on one fake clock (keep-alive off by default). */
export function memorySessions(config: Partial<SmuxConfig> = {}): { client: Session; server: Session; clock: FakeClock; close(): void } {
  const clock = new FakeClock();
  const [c, s] = memoryPair();
  const base: Partial<SmuxConfig> = { version: 2, keepAliveDisabled: true, clock, ...config };
  const client = Session.client(c, base);
  const server = Session.server(s, base);
  return {
    client,
    server,
    clock,
    close() {
      client.destroy();
      server.destroy();
    },
  };
}

/** Lets queued work run: the pair delivers on the event loop, the session writers flush at the end of a turn. */
export async function flush(turns = 4): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}
