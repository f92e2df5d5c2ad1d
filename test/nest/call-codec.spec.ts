import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import {
  type CallMessage,
  decodeTransportError,
  Encoding,
  encodeMessage,
  encodeMessagePieces,
  encodeTransportError,
  Flag,
  Kind,
  KIND_FLAGS,
  type MessageFields,
  PREFIX_SIZE,
} from '../../lib/nest/call-codec.js';
import { MessageReader, type MessageSink } from '../../lib/nest/message-reader.js';
import { SmuxError } from '../../lib/smux/index.js';
import { chunkIndexOf, everyTwoWaySplit, ownedCopy, splitAt, splitAtFractions, splitEvery } from '../helpers/chunks.js';
import { piecesBytes } from '../helpers/pieces.js';

/*
 * The call message codec of docs/PROTOCOL.md §2: encodeMessage and MessageReader. Reference messages are
 * pinned as hex worked out by hand from the document, so the wire format cannot drift from it silently.
 */

const LIMIT = 1024 * 1024;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

class Collect implements MessageSink {
  readonly messages: CallMessage[] = [];
  onMessage(message: CallMessage): void {
    this.messages.push(message);
  }
}

/** Feeds `chunks` to a fresh reader and returns what it decoded. */
function decode(chunks: readonly Buffer[], limit = LIMIT): { messages: CallMessage[]; reader: MessageReader } {
  const reader = new MessageReader(limit);
  const sink = new Collect();
  for (const chunk of chunks) reader.push(chunk, sink);
  return { messages: sink.messages, reader };
}

/** Encodes one message and decodes it from one chunk. */
function roundTrip(kind: number, flags: number, value: unknown, fields?: MessageFields): CallMessage {
  const { messages, reader } = decode([Buffer.concat(encodeMessage(kind, flags, value, fields))]);
  expect(messages).toHaveLength(1);
  expect(reader.partial).toBe(false);
  return messages[0];
}

/** One encoded message as a single buffer. */
function wire(kind: number, flags: number, value: unknown, fields?: MessageFields): Buffer {
  return Buffer.concat(encodeMessage(kind, flags, value, fields));
}

/** A hand-made message: prefix + raw rest (fields and body), `length` taken from the rest unless given. */
function raw(kind: number, encoding: number, flags: number, rest: Buffer | string = Buffer.alloc(0), length?: number): Buffer {
  const tail = typeof rest === 'string' ? Buffer.from(rest.replace(/\s+/g, ''), 'hex') : rest;
  const prefix = Buffer.alloc(PREFIX_SIZE);
  prefix[0] = kind;
  prefix[1] = encoding;
  prefix.writeUInt16LE(flags, 2);
  prefix.writeUInt32LE(length ?? tail.length, 4);
  return Buffer.concat([prefix, tail]);
}

function hex(text: string): string {
  return text.replace(/\s+/g, '');
}

/** Runs `fn` and returns the SmuxError code it throws (fails when it does not throw one). */
function codeOf(fn: () => void): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SmuxError);
    return (error as SmuxError).code;
  }
  throw new Error('expected a SmuxError, nothing was thrown');
}

describe('call codec: constants', () => {
  test('kinds, encodings and flag bits are the numbers of docs/PROTOCOL.md', () => {
    expect(Kind).toEqual({ REQUEST: 1, EVENT: 2, RESPONSE: 3, DATA: 4, END: 5, RAW: 6, HELLO: 7, PING: 8, PONG: 9, DRAIN: 10 });
    expect(Encoding).toEqual({ NONE: 0, JSON: 1, BYTES: 2, STRING: 3 });
    expect(Flag).toEqual({
      LAST: 0x001,
      ERROR: 0x002,
      OPAQUE: 0x004,
      ID: 0x008,
      PATTERN: 0x010,
      PATTERN_JSON: 0x020,
      TIMEOUT: 0x040,
      HEADERS: 0x080,
      STATUS: 0x100,
      TRANSPORT: 0x200,
      STREAM: 0x400,
      RAW: 0x800,
      FEED: 0x1000,
    });
    expect(PREFIX_SIZE).toBe(8);
  });
});

describe('call codec: pinned wire bytes (computed by hand from docs/PROTOCOL.md)', () => {
  test('reference REQUEST: id "1", pattern "sum", timeout 1000 ms, JSON body [1,2,3]', () => {
    const bytes = wire(Kind.REQUEST, 0, [1, 2, 3], { id: '1', pattern: 'sum', timeout: 1000 });
    // kind 1, encoding 1 (JSON), flags ID|PATTERN|TIMEOUT = 0x0058, length 2 + 5 + 4 + 7 = 18
    const expected = hex(`
      01 01 5800 12000000
      01 31
      0300 73756d
      e8030000
      5b312c322c335d`);
    expect(bytes.toString('hex')).toBe(expected);
    expect(roundTrip(Kind.REQUEST, 0, [1, 2, 3], { id: '1', pattern: 'sum', timeout: 1000 })).toEqual({
      kind: Kind.REQUEST,
      flags: Flag.ID | Flag.PATTERN | Flag.TIMEOUT,
      id: '1',
      pattern: 'sum',
      timeout: 1000,
      body: [1, 2, 3],
    });
  });

  test('REQUEST with every field: object pattern (PATTERN_JSON), timeout, headers', () => {
    const bytes = wire(Kind.REQUEST, 0, 3, { id: '7', pattern: '{"cmd":"ticks"}', patternIsJson: true, timeout: 300, headers: { a: 'b' } });
    // flags ID|PATTERN|PATTERN_JSON|TIMEOUT|HEADERS = 0x00f8; fields 2 + 17 + 4 + 11 = 34, body 1: length 35
    const expected = hex(`
      01 01 f800 23000000
      01 37
      0f00 7b22636d64223a227469636b73227d
      2c010000
      0900 7b2261223a2262227d
      33`);
    expect(bytes.toString('hex')).toBe(expected);
  });

  test('EVENT: pattern "evt", JSON body {"x":1}', () => {
    const expected = hex('02 01 1000 0c000000 0300 657674 7b2278223a317d');
    expect(wire(Kind.EVENT, 0, { x: 1 }, { pattern: 'evt' }).toString('hex')).toBe(expected);
  });

  test("RESPONSE of Nest's no-handler kind: STATUS + ERROR + LAST, a UTF-8 string body", () => {
    // flags LAST|ERROR|STATUS = 0x0103 (LE 03 01), encoding 3, fields 1 + 5, body "no"
    const expected = hex('03 03 0301 08000000 05 6572726f72 6e6f');
    expect(wire(Kind.RESPONSE, Flag.LAST | Flag.ERROR, 'no', { status: 'error' }).toString('hex')).toBe(expected);
  });

  test('RESPONSE + LAST with raw bytes, and with no value (encoding none, length 0)', () => {
    expect(wire(Kind.RESPONSE, Flag.LAST, Buffer.from([1, 2, 3])).toString('hex')).toBe(hex('03 02 0100 03000000 010203'));
    expect(wire(Kind.RESPONSE, Flag.LAST, undefined).toString('hex')).toBe(hex('03 00 0100 00000000'));
  });

  test('field lengths count UTF-8 bytes, not UTF-16 units', () => {
    // "é" is 2 bytes, "€" 3: id length 2, pattern length 3, body "\"€\"" is not JSON but a STRING of 3 bytes
    const expected = hex('01 03 1800 0b000000 02 c3a9 0300 e282ac e282ac');
    expect(wire(Kind.REQUEST, 0, '€', { id: 'é', pattern: '€' }).toString('hex')).toBe(expected);
  });
});

