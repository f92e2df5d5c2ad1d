/**
 * CallEndpoint on an in-memory session pair (no sockets, a fake clock): message framing, stopping mid-chunk,
 * pause/resume holding the peer at its window, waiting for the window, ends and cancels.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import type { SmuxChannel, SmuxError } from '../../lib/smux/index.js';
import { type CallMessage, encodeMessage, Kind } from '../../lib/nest/call-codec.js';
import { CallEndpoint } from '../../lib/nest/call-endpoint.js';
import type { EndpointOwner } from '../../lib/nest/endpoint-owner.js';
import { ConnectionBudget } from '../../lib/nest/connection-budget.js';
import { attachDuplex, SmuxDuplex } from '../../lib/nest/raw-duplex.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';

let pair: ReturnType<typeof memorySessions>;
afterEach(() => pair?.close());

/** Records everything the endpoint tells its owner; `onMessage` may act (e.g. stop reading). */
class Recorder implements EndpointOwner {
  readonly messages: CallMessage[] = [];
  readonly events: string[] = [];
  readErrors: SmuxError[] = [];
  closedWith: SmuxError | undefined | null = null;
  act: (message: CallMessage) => void = () => undefined;
  onMessage(message: CallMessage): void {
    this.messages.push(message);
    this.act(message);
  }
  onReadError(error: SmuxError): void {
    this.readErrors.push(error);
  }
  onPeerEnd(): void {
    this.events.push('end');
  }
  onClosed(error: SmuxError | undefined): void {
    this.closedWith = error;
    this.events.push('closed');
  }
}

/** An endpoint on the server side of a stream the client opens; the client side is returned raw. */
async function connected(
  maxMessageBytes = 1 << 20,
  budget: ConnectionBudget | null = null,
): Promise<{ endpoint: CallEndpoint; owner: Recorder; peer: SmuxChannel }> {
  const owner = new Recorder();
  let endpoint: CallEndpoint | null = null;
  pair.server.on('channel', (channel) => (endpoint = new CallEndpoint(channel, maxMessageBytes, owner, 'server', true, budget)));
  const peer = pair.client.openChannel({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined });
  peer.write(message('hello')); // the opener writes first
  await flush();
  if (endpoint === null) throw new Error('the server saw no stream');
  return { endpoint, owner, peer };
}

const message = (value: unknown, kind: number = Kind.DATA) => Buffer.concat(encodeMessage(kind, 0, value));

describe('CallEndpoint', () => {
  test('messages are put back together whatever the framing, one byte at a time included', async () => {
    pair = memorySessions();
    const { owner, peer } = await connected();
    const bytes = Buffer.concat([message({ a: 1 }), message('two'), message(Buffer.from([3]))]);
    for (const byte of bytes) peer.write(Buffer.from([byte]));
    await flush(8);
    expect(owner.messages.map((m) => m.body)).toEqual(['hello', { a: 1 }, 'two', Buffer.from([3])]);
  });

  test('stopReading() inside onMessage stops mid-chunk: what follows is never parsed, however it was framed', async () => {
    pair = memorySessions();
    const { owner, endpoint, peer } = await connected();
    owner.act = () => endpoint.stopReading();
    // A valid message, then bytes that would be malformed: in one write, then (separately) in two.
    peer.write(Buffer.concat([message('first'), Buffer.from('garbage that is not a message')]));
    peer.write(Buffer.from('more garbage, in a frame of its own'));
    await flush();
    expect(owner.messages.map((m) => m.body)).toEqual(['hello', 'first']); // stopped at the message it was told to
    expect(owner.readErrors).toEqual([]); // the garbage after it, in the same frame or the next, was never parsed
  });

  test('a message over the limit is a read error before it is buffered', async () => {
    pair = memorySessions();
    const { owner, peer } = await connected(100);
    peer.write(message('x'.repeat(1000)));
    await flush();
    expect(owner.readErrors.map((e) => e.code)).toEqual(['ERR_SMUX_LIMIT']);
  });

  test('pause() holds the peer at its window (v2); resume() lets it go on', async () => {
    pair = memorySessions();
    const { endpoint, peer, owner } = await connected();
    endpoint.pause();
    const item = message(Buffer.alloc(16 * 1024, 1));
    for (let i = 0; i < 64; i++) peer.write(item); // 1 MiB
    await flush(12);
    const received = owner.messages.length;
    expect(peer.writableLength).toBeGreaterThan(512 * 1024); // the rest waits on the sender: the window is closed
    endpoint.resume();
    await flush(40);
    expect(owner.messages.length).toBeGreaterThan(received);
    expect(owner.messages.length).toBe(65);
  });

  test('drained() waits for the window, and ends early when the stream ends', async () => {
    pair = memorySessions({ streamHighWaterMark: 1024 });
    const { endpoint, peer } = await connected();
    peer.pause(); // the client stops consuming: our v2 window stays shut at 256 KiB
    for (let i = 0; i < 8; i++) endpoint.write([Buffer.alloc(64 * 1024)]); // 512 KiB: twice the initial window
    expect(endpoint.writable).toBe(false);
    let drained = false;
    void endpoint.drained().then(() => (drained = true));
    await flush(8);
    expect(drained).toBe(false);
    endpoint.end();
    await flush();
    expect(drained).toBe(true);
  });

  test('the peer FIN and the close reach the owner; cancel() is a FIN before our last message', async () => {
    pair = memorySessions();
    const { endpoint, owner, peer } = await connected();
    peer.end();
    await flush();
    expect(owner.events).toEqual(['end']);
    endpoint.cancel();
    await flush();
    expect(owner.events).toEqual(['end', 'closed']);
    expect(owner.closedWith).toBeUndefined();
    expect(endpoint.ended).toBe(true);
    expect(endpoint.write([Buffer.from('late')])).toBe(false); // nothing is written once ended
  });

  test("a byte stream's write waiting for the window charges the Duplex's high-water mark to the reply budget until it completes", async () => {
    // Node buffers up to the high-water mark behind a write that waits: bytes the budget did not count (raw-stall attack).
    pair = memorySessions();
    const budget = new ConnectionBudget({ maxPendingRequestBytes: 64 << 20, maxQueuedReplyBytes: 64 << 20 }, pair.clock);
    const { endpoint, peer } = await connected(1 << 20, budget);
    const duplex = new SmuxDuplex(64 * 1024);
    attachDuplex(duplex, endpoint, {
      lastEnd: true,
      writableEnded: () => undefined,
      readableEnded: () => undefined,
      destroyed: () => undefined,
    });
    peer.pause(); // the caller does not read: its window (256 KiB) fills
    let acknowledged = 0;
    const chunk = Buffer.alloc(40 * 1024, 1);
    for (let i = 0; i < 12; i++) duplex.write(chunk, () => acknowledged++);
    await flush();
    const waiting = duplex.writableLength - endpoint.writableLength; // what Node holds behind the waiting write
    expect(waiting).toBeGreaterThan(0);
    expect(budget.queuedReplyBytes).toBe(endpoint.writableLength + 64 * 1024);
    peer.resume(); // the caller reads: the writes complete, the high-water mark is no longer charged
    await flush(12);
    expect(acknowledged).toBe(12);
    endpoint.refreshReplyCharge();
    expect(budget.queuedReplyBytes).toBe(endpoint.writableLength);
    duplex.destroy();
  });
});
