/**
 * MessageReader for a sink that reads a byte stream (`rawPieces`): a RAW message of bytes that does not arrive whole
 * in one chunk is passed on in pieces as its bytes arrive — views of the chunks, never joined or buffered — while
 * every other message, and every RAW message the decoder must refuse or cannot take as bytes, decodes exactly as for
 * any other sink (test/nest/call-codec.spec.ts).
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { type CallMessage, Encoding, encodeMessage, Flag, Kind, KIND_FLAGS, PREFIX_SIZE } from '../../lib/nest/call-codec.js';
import { MessageReader, type MessageSink } from '../../lib/nest/message-reader.js';
import { newMessage } from '../../lib/nest/message-decode.js';
import { deliverToDuplex, SmuxDuplex } from '../../lib/nest/raw-duplex.js';
import { SmuxError } from '../../lib/smux/index.js';
import { chunkIndexOf, ownedCopy, splitAt, splitAtFractions, splitEvery } from '../helpers/chunks.js';

const LIMIT = 1024 * 1024;
const KiB = 1024;

class Collect implements MessageSink {
  readonly messages: CallMessage[] = [];
  readonly sizes: number[] = [];
  constructor(readonly rawPieces: boolean) {}
  onMessage(message: CallMessage, size: number): void {
    this.messages.push(message);
    this.sizes.push(size);
  }
}

function decode(chunks: readonly Buffer[], rawPieces: boolean, limit = LIMIT): { sink: Collect; reader: MessageReader } {
  const reader = new MessageReader(limit);
  const sink = new Collect(rawPieces);
  for (const chunk of chunks) reader.push(chunk, sink);
  return { sink, reader };
}

const wire = (kind: number, flags: number, value: unknown, fields?: Parameters<typeof encodeMessage>[3]): Buffer =>
  Buffer.concat(encodeMessage(kind, flags, value, fields));

const rawMessage = (body: Buffer, flags = 0): Buffer => wire(Kind.RAW, flags, body);

/** A hand-made message: prefix + `rest`, `length` from the rest unless given. */
function handMade(kind: number, encoding: number, flags: number, rest: Buffer, length = rest.length): Buffer {
  const prefix = Buffer.alloc(PREFIX_SIZE);
  prefix[0] = kind;
  prefix[1] = encoding;
  prefix.writeUInt16LE(flags, 2);
  prefix.writeUInt32LE(length, 4);
  return Buffer.concat([prefix, rest]);
}

/**
 * Messages with adjacent RAW messages of the same flags merged into one (their bytes joined): what a byte stream
 * makes of them. Bodies as hex, so that views and copies compare alike.
 */
function asStream(messages: CallMessage[]): unknown[] {
  const out: Array<{ kind: number; flags: number; body: unknown }> = [];
  for (const m of messages) {
    const previous = out.at(-1);
    if (m.kind === Kind.RAW && Buffer.isBuffer(m.body)) {
      if (previous?.kind === Kind.RAW && previous.flags === m.flags && typeof previous.body === 'string') {
        previous.body += m.body.toString('hex');
        continue;
      }
      out.push({ kind: m.kind, flags: m.flags, body: m.body.toString('hex') });
    } else out.push({ ...m, body: Buffer.isBuffer(m.body) ? `bytes:${m.body.toString('hex')}` : m.body });
  }
  return out;
}

function codeOf(fn: () => void): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SmuxError);
    return (error as SmuxError).code;
  }
  throw new Error('expected a SmuxError, nothing was thrown');
}