describe('call codec: kinds, flags and fields round trip', () => {
  test.each(Object.entries(Kind))('kind %s', (_name, kind) => {
    const message = roundTrip(kind, 0, { v: kind });
    expect(message).toEqual({ kind, flags: 0, body: { v: kind } });
  });

  test.each([
    ['LAST', Flag.LAST],
    ['ERROR', Flag.ERROR],
    ['OPAQUE', Flag.OPAQUE],
    ['LAST|ERROR|OPAQUE', Flag.LAST | Flag.ERROR | Flag.OPAQUE],
  ])('flag %s passes through unchanged', (_name, flags) => {
    expect(roundTrip(Kind.RESPONSE, flags, 'x')).toEqual({ kind: Kind.RESPONSE, flags, body: 'x' });
  });

  const fieldCases: Array<[string, MessageFields, number, Partial<CallMessage>]> = [
    ['ID', { id: 'abc-123' }, Flag.ID, { id: 'abc-123' }],
    ['ID empty', { id: '' }, Flag.ID, { id: '' }],
    ['ID 255 bytes', { id: 'i'.repeat(255) }, Flag.ID, { id: 'i'.repeat(255) }],
    ['PATTERN', { pattern: 'math.sum' }, Flag.PATTERN, { pattern: 'math.sum' }],
    ['PATTERN 65535 bytes', { pattern: 'p'.repeat(65535) }, Flag.PATTERN, { pattern: 'p'.repeat(65535) }],
    ['PATTERN_JSON', { pattern: '{"cmd":"sum"}', patternIsJson: true }, Flag.PATTERN | Flag.PATTERN_JSON, { pattern: '{"cmd":"sum"}' }],
    ['patternIsJson false', { pattern: 'sum', patternIsJson: false }, Flag.PATTERN, { pattern: 'sum' }],
    ['patternIsJson without a pattern adds nothing', { patternIsJson: true }, 0, {}],
    ['TIMEOUT', { timeout: 1500 }, Flag.TIMEOUT, { timeout: 1500 }],
    ['TIMEOUT 0', { timeout: 0 }, Flag.TIMEOUT, { timeout: 0 }],
    ['TIMEOUT u32 max', { timeout: 0xffff_ffff }, Flag.TIMEOUT, { timeout: 0xffff_ffff }],
    ['TIMEOUT fractional rounds up', { timeout: 10.2 }, Flag.TIMEOUT, { timeout: 11 }],
    ['TIMEOUT negative clamps to 0', { timeout: -5 }, Flag.TIMEOUT, { timeout: 0 }],
    ['TIMEOUT beyond u32 clamps', { timeout: 2 ** 40 }, Flag.TIMEOUT, { timeout: 0xffff_ffff }],
    ['HEADERS', { headers: { a: '1', 'x-trace': 'é€' } }, Flag.HEADERS, { headers: { a: '1', 'x-trace': 'é€' } }],
    ['HEADERS empty', { headers: {} }, Flag.HEADERS, { headers: {} }],
    ['STATUS', { status: 'error' }, Flag.STATUS, { status: 'error' }],
    ['STATUS empty', { status: '' }, Flag.STATUS, { status: '' }],
  ];
  test.each(fieldCases)('field %s', (_name, fields, flags, decoded) => {
    const kind = (flags & Flag.STATUS) !== 0 ? Kind.RESPONSE : Kind.REQUEST; // STATUS is a response's field (KIND_FLAGS)
    expect(roundTrip(kind, 0, 42, fields)).toEqual({ kind, flags, body: 42, ...decoded });
  });

  test.each([
    ['a lone high surrogate', '\uD800'],
    ['31 ASCII characters and a lone low surrogate', 'a'.repeat(31) + '\uDC00'],
    ['32 ASCII characters', 'b'.repeat(32)],
    ['33 ASCII characters', 'c'.repeat(33)],
    ['32 characters, the last one Latin-1', 'd'.repeat(31) + 'é'],
    ['empty', ''],
  ])('an id and a pattern of %s are the bytes Buffer.from(text) gives', (_name, text) => {
    const bytes = Buffer.from(text, 'utf8');
    const message = wire(Kind.REQUEST, 0, undefined, { id: text, pattern: text });
    const expected = Buffer.concat([Buffer.from([bytes.length]), bytes, Buffer.from([bytes.length, 0]), bytes]);
    expect(message.subarray(PREFIX_SIZE).equals(expected)).toBe(true);
  });

  test('property: an id and a pattern of any text (ASCII or not, either side of the 32-character fast path) are their UTF-8 bytes on the wire', () => {
    const text = fc.oneof(
      fc.string({ unit: 'binary-ascii', maxLength: 40 }),
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.string({ unit: 'grapheme', maxLength: 20 }),
    );
    fc.assert(
      fc.property(text, text, (id, pattern) => {
        const idBytes = Buffer.from(id, 'utf8');
        fc.pre(idBytes.length < 256);
        const bytes = wire(Kind.REQUEST, 0, undefined, { id, pattern });
        const patternBytes = Buffer.from(pattern, 'utf8');
        const expected = Buffer.concat([
          Buffer.from([idBytes.length]),
          idBytes,
          Buffer.from([patternBytes.length & 0xff, patternBytes.length >> 8]),
          patternBytes,
        ]);
        expect(bytes.subarray(PREFIX_SIZE).equals(expected)).toBe(true);
        expect(bytes.readUInt32LE(4)).toBe(expected.length);
        expect(roundTrip(Kind.REQUEST, 0, undefined, { id, pattern })).toMatchObject({ id, pattern });
      }),
      { numRuns: 500 },
    );
  });

  test("a transport error carries retryable only where it differs from its code's default, and comes back with it", () => {
    const bodyOf = (error: SmuxError): unknown => {
      const { messages } = decode([Buffer.concat(encodeTransportError(error))]);
      return messages[0].body;
    };
    const limit = new SmuxError('ERR_SMUX_LIMIT', 'full for now', { retryable: true });
    expect(bodyOf(limit)).toEqual({ code: 'ERR_SMUX_LIMIT', message: 'full for now', retryable: true });
    expect(decodeTransportError(bodyOf(limit))).toMatchObject({ code: 'ERR_SMUX_LIMIT', retryable: true });
    expect(bodyOf(new SmuxError('ERR_SMUX_LIMIT', 'too big'))).toEqual({ code: 'ERR_SMUX_LIMIT', message: 'too big' });
    expect(decodeTransportError(bodyOf(new SmuxError('ERR_SMUX_LIMIT', 'too big'))).retryable).toBe(false);
    expect(bodyOf(new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'bye'))).toEqual({ code: 'ERR_SMUX_SHUTTING_DOWN', message: 'bye' });
    expect(decodeTransportError(bodyOf(new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'bye'))).retryable).toBe(true);
    // A peer's body without the field, or with a wrong type, keeps the code's default.
    expect(decodeTransportError({ code: 'ERR_SMUX_LIMIT', message: 'x', retryable: 'yes' }).retryable).toBe(false);
  });

  test('every field and flag at once, in the documented order', () => {
    const fields: MessageFields = { id: '9', pattern: '{"a":1}', patternIsJson: true, timeout: 77, headers: { h: 'v' }, status: 'ok' };
    const flags = Flag.LAST | Flag.ERROR | Flag.OPAQUE;
    const bytes = wire(Kind.RESPONSE, flags, 'body', fields);
    expect(bytes.readUInt16LE(2)).toBe(0x1ff);
    // ID, PATTERN, TIMEOUT, HEADERS, STATUS, then the body
    expect(bytes.subarray(8).toString('hex')).toBe(
      hex('01 39   0700 7b2261223a317d   4d000000   0900 7b2268223a2276227d   02 6f6b   626f6479'),
    );
    // No kind takes them all (KIND_FLAGS): a RESPONSE's are refused; a REQUEST's round trip, in the same order.
    expect(() => decode([bytes])).toThrow('flags ID|PATTERN|PATTERN_JSON|TIMEOUT|HEADERS not valid on RESPONSE');
    const { status: _status, ...requestFields } = fields;
    expect(roundTrip(Kind.REQUEST, Flag.OPAQUE, 'body', requestFields)).toEqual({
      kind: Kind.REQUEST,
      flags: 0xfc,
      id: '9',
      pattern: '{"a":1}',
      timeout: 77,
      headers: { h: 'v' },
      body: 'body',
    });
  });

  test('unset optional fields (undefined) add neither flags nor bytes', () => {
    const fields: MessageFields = {
      id: undefined,
      pattern: undefined,
      patternIsJson: undefined,
      timeout: undefined,
      headers: undefined,
      status: undefined,
    };
    expect(wire(Kind.DATA, 0, undefined, fields).toString('hex')).toBe(hex('04 00 0000 00000000'));
  });

  test('fields too long for their length prefix are refused with ERR_SMUX_LIMIT', () => {
    expect(codeOf(() => encodeMessage(Kind.REQUEST, 0, 1, { id: 'i'.repeat(256) }))).toBe('ERR_SMUX_LIMIT');
    expect(() => encodeMessage(Kind.REQUEST, 0, 1, { id: 'i'.repeat(256) })).toThrow(
      "the call's id is 256 bytes, more than the 255 bytes a call message carries",
    );
    expect(() => encodeMessage(Kind.REQUEST, 0, 1, { pattern: 'p'.repeat(65536) })).toThrow(
      "the call's pattern is 65536 bytes, more than the 65535 bytes a call message carries",
    );
    expect(() => encodeMessage(Kind.REQUEST, 0, 1, { headers: { big: 'h'.repeat(65530) } })).toThrow(
      "the call's headers are 65540 bytes as JSON, more than the 65535 bytes a call message carries",
    );
    expect(codeOf(() => encodeMessage(Kind.REQUEST, 0, 1, { id: 'é'.repeat(128) }))).toBe('ERR_SMUX_LIMIT'); // 256 bytes
    expect(codeOf(() => encodeMessage(Kind.REQUEST, 0, 1, { pattern: 'p'.repeat(65536) }))).toBe('ERR_SMUX_LIMIT');
    expect(codeOf(() => encodeMessage(Kind.RESPONSE, 0, 1, { status: 's'.repeat(256) }))).toBe('ERR_SMUX_LIMIT');
    expect(codeOf(() => encodeMessage(Kind.REQUEST, 0, 1, { headers: { h: 'v'.repeat(65530) } }))).toBe('ERR_SMUX_LIMIT');
  });

  test('fields as long as their length prefix allows are encoded', () => {
    const decoded = roundTrip(Kind.REQUEST, 0, 1, { id: 'i'.repeat(255), pattern: 'p'.repeat(65535) });
    expect([decoded.id?.length, decoded.pattern?.length]).toEqual([255, 65535]);
  });
});

