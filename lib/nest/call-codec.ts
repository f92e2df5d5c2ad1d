import { Buffer } from 'node:buffer';
import { SmuxError, type SmuxErrorCode } from '../smux/index.js';
import { retryableByDefault } from '../smux/errors.js';
import { describeValue } from '../util/describe.js';

/*
 * Call messages on a smux stream (docs/PROTOCOL.md §2): an 8-byte prefix — kind u8, body encoding u8,
 * flags u16 LE, length u32 LE — then the fields the flags announce, then the body.
 */

/** Message kinds. */
export const Kind = { REQUEST: 1, EVENT: 2, RESPONSE: 3, DATA: 4, END: 5, RAW: 6, HELLO: 7, PING: 8, PONG: 9, DRAIN: 10 } as const;

/** The highest kind this version knows. */
export const LAST_KIND = Kind.DRAIN;

/** Body encodings. */
export const Encoding = { NONE: 0, JSON: 1, BYTES: 2, STRING: 3 } as const;

/** Flag bits. */
export const Flag = {
  LAST: 1 << 0,
  ERROR: 1 << 1,
  OPAQUE: 1 << 2,
  ID: 1 << 3,
  PATTERN: 1 << 4,
  PATTERN_JSON: 1 << 5,
  TIMEOUT: 1 << 6,
  HEADERS: 1 << 7,
  STATUS: 1 << 8,
  /** With ERROR: the body is a transport error `{ code, message }` written by the transport, not a handler's value. */
  TRANSPORT: 1 << 9,
  /** On a REQUEST: the request's data follows as DATA messages, ended by END (a client stream). */
  STREAM: 1 << 10,
  /** On a REQUEST: a byte-stream call; bytes flow both ways as RAW messages, each direction ended by END. */
  RAW: 1 << 11,
  /** On a RESPONSE: an item of a real-time feed; fields: its sequence number and the server's timestamp. */
  FEED: 1 << 12,
} as const;

/** Every flag bit this version knows (a message with another bit set is refused). */
export const KNOWN_FLAGS = (1 << 13) - 1;
/**
 * The flags each kind may carry, by kind (docs/PROTOCOL.md §2): a message with another bit set is malformed — a flag
 * without meaning for its kind (FEED on a REQUEST eats 16 body bytes as its fields; STREAM on an EVENT would drop its
 * DATA) is refused, never guessed at. One lookup per message in the decoder.
 */
export const KIND_FLAGS: readonly number[] = [
  0, // no kind 0
  /* REQUEST */ Flag.OPAQUE | Flag.ID | Flag.PATTERN | Flag.PATTERN_JSON | Flag.TIMEOUT | Flag.HEADERS | Flag.STREAM | Flag.RAW,
  /* EVENT */ Flag.OPAQUE | Flag.PATTERN | Flag.PATTERN_JSON | Flag.HEADERS,
  /* RESPONSE */ Flag.LAST | Flag.ERROR | Flag.OPAQUE | Flag.STATUS | Flag.TRANSPORT | Flag.FEED,
  /* DATA */ 0,
  /* END */ Flag.LAST | Flag.ERROR,
  /* RAW */ 0,
  /* HELLO */ 0,
  /* PING */ Flag.ID,
  /* PONG */ Flag.ID,
  /* DRAIN */ 0,
];
/** The flags that announce a field. */
export const FIELD_FLAGS = Flag.ID | Flag.PATTERN | Flag.TIMEOUT | Flag.HEADERS | Flag.STATUS | Flag.FEED;
/** Bytes of the message prefix. */
export const PREFIX_SIZE = 8;
/**
 * Byte bodies up to this size are copied into the message buffer; larger ones are sent as they are. Text bodies
 * (a string, JSON) this large that are ASCII are sent as the string itself too: the channel copies it into the
 * session's write buffer, where encoding it into a buffer of its own first cost an allocation (`Buffer.allocUnsafe`
 * pools only below 4 KiB: a fresh ArrayBuffer, external memory for the GC) and a second copy — ≈ 3 µs of a 16 KiB
 * call's 35 on each side (docs/NOTES.md).
 */
const INLINE_BYTES = 4096;

/**
 * A piece of an encoded message, as a channel takes it: bytes, or a large ASCII text body as the string itself
 * (one byte per character, so its `length` is its byte count). Only {@link encodeMessagePieces} makes string
 * pieces: the endpoints, the metrics and the size checks count pieces by `length`, which is a byte count for
 * bytes and for ASCII text only.
 */
export type MessagePiece = Buffer | string;

