import { afterEach, describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { type Session, type SmuxChannel, type SmuxChannelHandler, SmuxError } from '../../lib/smux/index.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';
import { until } from '../helpers/net.js';
import { cleanup, pair, pattern, quiesced } from '../helpers/sessions.js';

afterEach(cleanup);

/** A handler that records every callback in order. */
interface Recorder extends SmuxChannelHandler {
  chunks: Buffer[];
  bytes: number;
  events: string[];
  drains: number;
  ended: boolean;
  closed: boolean;
  error: SmuxError | undefined;
  data(): Buffer;
}

function recorder(): Recorder {
  const r: Recorder = {
    chunks: [],
    bytes: 0,
    events: [],
    drains: 0,
    ended: false,
    closed: false,
    error: undefined,
    data: () => Buffer.concat(r.chunks),
    onData(data) {
      r.chunks.push(data);
      r.bytes += data.length;
      if (r.events.at(-1) !== 'data') r.events.push('data');
    },
    onEnd() {
      r.ended = true;
      r.events.push('end');
    },
    onFinHeld() {
      r.events.push('fin held');
    },
    onDrain() {
      r.drains++;
    },
    onClose(error) {
      r.closed = true;
      r.error = error;
      r.events.push(error === undefined ? 'close' : `close:${error.code}`);
    },
  };
  return r;
}

/** The next channel the peer opens; a handler is set only when given. */
function nextChannel(session: Session, handler?: SmuxChannelHandler): Promise<SmuxChannel> {
  return new Promise((resolve) =>
    session.once('channel', (c) => {
      if (handler !== undefined) c.setHandler(handler);
      resolve(c);
    }),
  );
}

describe('SmuxChannel over TCP', () => {
  test("openChannel() and 'channel': data both ways, end() → onEnd after all data, clean onClose on both sides", async () => {
    const { client, server } = await pair();
    const atServer = recorder();
    const peer = nextChannel(server, atServer);
    const atClient = recorder();
    const ch = client.openChannel(atClient);
    expect(ch.id).toBe(3);
    expect(ch.openedByPeer).toBe(false);
    const big = pattern(200_000, 9);
    ch.write(big);
    ch.end();
    const sc = await peer;
    expect(sc.openedByPeer).toBe(true);
    await until(() => atServer.ended, 5_000, 'data + end at the server');
    expect(atServer.data().equals(big)).toBe(true);
    expect(sc.peerEnded).toBe(true);
    sc.write(Buffer.from('reply'));
    sc.end();
    await until(() => atClient.closed && atServer.closed, 5_000, 'both to close');
    expect(atClient.data().toString()).toBe('reply');
    expect(atClient.events).toEqual(['data', 'end', 'close']);
    expect(atServer.events).toEqual(['data', 'end', 'close']);
    expect([ch.isClosed, sc.isClosed, ch.finSent, sc.finSent]).toEqual([true, true, true, true]);
    await until(() => client.numStreams === 0 && server.numStreams === 0, 5_000, 'unregistered');
  });

  test("a channel does not hand out its handler: a SmuxStream's private handler (or a Nest call's endpoint) stays unreachable", async () => {
    const { client, server } = await pair();
    const peer = nextChannel(server, recorder());
    const ch = client.openChannel(recorder());
    ch.write(Buffer.from('x'));
    const sc = await peer;
    for (const channel of [ch, sc]) expect((channel as unknown as Record<string, unknown>)['handler']).toBeUndefined();
    const stream = await client.openStream();
    expect((stream as unknown as { channel?: Record<string, unknown> }).channel?.['handler']).toBeUndefined();
    stream.destroy();
  });

  test('v2: end() with data still blocked by the peer window keeps the FIN behind the data', async () => {
    const { client, server } = await pair({ version: 2 });
    const peer = nextChannel(server); // not read yet: the window closes
    const ch = client.openChannel(recorder());
    const big = pattern(1 << 20, 13);
    ch.write(big);
    ch.end();
    const sc = await peer;
    await quiesced(client, server);
    expect(ch.writableLength).toBeGreaterThan(0);
    expect([ch.finSent, sc.peerEnded]).toEqual([false, false]);
    const r = recorder();
    sc.setHandler(r);
    await until(() => r.ended, 10_000, 'all data, then end');
    expect(r.data().equals(big)).toBe(true);
  });

  test('data is held before a handler is set and while paused; setHandler() and resume() deliver it in order', async () => {
    const { client, server } = await pair();
    const peer = nextChannel(server); // no handler yet
    const ch = client.openChannel(recorder());
    ch.write(Buffer.from('one,'));
    ch.write(Buffer.from('two,'));
    const sc = await peer;
    await until(() => sc.readableLength === 8, 5_000, 'held bytes');
    expect(sc.isPaused).toBe(true);
    const r = recorder();
    sc.setHandler(r);
    expect(r.data().toString()).toBe('one,two,'); // delivered synchronously
    expect([sc.readableLength, sc.isPaused]).toEqual([0, false]);

    sc.pause();
    ch.write(Buffer.from('three,'));
    ch.end();
    await until(() => sc.peerEnded, 5_000, 'FIN while paused');
    expect(sc.readableLength).toBe(6);
    expect(r.ended).toBe(false); // the end waits behind the held data
    expect(r.events).toEqual(['data', 'fin held']); // but the FIN is told at once (a call layer's cancel)
    sc.resume();
    expect(r.data().toString()).toBe('one,two,three,');
    expect(r.events).toEqual(['data', 'fin held', 'data', 'end']);
  });

  test('write() returns false at streamHighWaterMark; onDrain fires once the bytes reach the socket', async () => {
    const { client, server } = await pair({ streamHighWaterMark: 10_000 });
    const atServer = recorder();
    const peer = nextChannel(server, atServer);
    const r = recorder();
    const ch = client.openChannel(r);
    expect(ch.write(Buffer.alloc(5_000, 1))).toBe(true);
    expect(ch.writable).toBe(true);
    expect(ch.write(Buffer.alloc(5_000, 2))).toBe(false);
    expect(ch.writable).toBe(false);
    expect(ch.writableLength).toBe(10_000);
    await until(() => r.drains > 0, 5_000, 'drain');
    expect(ch.writableLength).toBe(0);
    await peer;
    await until(() => atServer.bytes === 10_000, 5_000, 'bytes at the peer');
  });

  test('write() after end() or destroy() throws ERR_SMUX_STREAM_CLOSED; end() and destroy() are idempotent', async () => {
    const { client, server } = await pair();
    const atServer = recorder();
    const peer = nextChannel(server, atServer);
    const r = recorder();
    const ch = client.openChannel(r);
    ch.write(Buffer.from('x'));
    ch.end();
    ch.end();
    expect(ch.isEnded).toBe(true);
    expect(() => ch.write(Buffer.from('y'))).toThrow(expect.objectContaining({ code: 'ERR_SMUX_STREAM_CLOSED' }));
    await peer;
    await until(() => atServer.ended, 5_000, 'end at the peer');
    expect(atServer.data().toString()).toBe('x');
    ch.destroy();
    ch.destroy();
    expect(() => ch.write(Buffer.from('z'))).toThrow(expect.objectContaining({ code: 'ERR_SMUX_STREAM_CLOSED' }));
    expect(r.events).toEqual(['close']);
  });

  test('destroy(err): onClose(err) at once, unregistered at once, the peer sees its end', async () => {
    const { client, server } = await pair();
    const atServer = recorder();
    const peer = nextChannel(server, atServer);
    const r = recorder();
    const ch = client.openChannel(r);
    ch.write(Buffer.from('hello'));
    await peer;
    await until(() => atServer.bytes === 5, 5_000, 'data');
    const err = new SmuxError('ERR_SMUX_LIMIT', 'given up');
    ch.destroy(err);
    expect(r.error).toBe(err);
    expect(client.numStreams).toBe(0);
    expect(ch.isClosed).toBe(true);
    await until(() => atServer.ended, 5_000, 'end at the peer');
    expect(atServer.error).toBeUndefined();
    expect(atServer.closed).toBe(false); // half-open: its own direction is still writable
  });

  test('destroy(plain Error): onClose gets an ERR_SMUX_STREAM_CLOSED with its message, the Error as cause', async () => {
    const { client } = await pair();
    const r = recorder();
    const ch = client.openChannel(r);
    const err = new Error('given up');
    ch.destroy(err);
    expect([r.error?.code, r.error?.message, r.error?.cause]).toEqual(['ERR_SMUX_STREAM_CLOSED', 'given up', err]);
  });

  test('session death: open channels get onClose(err); one whose peer already sent FIN first gets its held data and end', async () => {
    const { client, server } = await pair();
    const finished = recorder();
    const open = recorder();
    const first = nextChannel(server, finished);
    const a = client.openChannel(recorder());
    const sa = await first;
    sa.pause();
    a.write(Buffer.from('complete'));
    a.end();
    const second = nextChannel(server, open);
    const b = client.openChannel(recorder());
    b.write(Buffer.from('partial'));
    await second;
    await until(() => sa.peerEnded && sa.readableLength === 8 && open.bytes === 7, 5_000, 'frames at the server');
    const err = new SmuxError('ERR_SMUX_PROTOCOL', 'test death');
    server.destroy(err);
    expect(finished.events).toEqual(['fin held', 'data', 'end', 'close:ERR_SMUX_PROTOCOL']);
    expect(finished.data().toString()).toBe('complete');
    expect(finished.error).toBe(err);
    expect(open.events).toEqual(['data', 'close:ERR_SMUX_PROTOCOL']);
    expect(server.numStreams).toBe(0);
  });
});

/** The bytes a sequence of writes must arrive as: text as UTF-8, buffers as they are. */
function wireBytes(pieces: ReadonlyArray<string | Uint8Array>): Buffer {
  return Buffer.concat(pieces.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p)));
}