describe('call codec: body encodings', () => {
  test('undefined travels as encoding none with an empty body', () => {
    const bytes = wire(Kind.RESPONSE, Flag.LAST, undefined);
    expect(bytes[1]).toBe(Encoding.NONE);
    expect(bytes.readUInt32LE(4)).toBe(0);
    expect(roundTrip(Kind.RESPONSE, Flag.LAST, undefined)).toEqual({ kind: Kind.RESPONSE, flags: Flag.LAST, body: undefined });
  });

  test('values JSON has no text for (a function, a symbol) travel as none', () => {
    expect(wire(Kind.RESPONSE, 0, () => 1)[1]).toBe(Encoding.NONE);
    expect(wire(Kind.RESPONSE, 0, Symbol('s'))[1]).toBe(Encoding.NONE);
    expect(wire(Kind.RESPONSE, 0, { toJSON: () => undefined })[1]).toBe(Encoding.NONE);
    expect(roundTrip(Kind.RESPONSE, 0, () => 1).body).toBeUndefined();
  });

  test.each<[string, unknown, unknown]>([
    ['null', null, null],
    ['zero', 0, 0],
    ['a negative float', -1.5, -1.5],
    ['true', true, true],
    ['false', false, false],
    ['an array', [1, 'a', null, [true]], [1, 'a', null, [true]]],
    ['an object', { a: { b: [1, 2] }, c: 'é€😀' }, { a: { b: [1, 2] }, c: 'é€😀' }],
    ['an empty object', {}, {}],
    ['NaN (JSON null)', Number.NaN, null],
    ['a Date (its JSON text)', new Date(0), '1970-01-01T00:00:00.000Z'],
    ['an object with a Buffer inside (Buffer#toJSON)', { b: Buffer.from([1]) }, { b: { type: 'Buffer', data: [1] } }],
  ])('JSON: %s', (_name, value, expected) => {
    const bytes = wire(Kind.RESPONSE, 0, value);
    expect(bytes[1]).toBe(Encoding.JSON);
    expect(bytes.subarray(8).toString('utf8')).toBe(JSON.stringify(value));
    expect(roundTrip(Kind.RESPONSE, 0, value).body).toEqual(expected);
  });

  test.each([
    ['plain', 'hello'],
    ['empty (still a string, not undefined)', ''],
    ['JSON-looking text stays text', '{"a":1}'],
    ['multi-byte', 'é€😀'],
  ])('UTF-8 string without a JSON pass: %s', (_name, value) => {
    const bytes = wire(Kind.RESPONSE, 0, value);
    expect(bytes[1]).toBe(Encoding.STRING);
    expect(bytes.subarray(8).toString('utf8')).toBe(value);
    expect(bytes.readUInt32LE(4)).toBe(Buffer.byteLength(value));
    const body = roundTrip(Kind.RESPONSE, 0, value).body;
    expect(typeof body).toBe('string');
    expect(body).toBe(value);
  });

  test('bytes never become JSON: a Buffer, a Uint8Array and an empty one travel raw and come back as Buffers', () => {
    for (const value of [Buffer.from([0, 1, 2, 255]), new Uint8Array([9, 8, 7]), new Uint8Array(0), Buffer.from('[1,2]')]) {
      const bytes = wire(Kind.RESPONSE, 0, value);
      expect(bytes[1]).toBe(Encoding.BYTES);
      expect(bytes.readUInt32LE(4)).toBe(value.byteLength);
      expect(bytes.subarray(8)).toEqual(Buffer.from(value));
      const body = roundTrip(Kind.RESPONSE, 0, value).body;
      expect(Buffer.isBuffer(body)).toBe(true);
      expect(Buffer.from(body as Buffer).equals(Buffer.from(value))).toBe(true);
    }
  });

  test('a Uint8Array view into a larger buffer sends only its own bytes', () => {
    const backing = new Uint8Array([1, 2, 3, 4, 5, 6]);
    const view = backing.subarray(2, 5);
    expect(wire(Kind.RESPONSE, 0, view).subarray(8)).toEqual(Buffer.from([3, 4, 5]));
  });

  test('a small byte body (≤ 4096) is copied inline into the one buffer returned', () => {
    for (const size of [1, 100, 4096]) {
      const body = Buffer.alloc(size, 7);
      const out = encodeMessage(Kind.RESPONSE, Flag.LAST, body, { status: 's' });
      expect(out).toHaveLength(1);
      expect(out[0].length).toBe(8 + 2 + size);
      body.fill(0); // the message owns its copy
      expect(out[0].subarray(10).every((b) => b === 7)).toBe(true);
    }
  });

  test('a large byte body (> 4096) is returned as a second buffer that is the caller’s memory, not a copy', () => {
    const body = Buffer.alloc(4097, 3);
    const out = encodeMessage(Kind.RESPONSE, Flag.LAST, body, { id: 'x' });
    expect(out).toHaveLength(2);
    expect(out[1]).toBe(body); // the very Buffer
    expect(out[0].length).toBe(8 + 2);
    expect(out[0].readUInt32LE(4)).toBe(2 + 4097); // length still counts the separate body
    expect(out[0][1]).toBe(Encoding.BYTES);

    // A Uint8Array that is not a Buffer: a Buffer view over the same memory.
    const backing = new Uint8Array(10_000).fill(5);
    const view = backing.subarray(100, 9100);
    const [head, tail] = encodeMessage(Kind.DATA, 0, view);
    expect(Buffer.isBuffer(tail)).toBe(true);
    expect(tail.buffer).toBe(backing.buffer);
    expect(tail.byteOffset).toBe(100);
    expect(tail.length).toBe(9000);
    expect(head.readUInt32LE(4)).toBe(9000);

    // decoded, it is the same bytes
    const decoded = decode([Buffer.concat([head, tail])]).messages[0];
    expect(Buffer.from(view).equals(decoded.body as Buffer)).toBe(true);
  });

  test('large strings and JSON bodies stay in one buffer', () => {
    expect(encodeMessage(Kind.RESPONSE, 0, 'x'.repeat(10_000))).toHaveLength(1);
    expect(encodeMessage(Kind.RESPONSE, 0, { big: 'x'.repeat(10_000) })).toHaveLength(1);
  });

  test('for a channel, a large ASCII text body (> 4096 bytes) is the string itself after the head; other text is encoded', () => {
    const text = 'x'.repeat(10_000);
    const [head, body, ...rest] = encodeMessagePieces(Kind.RESPONSE, Flag.LAST, text, { status: 'ok' });
    expect(rest).toEqual([]);
    expect(body).toBe(text); // not encoded: the channel copies it into its write buffer
    expect(Buffer.isBuffer(head) && head.readUInt32LE(4)).toBe(1 + 2 + 10_000); // the length counts the text
    const json = encodeMessagePieces(Kind.REQUEST, 0, { big: text }, { id: '1', pattern: 'p' });
    expect(json[1]).toBe(JSON.stringify({ big: text }));
    // Not ASCII (bytes ≠ characters), or not large: one buffer, as encodeMessage gives.
    for (const value of ['é'.repeat(5_000), 'x'.repeat(4_096), { big: 'é'.repeat(3_000) }]) {
      const pieces = encodeMessagePieces(Kind.RESPONSE, 0, value);
      expect(pieces).toHaveLength(1);
      expect(piecesBytes(pieces).equals(wire(Kind.RESPONSE, 0, value))).toBe(true);
    }
    // The same bytes as encodeMessage's, and they decode to the text.
    expect(piecesBytes(encodeMessagePieces(Kind.RESPONSE, Flag.LAST, text)).equals(wire(Kind.RESPONSE, Flag.LAST, text))).toBe(true);
    expect(decode([piecesBytes(json)]).messages[0].body).toEqual({ big: text });
  });

  test('property: the pieces for a channel are always the bytes encodeMessage gives; text pieces are large and ASCII', () => {
    const value = fc.oneof(
      fc.string({ unit: 'binary-ascii', minLength: 4_000, maxLength: 5_000 }),
      fc.string({ unit: 'binary', minLength: 1_000, maxLength: 5_000 }),
      fc.jsonValue({ maxDepth: 2 }),
      fc.integer({ min: 4_080, max: 4_100 }).map((n) => ({ s: 'a'.repeat(n) })), // JSON of 4 088–4 108 bytes: across the 4 096 cut
      fc.uint8Array({ maxLength: 6_000 }),
    );
    fc.assert(
      fc.property(value, fc.boolean(), (v, withFields) => {
        const fields: MessageFields = withFields ? { id: '7', pattern: 'p', headers: { h: 'v' } } : {};
        const pieces = encodeMessagePieces(Kind.REQUEST, 0, v, fields);
        expect(piecesBytes(pieces).equals(wire(Kind.REQUEST, 0, v, fields))).toBe(true);
        for (const piece of pieces.filter((p) => typeof p === 'string')) {
          expect(piece.length).toBeGreaterThan(4_096);
          expect(Buffer.byteLength(piece)).toBe(piece.length);
        }
      }),
      { numRuns: 300, endOnFailure: true }, // shrinking strings of 5 000 characters takes minutes
    );
  });
});