describe('MessageReader: RAW messages in pieces for a byte-stream sink', () => {
  test('a 64 KiB RAW message in 32 KiB frames is passed on as its bytes arrive: views of the chunks, nothing buffered', () => {
    const body = Buffer.alloc(64 * KiB);
    for (let i = 0; i < body.length; i++) body[i] = i * 7;
    const chunks = splitEvery(rawMessage(body), 32 * KiB);
    const reader = new MessageReader(LIMIT);
    const sink = new Collect(true);
    reader.push(chunks[0], sink);
    expect(sink.messages).toHaveLength(1); // the first frame's bytes, before the message is whole
    expect(reader.partial).toBe(true); // EOF now would cut the message
    expect(reader.bufferedBytes).toBe(0); // but the reader holds none of it
    for (const chunk of chunks.slice(1)) reader.push(chunk, sink);
    expect(reader.partial).toBe(false);
    expect(sink.messages.map((m) => (m.body as Buffer).length)).toEqual([32 * KiB - PREFIX_SIZE, 32 * KiB, PREFIX_SIZE]);
    expect(sink.messages.every((m) => m.kind === Kind.RAW && m.flags === 0)).toBe(true);
    for (const m of sink.messages) expect(chunkIndexOf(m.body as Buffer, chunks)).not.toBe(-1);
    expect(Buffer.concat(sink.messages.map((m) => m.body as Buffer)).equals(body)).toBe(true);
    expect(sink.sizes).toEqual([32 * KiB, 32 * KiB, PREFIX_SIZE]); // the prefix counts with the first piece
  });

  test('a sink without rawPieces still gets the message whole (joined once)', () => {
    const body = Buffer.alloc(64 * KiB, 3);
    const { sink } = decode(splitEvery(rawMessage(body), 32 * KiB), false);
    expect(sink.messages).toHaveLength(1);
    expect((sink.messages[0].body as Buffer).equals(body)).toBe(true);
  });

  test('whole messages in a chunk decode in place as usual; a RAW message cut after its prefix or inside it goes on when the rest comes', () => {
    const a = wire(Kind.REQUEST, Flag.RAW, { x: 1 }, { id: '1', pattern: 'p' });
    const b = rawMessage(Buffer.from('hello'));
    const c = rawMessage(Buffer.from('world!'));
    const d = wire(Kind.END, 0, undefined);
    const stream = Buffer.concat([a, b, c, d]);
    const reference = asStream(decode([stream], false).sink.messages);
    for (let i = 1; i < stream.length; i++) {
      for (const j of [i + 1, i + 3, i + 9]) {
        const { sink, reader } = decode(splitAt(stream, [i, j]), true);
        expect(asStream(sink.messages)).toEqual(reference);
        expect(reader.partial).toBe(false);
        expect(sink.sizes.reduce((x, y) => x + y, 0)).toBe(stream.length);
      }
    }
  });

  test('an empty RAW body whose prefix straddles chunks is one empty RAW message; what follows still decodes', () => {
    const stream = Buffer.concat([rawMessage(Buffer.alloc(0)), wire(Kind.END, Flag.LAST, undefined)]);
    for (let i = 1; i < PREFIX_SIZE; i++) {
      const { sink, reader } = decode(splitAt(stream, [i]), true);
      expect(sink.messages.map((m) => [m.kind, m.flags, (m.body as Buffer | undefined)?.length])).toEqual([
        [Kind.RAW, 0, 0],
        [Kind.END, Flag.LAST, undefined],
      ]);
      expect(sink.sizes).toEqual([PREFIX_SIZE, PREFIX_SIZE]);
      expect(reader.partial).toBe(false);
    }
  });

  test('the size limit is checked on the prefix, also when the prefix straddles chunks', () => {
    const big = rawMessage(Buffer.alloc(200));
    for (let i = 1; i <= PREFIX_SIZE; i++) {
      const reader = new MessageReader(100);
      const sink = new Collect(true);
      const [first, second] = splitAt(big, [i]);
      if (i < PREFIX_SIZE) reader.push(first, sink);
      expect(codeOf(() => reader.push(i < PREFIX_SIZE ? second : big, sink))).toBe('ERR_SMUX_LIMIT');
      expect(sink.messages).toEqual([]);
    }
  });

  test('RAW messages the decoder refuses, or that are not bytes, are gathered and decoded whole, as for any sink', () => {
    const cases: Array<{ bytes: Buffer; expected: string | { encoding: unknown } }> = [
      { bytes: handMade(Kind.RAW, Encoding.BYTES, 1 << 14, Buffer.alloc(50)), expected: 'ERR_SMUX_PROTOCOL' }, // unknown flag
      { bytes: handMade(Kind.RAW, Encoding.BYTES, Flag.PATTERN_JSON, Buffer.alloc(50)), expected: 'ERR_SMUX_PROTOCOL' },
      { bytes: handMade(Kind.RAW, 9, 0, Buffer.alloc(50)), expected: 'ERR_SMUX_PROTOCOL' }, // unknown encoding
      { bytes: handMade(Kind.RAW, Encoding.NONE, 0, Buffer.alloc(50)), expected: 'ERR_SMUX_PROTOCOL' }, // a body with "none"
      { bytes: wire(Kind.RAW, 0, 'a string body of some length'), expected: { encoding: 'string' } },
      { bytes: wire(Kind.RAW, 0, { json: [1, 2, 3] }), expected: { encoding: 'object' } },
      { bytes: wire(Kind.RAW, 0, Buffer.alloc(40, 1), { id: 'x' }), expected: 'ERR_SMUX_PROTOCOL' }, // a field: not on a RAW
      { bytes: handMade(Kind.RAW, Encoding.BYTES, Flag.LAST, Buffer.alloc(50)), expected: 'ERR_SMUX_PROTOCOL' }, // a RAW takes no flag
    ];
    for (const { bytes, expected } of cases) {
      for (let i = 1; i < bytes.length; i += 5) {
        const chunks = splitAt(bytes, [i]);
        const reader = new MessageReader(LIMIT);
        const sink = new Collect(true);
        if (typeof expected === 'string') {
          expect(codeOf(() => chunks.forEach((chunk) => reader.push(chunk, sink)))).toBe(expected);
          expect(sink.messages).toEqual([]);
        } else {
          for (const chunk of chunks) reader.push(chunk, sink);
          expect(sink.messages).toHaveLength(1); // never in pieces
          expect(asStream(sink.messages)).toEqual(asStream(decode([ownedCopy(bytes)], false).sink.messages));
        }
      }
    }
  });

  test('stop() in the middle of a RAW message passes nothing more on', () => {
    const stream = Buffer.concat([rawMessage(Buffer.alloc(1000, 1)), rawMessage(Buffer.alloc(10, 2))]);
    const reader = new MessageReader(LIMIT);
    const seen: CallMessage[] = [];
    const sink: MessageSink = {
      rawPieces: true,
      onMessage: (m) => {
        seen.push(m);
        reader.stop();
      },
    };
    for (const chunk of splitEvery(stream, 100)) reader.push(chunk, sink);
    expect(seen).toHaveLength(1);
    expect(reader.partial).toBe(false);
  });

  test('rawPieces is read on each message: a sink that becomes a byte stream on its REQUEST takes the RAW messages after it in pieces', () => {
    const stream = Buffer.concat([wire(Kind.REQUEST, Flag.RAW, 'meta', { id: '1', pattern: 'up' }), rawMessage(Buffer.alloc(300, 5))]);
    const reader = new MessageReader(LIMIT);
    const seen: CallMessage[] = [];
    const sink = {
      rawPieces: false,
      onMessage(m: CallMessage): void {
        seen.push(m);
        if (m.kind === Kind.REQUEST) this.rawPieces = true;
      },
    };
    for (const chunk of splitEvery(stream, 100)) reader.push(chunk, sink);
    expect(seen[0].kind).toBe(Kind.REQUEST);
    expect(seen.length).toBeGreaterThan(2);
    expect(Buffer.concat(seen.slice(1).map((m) => m.body as Buffer)).equals(Buffer.alloc(300, 5))).toBe(true);
  });

  describe('property', () => {
    const rawBody = fc.oneof(
      { arbitrary: fc.uint8Array({ maxLength: 40 }), weight: 3 },
      { arbitrary: fc.integer({ min: 0, max: 70_000 }).map((n) => new Uint8Array(n).map((_, i) => (i * 31 + n) & 0xff)), weight: 1 },
    );
    const message = fc.oneof(
      {
        arbitrary: fc.record({
          kind: fc.constant(Kind.RAW),
          flags: fc.constant(0), // a RAW takes no flag (KIND_FLAGS)
          value: rawBody.map((a) => Buffer.from(a)),
        }),
        weight: 5,
      },
      {
        arbitrary: fc
          .record({
            kind: fc.constantFrom(Kind.END, Kind.DATA, Kind.RESPONSE, Kind.RAW),
            flags: fc.constantFrom(0, Flag.LAST),
            value: fc.oneof(fc.constant(undefined), fc.jsonValue({ maxDepth: 2 }), fc.string({ maxLength: 30 })),
          })
          .map((m) => ({ ...m, flags: m.flags & KIND_FLAGS[m.kind] })),
        weight: 1,
      },
    );

    test('any messages split anywhere: the same byte stream and messages as a plain reader, RAW bodies views of chunks', () => {
      fc.assert(
        fc.property(
          fc.array(message, { minLength: 1, maxLength: 8 }),
          fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { maxLength: 16 }),
          (messages, cuts) => {
            const bytes = Buffer.concat(messages.flatMap((m) => encodeMessage(m.kind, m.flags, m.value)));
            const chunks = splitAtFractions(bytes, cuts);
            const plain = decode(chunks, false);
            const pieces = decode(chunks, true);
            expect(asStream(pieces.sink.messages)).toEqual(asStream(plain.sink.messages));
            expect(pieces.reader.partial).toBe(false);
            expect(pieces.sink.sizes.reduce((a, b) => a + b, 0)).toBe(bytes.length);
            for (const m of pieces.sink.messages) {
              if (m.kind !== Kind.RAW || !Buffer.isBuffer(m.body) || m.body.length === 0) continue;
              // a view of its chunk (the Duplex copies what it buffers), or — a RAW message whole in its chunk and
              // under a quarter of it — a copy of exactly its bytes
              if (chunkIndexOf(m.body, chunks) === -1) expect(m.body.buffer.byteLength).toBe(m.body.length);
            }
          },
        ),
        { numRuns: 300 },
      );
    });

    test('fed one byte at a time, the reader never buffers more than a prefix of a RAW message of bytes', () => {
      fc.assert(
        fc.property(fc.array(rawBody, { minLength: 1, maxLength: 4 }), (bodies) => {
          const bytes = Buffer.concat(bodies.map((b) => rawMessage(Buffer.from(b))));
          const reader = new MessageReader(LIMIT);
          const sink = new Collect(true);
          for (const chunk of splitEvery(bytes.subarray(0, 3000), 1)) {
            reader.push(chunk, sink);
            expect(reader.bufferedBytes).toBeLessThanOrEqual(PREFIX_SIZE); // room for a prefix
          }
        }),
        { numRuns: 50 },
      );
    });
  });
});