describe('SmuxChannel text writes', () => {
  // ASCII text is queued as the string and copied into the write buffer when its frames are built (cut at any
  // byte, as frames and windows demand); other text is encoded at write(). Both must arrive as UTF-8, in order.
  const pieces = [
    'w'.repeat(300_000), // past the first 256 KiB, the peer's 4 KiB window (v2) cuts it, not only the frame size
    'a'.repeat(5_000),
    Uint8Array.from([1, 2, 3]),
    'é€😀 mixed'.repeat(700),
    'x'.repeat(3_001),
    pattern(2_500, 3),
    '',
    'lone \ud800 surrogates \udc00', // each becomes U+FFFD (3 bytes) in UTF-8
    'end',
  ];

  test.each([1, 2] as const)(
    'over TCP (v%i): ASCII and other text arrive as UTF-8, cut across 1 000-byte frames and (v2) a 4 KiB window',
    async (version) => {
      const config = { version, maxFrameSize: 1_000, maxStreamBuffer: 4_096 };
      const { client, server } = await pair(config);
      const atServer = recorder();
      const peer = nextChannel(server, atServer);
      const ch = client.openChannel(recorder());
      for (const piece of pieces) ch.write(piece);
      // Counted in bytes, not characters, before anything is sent.
      expect(ch.writableLength).toBe(wireBytes(pieces).length);
      ch.end();
      await peer;
      await until(() => atServer.ended, 5_000, 'all data, then end');
      expect(atServer.data().equals(wireBytes(pieces))).toBe(true);
      expect(atServer.chunks.every((c) => c.length <= 1_000)).toBe(true); // frames were cut inside the text
    },
  );

  test('property: any mix of ASCII text, other text and buffers arrives as its UTF-8 bytes, whatever the frame size', async () => {
    const piece = fc.oneof(
      fc.string({ unit: 'binary-ascii', maxLength: 3_000 }),
      fc.string({ unit: 'grapheme', maxLength: 300 }),
      fc.string({ unit: fc.constantFrom('a', 'é', '\ud800', '\udfff', '😀'), maxLength: 300 }), // lone surrogates too
      fc.uint8Array({ maxLength: 2_000 }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { maxLength: 12 }), fc.integer({ min: 1, max: 4_096 }), async (written, maxFrameSize) => {
        const sessions = memorySessions({ maxFrameSize, maxStreamBuffer: 8_192 });
        const { client, server } = sessions;
        try {
          const atServer = recorder();
          server.once('channel', (c) => c.setHandler(atServer));
          const ch = client.openChannel(recorder());
          for (const p of written) ch.write(p);
          ch.end();
          for (let turn = 0; turn < 200 && !atServer.ended; turn++) await flush(1);
          expect(atServer.ended).toBe(true);
          expect(atServer.data().equals(wireBytes(written))).toBe(true);
        } finally {
          sessions.close();
        }
      }),
      { numRuns: 150 },
    );
  });
});