/** A mixed sequence of messages covering every kind, encoding and field. */
function sampleMessages(): Array<{ kind: number; flags: number; value: unknown; fields?: MessageFields }> {
  return [
    { kind: Kind.REQUEST, flags: 0, value: [1, 2, 3], fields: { id: '1', pattern: 'sum', timeout: 1000 } },
    { kind: Kind.EVENT, flags: 0, value: { x: 'é' }, fields: { pattern: '{"cmd":"e"}', patternIsJson: true, headers: { a: 'b' } } },
    { kind: Kind.RESPONSE, flags: 0, value: 'text' },
    { kind: Kind.RESPONSE, flags: 0, value: Buffer.from([1, 2, 3, 4]) },
    { kind: Kind.DATA, flags: 0, value: Buffer.alloc(5000, 0xab) },
    { kind: Kind.RAW, flags: 0, value: new Uint8Array(0) },
    { kind: Kind.END, flags: Flag.ERROR, value: { code: 'E', message: 'm' } },
    { kind: Kind.RESPONSE, flags: Flag.LAST | Flag.ERROR, value: 'no handler', fields: { status: 'error' } },
    { kind: Kind.RESPONSE, flags: Flag.LAST, value: undefined },
  ];
}

function normalize(messages: CallMessage[]): unknown[] {
  return messages.map((m) => ({ ...m, body: Buffer.isBuffer(m.body) ? `bytes:${m.body.toString('hex')}` : m.body }));
}