/** A decoded call message. */
export interface CallMessage {
  kind: number;
  flags: number;
  /** Packet id (`ID`). */
  id?: string | undefined;
  /** Pattern text (`PATTERN`); JSON text when `PATTERN_JSON` is set. */
  pattern?: string | undefined;
  /** Deadline budget in ms (`TIMEOUT`). */
  timeout?: number | undefined;
  /** Metadata (`HEADERS`). */
  headers?: Record<string, string> | undefined;
  /** Nest's `status` (`STATUS`). */
  status?: string | undefined;
  /** A feed item's sequence number (`FEED`): counts every item produced, dropped ones too. */
  seq?: number | undefined;
  /** A feed item's timestamp (`FEED`): ms since the epoch, on the server's clock. */
  timestamp?: number | undefined;
  /** The body value: undefined, a JSON value, a Buffer or a string. */
  body: unknown;
}

/** Optional fields of a message to encode. */
export interface MessageFields {
  id?: string | undefined;
  pattern?: string | undefined;
  patternIsJson?: boolean | undefined;
  timeout?: number | undefined;
  headers?: Record<string, string> | undefined;
  status?: string | undefined;
  feed?: { seq: number; timestamp: number } | undefined;
}

const NO_FIELDS: MessageFields = {};

/**
 * Encodes a message into bytes. Returns one buffer, or two when the body is a large byte buffer (sent as is, not
 * copied). Strings travel as UTF-8 and byte buffers raw — neither takes a JSON pass; everything else is JSON.
 */
export function encodeMessage(kind: number, flags: number, value: unknown, fields: MessageFields = NO_FIELDS): Buffer[] {
  return encode(kind, flags, value, fields, false) as Buffer[];
}

/**
 * Encodes a message for a channel: as {@link encodeMessage}, except that a large ASCII text body is the string
 * itself, not encoded here ({@link MessagePiece}).
 */
export function encodeMessagePieces(kind: number, flags: number, value: unknown, fields: MessageFields = NO_FIELDS): MessagePiece[] {
  return encode(kind, flags, value, fields, true);
}

function encode(kind: number, flags: number, value: unknown, fields: MessageFields, textPieces: boolean): MessagePiece[] {
  let encoding: number;
  let text: string | undefined;
  let bytes: Uint8Array | undefined;
  if (value === undefined) encoding = Encoding.NONE;
  else if (typeof value === 'string') {
    encoding = Encoding.STRING;
    text = value;
  } else if (value instanceof Uint8Array) {
    encoding = Encoding.BYTES;
    bytes = value;
  } else {
    encoding = Encoding.JSON;
    text = toJson(value);
    if (text === undefined) encoding = Encoding.NONE; // e.g. a function: JSON has no value for it either
  }

  let fieldBytes = 0;
  const { id, pattern, timeout, headers, status, feed } = fields;
  let headersText: string | undefined;
  // Every field's length is checked here, before anything is allocated for the message (a 9 MiB field was copied
  // into it first).
  if (id !== undefined) {
    flags |= Flag.ID;
    fieldBytes += 1 + checkedLength('id', id, 0xff);
  }
  if (pattern !== undefined) {
    flags |= Flag.PATTERN | (fields.patternIsJson === true ? Flag.PATTERN_JSON : 0);
    fieldBytes += 2 + checkedLength('pattern', pattern, 0xffff);
  }
  if (timeout !== undefined) {
    flags |= Flag.TIMEOUT;
    fieldBytes += 4;
  }
  if (headers !== undefined) {
    for (const [name, v] of Object.entries(headers)) {
      if (typeof v !== 'string')
        throw new SmuxError('ERR_SMUX_INVALID_ARGUMENT', `call header "${name}" must be a string, got ${describeValue(v)}`);
    }
    flags |= Flag.HEADERS;
    headersText = JSON.stringify(headers);
    const headersBytes = Buffer.byteLength(headersText);
    if (headersBytes > 0xffff) throw fieldTooLong('headers', headersBytes, 0xffff, ' as JSON');
    fieldBytes += 2 + headersBytes;
  }
  if (feed !== undefined) {
    flags |= Flag.FEED;
    fieldBytes += 16;
  }
  if (status !== undefined) {
    flags |= Flag.STATUS;
    fieldBytes += 1 + checkedLength('status', status, 0xff);
  }

  const bodyLength = text !== undefined ? Buffer.byteLength(text) : (bytes?.byteLength ?? 0);
  // A large body goes as a piece of its own: bytes as they are, ASCII text (as many bytes as characters) as the string.
  const ownPiece = bodyLength > INLINE_BYTES && (bytes !== undefined || (textPieces && bodyLength === text!.length));
  const head = Buffer.allocUnsafe(PREFIX_SIZE + fieldBytes + (ownPiece ? 0 : bodyLength));
  head[0] = kind;
  head[1] = encoding;
  head.writeUInt16LE(flags, 2);
  head.writeUInt32LE(fieldBytes + bodyLength, 4);
  let at = PREFIX_SIZE;
  if (id !== undefined) at = writeShortString(head, at, id, 1, 'id');
  if (pattern !== undefined) at = writeShortString(head, at, pattern, 2, 'pattern');
  if (timeout !== undefined) at = head.writeUInt32LE(Math.max(0, Math.min(0xffff_ffff, Math.ceil(timeout))), at);
  if (headersText !== undefined) at = writeShortString(head, at, headersText, 2, 'headers');
  if (status !== undefined) at = writeShortString(head, at, status, 1, 'status');
  if (feed !== undefined) at = head.writeDoubleLE(feed.timestamp, head.writeDoubleLE(feed.seq, at));
  if (ownPiece) {
    if (text !== undefined) return [head, text];
    return [head, Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes!.buffer, bytes!.byteOffset, bytes!.byteLength)];
  }
  if (text !== undefined) head.write(text, at, 'utf8');
  else if (bytes !== undefined) head.set(bytes, at);
  return [head];
}