describe('SmuxDuplex: what it buffers', () => {
  /** A RAW message as the reader passes it on: `bytes` as its body. */
  function rawPiece(bytes: Buffer): CallMessage {
    return newMessage(Kind.RAW, 0, bytes);
  }

  test('a piece nobody reads yet is buffered as a copy when it is a small part of its read, as it is otherwise', () => {
    const duplex = new SmuxDuplex(); // no endpoint attached: it only buffers
    const small = Buffer.alloc(64 * 1024, 1).subarray(0, 100);
    const large = Buffer.alloc(1_000, 2);
    deliverToDuplex(duplex, rawPiece(small));
    deliverToDuplex(duplex, rawPiece(large));
    const first = duplex.read(100) as Buffer; // exactly the first piece buffered
    const second = duplex.read(1_000) as Buffer;
    expect(first.equals(small)).toBe(true);
    expect(first.buffer.byteLength).toBe(100); // a view kept the 64 KiB read alive
    expect(second).toBe(large);
    duplex.destroy();
  });

  test('a piece read at once is passed on as it is', async () => {
    const duplex = new SmuxDuplex();
    const got: Buffer[] = [];
    duplex.on('data', (chunk: Buffer) => got.push(chunk));
    await new Promise((resolve) => setImmediate(resolve)); // flowing from here
    const small = Buffer.alloc(64 * 1024, 1).subarray(0, 100);
    deliverToDuplex(duplex, rawPiece(small));
    expect(got).toEqual([small]);
    expect(got[0].buffer).toBe(small.buffer);
    duplex.destroy();
  });
});