describe('call codec: chunking', () => {
  const samples = sampleMessages();
  const stream = Buffer.concat(samples.flatMap((s) => encodeMessage(s.kind, s.flags, s.value, s.fields)));
  const reference = normalize(samples.flatMap((s) => decode([wire(s.kind, s.flags, s.value, s.fields)]).messages));

  test('many messages in one chunk decode in order, identical to one by one', () => {
    const { messages, reader } = decode([ownedCopy(stream)]);
    expect(normalize(messages)).toEqual(reference);
    expect(reader.partial).toBe(false);
  });

  test('split in two at every offset decodes identically', () => {
    let splits = 0;
    for (const { at, chunks } of everyTwoWaySplit(stream)) {
      const { messages, reader } = decode(chunks);
      if (normalize(messages).length !== reference.length) throw new Error(`split at ${at}: ${messages.length} messages`);
      expect(normalize(messages)).toEqual(reference);
      expect(reader.partial).toBe(false);
      splits++;
    }
    expect(splits).toBe(stream.length - 1);
  });

  test('one byte at a time decodes identically; `partial` is true exactly while a message is incomplete', () => {
    const reader = new MessageReader(LIMIT);
    const sink = new Collect();
    const boundaries = new Set<number>([0]);
    let end = 0;
    for (const s of samples) boundaries.add((end += Buffer.concat(encodeMessage(s.kind, s.flags, s.value, s.fields)).length));
    splitEvery(stream, 1).forEach((chunk, i) => {
      reader.push(chunk, sink);
      expect(reader.partial).toBe(!boundaries.has(i + 1));
    });
    expect(normalize(sink.messages)).toEqual(reference);
  });

  test('every split of one message into three pieces decodes identically', () => {
    const one = wire(Kind.REQUEST, 0, { a: [1, 2] }, { id: 'id', pattern: 'p', timeout: 5, headers: { k: 'v' } });
    const expected = decode([one]).messages;
    for (let i = 1; i < one.length; i++) {
      for (let j = i + 1; j < one.length; j++) expect(decode(splitAt(one, [i, j])).messages).toEqual(expected);
    }
  });

  test('a byte body that is most of its chunk is a view of it (no copy); a small part of a chunk is copied', () => {
    const small = wire(Kind.RESPONSE, 0, Buffer.from('abc'));
    const large = wire(Kind.RESPONSE, Flag.LAST, Buffer.alloc(6000, 1), { status: 'x' });
    const chunks = [ownedCopy(large), ownedCopy(Buffer.concat([small, large]))];
    const { messages } = decode(chunks);
    expect(messages).toHaveLength(3);
    expect(chunkIndexOf(messages[0].body as Buffer, chunks)).toBe(0);
    expect(chunkIndexOf(messages[2].body as Buffer, chunks)).toBe(1);
    expect((messages[2].body as Buffer).length).toBe(6000);
    // Held, a view would keep its whole chunk (a socket read) alive: 'abc' owns exactly its 3 bytes.
    const abc = messages[1].body as Buffer;
    expect(abc.toString()).toBe('abc');
    expect(chunkIndexOf(abc, chunks)).toBe(-1);
    expect(abc.buffer.byteLength).toBe(3);
  });

  test('a message that straddles chunks is joined; the bytes are right and later whole messages still decode', () => {
    const a = wire(Kind.DATA, 0, Buffer.alloc(300, 2));
    const b = wire(Kind.DATA, 0, Buffer.alloc(10, 3));
    const chunks = splitAt(Buffer.concat([a, b]), [100]);
    const { messages } = decode(chunks);
    expect(messages.map((m) => (m.body as Buffer).toString('hex'))).toEqual([
      Buffer.alloc(300, 2).toString('hex'),
      Buffer.alloc(10, 3).toString('hex'),
    ]);
    expect(chunkIndexOf(messages[0].body as Buffer, chunks)).toBe(-1);
  });

  test('a partial message is copied as it arrives: it holds no view of the reads it came in', () => {
    // Each piece is one byte of a 64 KiB read (the rest of each read was another stream's): a view per piece kept
    // every read alive, and an object per piece.
    const message = wire(Kind.REQUEST, 0, Buffer.alloc(2_000, 7), { pattern: 'p' });
    const reads = Array.from(message, (byte) => {
      const read = Buffer.alloc(64 * 1024);
      read[100] = byte;
      return read;
    });
    const reader = new MessageReader(LIMIT);
    const sink = new Collect();
    for (const [i, read] of reads.entries()) {
      reader.push(read.subarray(100, 101), sink);
      // room for the prefix until it is whole, then the message's size (it is under 66 KiB)
      if (i < reads.length - 1) expect(reader.bufferedBytes).toBe(i + 1 <= PREFIX_SIZE ? PREFIX_SIZE : message.length);
    }
    expect(reader.bufferedBytes).toBe(0);
    expect(reader.partial).toBe(false);
    expect(sink.messages).toHaveLength(1);
    const body = sink.messages[0].body as Buffer;
    expect(body.equals(Buffer.alloc(2_000, 7))).toBe(true);
    expect(reads.some((read) => read.buffer === body.buffer)).toBe(false);
  });

  test('a large partial message holds at most twice what arrived (66 KiB at least), charged as such', () => {
    const message = wire(Kind.REQUEST, 0, Buffer.alloc(300_000, 9), { pattern: 'p' });
    const reader = new MessageReader(LIMIT);
    const sink = new Collect();
    for (let at = 0; at < message.length; at += 1_000) {
      reader.push(ownedCopy(message.subarray(at, at + 1_000)), sink);
      const arrived = Math.min(message.length, at + 1_000);
      if (arrived < message.length) {
        expect(reader.bufferedBytes).toBeLessThanOrEqual(Math.max(66 * 1024, 2 * arrived));
        expect(reader.bufferedBytes).toBeGreaterThanOrEqual(arrived);
      }
    }
    expect(sink.messages).toHaveLength(1);
    expect((sink.messages[0].body as Buffer).equals(Buffer.alloc(300_000, 9))).toBe(true);
  });

  test('the reads a partial message came in can be collected while it is gathered', async () => {
    const reader = new MessageReader(LIMIT);
    const sink = new Collect();
    reader.push(wire(Kind.REQUEST, 0, Buffer.alloc(10_000)).subarray(0, PREFIX_SIZE), sink);
    const reads: Array<WeakRef<ArrayBuffer>> = [];
    for (let i = 0; i < 500; i++) {
      const read = Buffer.alloc(64 * 1024); // one socket read, of which this stream had one byte
      reads.push(new WeakRef(read.buffer));
      reader.push(read.subarray(i, i + 1), sink);
    }
    await new Promise((resolve) => setImmediate(resolve)); // WeakRef targets are kept until the job ends
    gc();
    expect(reader.partial).toBe(true);
    // Views of them pinned all 500 (32 MiB for 500 bytes); the last one may still be on this function's stack.
    expect(reads.filter((read) => read.deref() !== undefined).length).toBeLessThanOrEqual(1);
  });

  test('gathering goes on after a message that ends inside a chunk, and with a prefix split anywhere', () => {
    const a = wire(Kind.DATA, 0, Buffer.alloc(700, 4));
    const b = wire(Kind.END, Flag.LAST, 'tail');
    const c = wire(Kind.DATA, 0, Buffer.alloc(3, 5));
    const all = Buffer.concat([a, b, c]);
    for (let first = 1; first < a.length + 12; first += 7) {
      const { messages, reader } = decode(splitAt(all, [first, a.length + 3, a.length + b.length + 2]));
      expect(messages.map((m) => (Buffer.isBuffer(m.body) ? m.body.toString('hex') : m.body))).toEqual([
        Buffer.alloc(700, 4).toString('hex'),
        'tail',
        Buffer.alloc(3, 5).toString('hex'),
      ]);
      expect(reader.partial).toBe(false);
    }
  });

  test('an empty chunk changes nothing', () => {
    const one = wire(Kind.RESPONSE, Flag.LAST, 5);
    const reader = new MessageReader(LIMIT);
    const sink = new Collect();
    reader.push(Buffer.alloc(0), sink);
    reader.push(one.subarray(0, 3), sink);
    reader.push(Buffer.alloc(0), sink);
    reader.push(one.subarray(3), sink);
    reader.push(Buffer.alloc(0), sink);
    expect(sink.messages).toEqual([{ kind: Kind.RESPONSE, flags: Flag.LAST, body: 5 }]);
  });
});