/** JSON text of a value; a value JSON cannot carry (a BigInt, a cycle) is an ERR_SMUX_ENCODING. */
function toJson(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch (error) {
    throw new SmuxError('ERR_SMUX_ENCODING', `the value cannot be encoded as JSON: ${(error as Error).message}`, { cause: error });
  }
}

/** Strings up to this many characters are measured and written in JavaScript when they are ASCII. */
const SHORT_TEXT = 32;

/**
 * UTF-8 length of a field. A call's id and pattern are a few ASCII characters: a loop over them costs less than
 * a call into `Buffer.byteLength` (measured: ≈ 15 ns saved per field, with `writeShortString` ≈ 40 ns more).
 */
function fieldLength(value: string): number {
  if (value.length > SHORT_TEXT) return Buffer.byteLength(value);
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) > 0x7f) return Buffer.byteLength(value);
  return value.length;
}

/** The UTF-8 length of a field, at most `max` (its length prefix's range). */
function checkedLength(field: string, value: string, max: number): number {
  const length = fieldLength(value);
  if (length > max) throw fieldTooLong(field, length, max, '');
  return length;
}

function fieldTooLong(field: string, length: number, max: number, as: string): SmuxError {
  const verb = field === 'headers' ? 'are' : 'is';
  return new SmuxError(
    'ERR_SMUX_LIMIT',
    `the call's ${field} ${verb} ${length} bytes${as}, more than the ${max} bytes a call message carries`,
  );
}

function writeShortString(buf: Buffer, at: number, value: string, lengthBytes: 1 | 2, field: string): number {
  const length = fieldLength(value);
  // Not `2 ** (8 * lengthBytes)`: a power with a variable exponent is a call into the C library's pow(), which
  // was 3.7 % of a client's CPU at 64 B @64 (two fields per request).
  const max = lengthBytes === 1 ? 0xff : 0xffff;
  if (length > max) throw fieldTooLong(field, length, max, '');
  if (lengthBytes === 1) buf[at] = length;
  else buf.writeUInt16LE(length, at);
  at += lengthBytes;
  if (length === value.length && length <= SHORT_TEXT) {
    for (let i = 0; i < length; i++) buf[at + i] = value.charCodeAt(i); // ASCII (fieldLength checked it)
  } else buf.write(value, at, 'utf8');
  return at + length;
}

/** Flags of a transport error message: the call's last message, an error, written by the transport. */
export const TRANSPORT_ERROR = Flag.LAST | Flag.ERROR | Flag.TRANSPORT;

/**
 * Encodes a RESPONSE carrying a transport error (`ERR_SMUX_TIMEOUT`, `ERR_SMUX_LIMIT`, …): `{ code, message }` as
 * JSON, and `retryable` where it differs from the code's default (a reply refused while the connection's budget
 * was full may be retried), so the caller's SmuxError says what the server's did. Peers that do not know the field
 * ignore it.
 */
export function encodeTransportError(error: SmuxError): Buffer[] {
  const body: { code: string; message: string; retryable?: boolean } = { code: error.code, message: error.message };
  if (error.retryable !== retryableByDefault(error.code)) body.retryable = error.retryable;
  return encodeMessage(Kind.RESPONSE, TRANSPORT_ERROR, body);
}

/** The {@link SmuxError} a transport error body stands for (a body of another shape is reported as it is). */
export function decodeTransportError(body: unknown): SmuxError {
  const { code, message, retryable } = (typeof body === 'object' && body !== null ? body : {}) as {
    code?: unknown;
    message?: unknown;
    retryable?: unknown;
  };
  if (typeof code === 'string' && code.startsWith('ERR_SMUX_')) {
    const text = typeof message === 'string' ? message : code;
    return new SmuxError(code as SmuxErrorCode, text, typeof retryable === 'boolean' ? { retryable } : undefined);
  }
  return new SmuxError('ERR_SMUX_PROTOCOL', `malformed transport error from the peer: ${JSON.stringify(body)}`);
}
