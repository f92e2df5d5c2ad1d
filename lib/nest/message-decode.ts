import type { Buffer } from 'node:buffer';
import { SmuxError } from '../smux/index.js';
import { detached } from '../util/detached.js';
import { type CallMessage, Encoding, FIELD_FLAGS, Flag, KIND_FLAGS, KNOWN_FLAGS, LAST_KIND, Kind, PREFIX_SIZE } from './call-codec.js';
import { cachedText } from './text-cache.js';

/*
 * Decoding one whole call message (docs/PROTOCOL.md §2): its prefix's kind and flags, the fields its flags announce,
 * then the body. MessageReader (message-reader.ts) finds where each message starts and ends.
 */

/** Where decoding stands in the message being decoded (module state instead of a closure per message). */
let cursor = 0;

/** Reads a length-prefixed UTF-8 field at `cursor` and advances it; `cached`: a text that repeats (the pattern). */
function readField(buf: Buffer, lengthBytes: 1 | 2, end: number, cached = false): string {
  if (cursor + lengthBytes > end) throw malformed('truncated field');
  const length = lengthBytes === 1 ? buf[cursor] : buf.readUInt16LE(cursor);
  cursor += lengthBytes;
  if (cursor + length > end) throw malformed('truncated field');
  const value = cached ? cachedText(buf, cursor, length) : buf.toString('utf8', cursor, cursor + length);
  cursor += length;
  return value;
}

/**
 * A message with no fields yet. Every field is in the one literal, so every message has the same shape: fields
 * added later went to an out-of-object property store (one more allocation per message) and gave the messages as
 * many shapes as flag combinations.
 */
export function newMessage(kind: number, flags: number, body: unknown): CallMessage {
  return {
    kind,
    flags,
    id: undefined,
    pattern: undefined,
    timeout: undefined,
    headers: undefined,
    status: undefined,
    seq: undefined,
    timestamp: undefined,
    body,
  };
}

/**
 * Decodes the message in `buf[start, end)`.
 * @throws SmuxError `ERR_SMUX_PROTOCOL` when it is malformed
 */
export function decodeMessage(buf: Buffer, start: number, end: number): CallMessage {
  const kind = buf[start];
  const encoding = buf[start + 1];
  const flags = buf.readUInt16LE(start + 2);
  if (kind < Kind.REQUEST || kind > LAST_KIND) throw malformed(`unknown message kind ${kind}`);
  if ((flags & ~KIND_FLAGS[kind]) !== 0) throw malformed(invalidFlags(kind, flags));
  const message = newMessage(kind, flags, undefined);
  cursor = start + PREFIX_SIZE;
  if ((flags & FIELD_FLAGS) !== 0) {
    if ((flags & Flag.ID) !== 0) message.id = readField(buf, 1, end);
    if ((flags & Flag.PATTERN) !== 0) message.pattern = readField(buf, 2, end, true);
    if ((flags & Flag.TIMEOUT) !== 0) {
      if (cursor + 4 > end) throw malformed('truncated field');
      message.timeout = buf.readUInt32LE(cursor);
      cursor += 4;
    }
    if ((flags & Flag.HEADERS) !== 0) message.headers = parseHeaders(readField(buf, 2, end));
    if ((flags & Flag.STATUS) !== 0) message.status = readField(buf, 1, end);
    if ((flags & Flag.FEED) !== 0) {
      if (cursor + 16 > end) throw malformed('truncated field');
      message.seq = buf.readDoubleLE(cursor);
      message.timestamp = buf.readDoubleLE(cursor + 8);
      cursor += 16;
    }
  }
  const at = cursor;
  if ((flags & Flag.PATTERN_JSON) !== 0 && (flags & Flag.PATTERN) === 0) throw malformed('PATTERN_JSON without a PATTERN field');
  if ((flags & STREAMING) !== 0) {
    // Only a REQUEST may carry these (KIND_FLAGS): a client stream or a byte stream, not both; a client stream's data
    // follows as DATA, so its REQUEST has no body (an OPAQUE one's body is the serialized packet, without data).
    if ((flags & STREAMING) === STREAMING) throw malformed('STREAM and RAW together');
    if ((flags & (Flag.STREAM | Flag.OPAQUE)) === Flag.STREAM && encoding !== Encoding.NONE) {
      throw malformed('a STREAM request with a body (its data follows as DATA messages)');
    }
  }
  switch (encoding) {
    case Encoding.NONE:
      if (at !== end) throw malformed('a body with encoding "none"');
      break;
    case Encoding.JSON:
      try {
        message.body = JSON.parse(buf.toString('utf8', at, end));
      } catch (error) {
        throw malformed(`invalid JSON body: ${(error as Error).message}`);
      }
      break;
    case Encoding.BYTES:
      message.body = detached(buf.subarray(at, end), 1 / 4); // a body a handler keeps pins at most 4× its bytes
      break;
    case Encoding.STRING:
      message.body = buf.toString('utf8', at, end);
      break;
    default:
      throw malformed(`unknown body encoding ${encoding}`);
  }
  return message;
}

const STREAMING = Flag.STREAM | Flag.RAW;

const KIND_NAMES = ['', 'REQUEST', 'EVENT', 'RESPONSE', 'DATA', 'END', 'RAW', 'HELLO', 'PING', 'PONG', 'DRAIN'];
const FLAG_NAMES = Object.keys(Flag);

/** Why `flags` are refused on `kind`: bits this version does not know, or flags the kind does not take. */
function invalidFlags(kind: number, flags: number): string {
  if ((flags & ~KNOWN_FLAGS) !== 0) return `unknown flag bits 0x${flags.toString(16)}`;
  const names = FLAG_NAMES.filter((_, bit) => (flags & ~KIND_FLAGS[kind] & (1 << bit)) !== 0);
  return `flag${names.length > 1 ? 's' : ''} ${names.join('|')} not valid on ${KIND_NAMES[kind]}`;
}

function parseHeaders(text: string): Record<string, string> {
  let headers: unknown;
  try {
    headers = JSON.parse(text);
  } catch {
    throw malformed('headers are not JSON');
  }
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) throw malformed('headers are not a JSON object');
  for (const value of Object.values(headers)) if (typeof value !== 'string') throw malformed('header values must be strings');
  return headers as Record<string, string>;
}

function malformed(why: string): SmuxError {
  return new SmuxError('ERR_SMUX_PROTOCOL', `malformed call message: ${why}`);
}