describe('call codec: size limit', () => {
  test('a huge length with no body bytes fails at once with ERR_SMUX_LIMIT (checked on the prefix)', () => {
    const reader = new MessageReader(LIMIT);
    const sink = new Collect();
    expect(codeOf(() => reader.push(raw(Kind.REQUEST, Encoding.JSON, 0, Buffer.alloc(0), 0xffff_ffff), sink))).toBe('ERR_SMUX_LIMIT');
    expect(sink.messages).toEqual([]);
  });

  test('also when the prefix itself arrives in pieces', () => {
    const prefix = raw(Kind.REQUEST, Encoding.JSON, 0, Buffer.alloc(0), LIMIT + 1);
    for (let at = 1; at < PREFIX_SIZE; at++) {
      const reader = new MessageReader(LIMIT);
      const sink = new Collect();
      reader.push(prefix.subarray(0, at), sink);
      expect(codeOf(() => reader.push(prefix.subarray(at), sink))).toBe('ERR_SMUX_LIMIT');
    }
  });

  test('and for an oversized message after a good one in the same chunk (the good one is delivered first)', () => {
    const reader = new MessageReader(100);
    const sink = new Collect();
    const chunk = Buffer.concat([wire(Kind.DATA, 0, 1), raw(Kind.DATA, Encoding.JSON, 0, Buffer.from('1'), 101)]);
    expect(codeOf(() => reader.push(chunk, sink))).toBe('ERR_SMUX_LIMIT');
    expect(sink.messages).toEqual([{ kind: Kind.DATA, flags: 0, body: 1 }]);
  });

  test('a length equal to the limit is accepted; one more is not', () => {
    const body = Buffer.alloc(100, 1);
    expect(decode([wire(Kind.DATA, 0, body)], 100).messages).toHaveLength(1);
    expect(codeOf(() => decode([wire(Kind.DATA, 0, Buffer.alloc(101))], 100))).toBe('ERR_SMUX_LIMIT');
  });
});

describe('call codec: malformed input is ERR_SMUX_PROTOCOL', () => {
  const cases: Array<[string, Buffer]> = [
    ['kind 0', raw(0, Encoding.JSON, 0, '31')],
    ['kind 11', raw(11, Encoding.JSON, 0, '31')],
    ['kind 255', raw(255, Encoding.NONE, 0)],
    ['unknown flag bit 13', raw(Kind.RESPONSE, Encoding.NONE, 1 << 13)],
    ['unknown flag bit 15', raw(Kind.RESPONSE, Encoding.NONE, 0x8000 | Flag.LAST)],
    ['unknown encoding 4', raw(Kind.RESPONSE, 4, 0, '31')],
    ['unknown encoding 255', raw(Kind.RESPONSE, 255, 0)],
    ['a body with encoding none', raw(Kind.RESPONSE, Encoding.NONE, Flag.LAST, '31')],
    ['a body with encoding none after the fields', raw(Kind.RESPONSE, Encoding.NONE, Flag.STATUS, '01 61 00')],
    ['ID length past the end', raw(Kind.REQUEST, Encoding.NONE, Flag.ID, '05 6162')],
    ['ID length byte missing', raw(Kind.REQUEST, Encoding.NONE, Flag.ID)],
    ['PATTERN length cut in half', raw(Kind.REQUEST, Encoding.NONE, Flag.PATTERN, '03')],
    ['PATTERN past the end', raw(Kind.REQUEST, Encoding.NONE, Flag.PATTERN, '0300 7375')],
    ['TIMEOUT cut short', raw(Kind.REQUEST, Encoding.NONE, Flag.TIMEOUT, 'e803')],
    ['HEADERS past the end', raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, '1000 7b7d')],
    ['STATUS past the end', raw(Kind.RESPONSE, Encoding.NONE, Flag.STATUS, '09 6572')],
    ['a flag announcing a field that is not there', raw(Kind.REQUEST, Encoding.NONE, Flag.ID | Flag.PATTERN, '01 31')],
    ['invalid JSON body', raw(Kind.RESPONSE, Encoding.JSON, 0, Buffer.from('{"a":'))],
    ['an empty JSON body', raw(Kind.RESPONSE, Encoding.JSON, 0)],
    ['JSON body with trailing garbage', raw(Kind.RESPONSE, Encoding.JSON, 0, Buffer.from('1 2'))],
    ['headers not JSON', raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, Buffer.from('\x03\x00{a:'))],
    ['headers an array', raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, Buffer.from('\x02\x00[]'))],
    ['headers null', raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, Buffer.from('\x04\x00null'))],
    ['headers a string', raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, Buffer.from('\x03\x00"a"'))],
    ['headers a number', raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, Buffer.from('\x01\x001'))],
    ['a header value that is a number', raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, Buffer.from('\x07\x00{"a":1}'))],
    ['a header value that is null', raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, Buffer.from('\x0a\x00{"a":null}'))],
    ['a header value that is an object', raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, Buffer.from('\x10\x00{"a":"b","c":{}}'))],
  ];

  test.each(cases)('%s', (_name, bytes) => {
    const sink = new Collect();
    expect(codeOf(() => new MessageReader(LIMIT).push(bytes, sink))).toBe('ERR_SMUX_PROTOCOL');
    expect(sink.messages).toEqual([]);
    // the same, arriving one byte at a time: the error comes with the message's last byte, not before
    const reader = new MessageReader(LIMIT);
    const pieces = splitEvery(bytes, 1);
    for (const piece of pieces.slice(0, -1)) reader.push(piece, sink);
    expect(codeOf(() => reader.push(pieces.at(-1)!, sink))).toBe('ERR_SMUX_PROTOCOL');
  });

  test('hand-made well-formed messages with the same layouts decode (the cases above fail for the stated reason only)', () => {
    expect(decode([raw(Kind.REQUEST, Encoding.NONE, Flag.ID, '02 6162')]).messages[0]).toEqual({
      kind: Kind.REQUEST,
      flags: Flag.ID,
      id: 'ab',
      body: undefined,
    });
    expect(decode([raw(Kind.REQUEST, Encoding.NONE, Flag.HEADERS, Buffer.from('\x09\x00{"a":"1"}'))]).messages[0].headers).toEqual({
      a: '1',
    });
    expect(decode([raw(Kind.RESPONSE, Encoding.STRING, Flag.STATUS, '02 6572 6f6b')]).messages[0]).toEqual({
      kind: Kind.RESPONSE,
      flags: Flag.STATUS,
      status: 'er',
      body: 'ok',
    });
  });
});

describe('call codec: property', () => {
  const text = fc.string({ unit: 'grapheme', maxLength: 12 });
  const header = fc.dictionary(
    text.filter((k) => k !== '__proto__'),
    text,
    { maxKeys: 4 },
  );
  const body = fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 1 },
    { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 4 },
    { arbitrary: text, weight: 2 },
    { arbitrary: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)), weight: 2 },
    { arbitrary: fc.integer({ min: 4090, max: 9000 }).map((n) => Buffer.alloc(n, n & 0xff)), weight: 1 },
  );
  const message = fc
    .record({
      kind: fc.integer({ min: Kind.REQUEST, max: Kind.RAW }),
      flags: fc.subarray([Flag.LAST, Flag.ERROR, Flag.OPAQUE]).map((bits) => bits.reduce((a, b) => a | b, 0)),
      value: body,
      fields: fc.record(
        {
          id: fc.string({ unit: 'grapheme', maxLength: 40 }).filter((s) => Buffer.byteLength(s) < 256),
          pattern: text,
          patternIsJson: fc.boolean(),
          timeout: fc.integer({ min: 0, max: 0xffff_ffff }),
          headers: header,
          status: text,
        },
        { requiredKeys: [] },
      ),
    })
    .map(({ kind, flags, value, fields }) => {
      // Only what the kind takes (KIND_FLAGS): other flags and fields are refused by the decoder.
      const allowed = KIND_FLAGS[kind];
      const bits: Array<[keyof MessageFields, number]> = [
        ['id', Flag.ID],
        ['pattern', Flag.PATTERN],
        ['timeout', Flag.TIMEOUT],
        ['headers', Flag.HEADERS],
        ['status', Flag.STATUS],
      ];
      const kept: MessageFields = { ...fields };
      for (const [name, bit] of bits) if ((allowed & bit) === 0) delete kept[name];
      return { kind, flags: flags & allowed, value, fields: kept };
    });

  test('random messages encode, split anywhere and decode to the same messages', () => {
    fc.assert(
      fc.property(
        fc.array(message, { minLength: 1, maxLength: 8 }),
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { maxLength: 12 }),
        (messages, cuts) => {
          const bytes = Buffer.concat(messages.flatMap((m) => encodeMessage(m.kind, m.flags, m.value, m.fields)));
          const { messages: decoded, reader } = decode(splitAtFractions(bytes, cuts));
          expect(reader.partial).toBe(false);
          const expected = messages.map((m) => {
            const f = m.fields;
            let flags = m.flags;
            const out: Record<string, unknown> = { kind: m.kind };
            if (f.id !== undefined) {
              flags |= Flag.ID;
              out.id = f.id;
            }
            if (f.pattern !== undefined) {
              flags |= Flag.PATTERN | (f.patternIsJson === true ? Flag.PATTERN_JSON : 0);
              out.pattern = f.pattern;
            }
            if (f.timeout !== undefined) {
              flags |= Flag.TIMEOUT;
              out.timeout = f.timeout;
            }
            if (f.headers !== undefined) {
              flags |= Flag.HEADERS;
              out.headers = f.headers;
            }
            if (f.status !== undefined) {
              flags |= Flag.STATUS;
              out.status = f.status;
            }
            out.flags = flags;
            out.body = Buffer.isBuffer(m.value)
              ? `bytes:${m.value.toString('hex')}`
              : m.value === undefined
                ? undefined
                : JSON.parse(JSON.stringify(m.value));
            return out;
          });
          expect(normalize(decoded)).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
  });
});
