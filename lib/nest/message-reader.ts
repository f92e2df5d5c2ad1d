import { Buffer } from 'node:buffer';
import { SmuxError } from '../smux/index.js';
import { type CallMessage, Encoding, FIELD_FLAGS, Flag, Kind, KNOWN_FLAGS, LAST_KIND, PREFIX_SIZE } from './call-codec.js';
import { cachedText } from './text-cache.js';

/*
 * Decoding call messages (docs/PROTOCOL.md §2) from a stream's bytes: the prefix is checked before a message is
 * buffered, then the fields its flags announce, then the body.
 */

/** Receives the messages a {@link MessageReader} decodes (the per-call object itself: no closures). */
export interface MessageSink {
  /** `size`: the message's bytes on the wire, prefix included. */
  onMessage(message: CallMessage, size: number): void;
  /**
   * True while the sink reads a byte stream (docs/PROTOCOL.md §6), whose bytes are the concatenation of its RAW
   * bodies: a RAW message that does not arrive whole in one chunk then comes as several RAW messages, one per piece,
   * each delivered as its bytes arrive (a view of the chunk) instead of being gathered and joined (a copy). The
   * pieces carry the message's flags; `size` counts its prefix with the first one. Read on each such message's prefix.
   */
  readonly rawPieces?: boolean;
}

/** Flags a RAW message delivered in pieces may carry: known ones, none announcing a field. */
const PIECE_FLAGS = KNOWN_FLAGS & ~(FIELD_FLAGS | Flag.PATTERN_JSON);

/** Whether the prefix at `buf[at]` is a RAW message that may be delivered in pieces: bytes, no fields, known flags. */
function pieceable(buf: Buffer, at: number): boolean {
  return buf[at] === Kind.RAW && buf[at + 1] === Encoding.BYTES && (buf.readUInt16LE(at + 2) & ~PIECE_FLAGS) === 0;
}

/**
 * Splits a stream's bytes into call messages. The size limit is checked on each prefix before the message is
 * buffered; a message inside one chunk is decoded in place (a byte body is a view of the chunk), one that
 * straddles chunks is joined once (its own bytes only) — except a RAW message of bytes for a sink that reads a byte
 * stream, whose body is passed on in pieces as it arrives, never buffered ({@link MessageSink.rawPieces}).
 */
export class MessageReader {
  readonly #maxBytes: number;
  #pending: Buffer[] | null = null; // made for the first message that arrives in parts (most never do)
  #pendingBytes = 0;
  #need = 0; // whole size of the message being gathered, once its prefix is known
  #rawLeft = 0; // body bytes still to come of the RAW message being passed on in pieces
  #rawFlags = 0; // its flags
  #rawOwed = 0; // its prefix bytes, not yet counted in a piece's size
  #stopped = false;

  readonly #limitName: string;

  /**
   * @param maxMessageBytes - largest `length` accepted (`ERR_SMUX_LIMIT` beyond)
   * @param limitName - how errors name the limit (`the server's maxMessageBytes`)
   */
  constructor(maxMessageBytes: number, limitName = 'the limit') {
    this.#maxBytes = maxMessageBytes;
    this.#limitName = limitName;
  }

  /** True while a message is incomplete (EOF now would truncate it): part of it is buffered, or passed on in pieces. */
  get partial(): boolean {
    return this.#pendingBytes > 0 || this.#rawLeft > 0;
  }

  /** Bytes of the partial message buffered (a RAW body passed on in pieces is not). */
  get bufferedBytes(): number {
    return this.#pendingBytes;
  }

  /**
   * Stops for good, also in the middle of a chunk: what the sink does not want (the bytes after a unary
   * request) is not parsed, so the outcome never depends on how the bytes were split into frames.
   */
  stop(): void {
    this.#stopped = true;
    this.#pending = null;
    this.#pendingBytes = 0;
    this.#rawLeft = 0;
  }

  /**
   * Feeds bytes; `sink.onMessage` is called for each complete message (or piece of a RAW message), in order.
   * @throws SmuxError `ERR_SMUX_PROTOCOL` (malformed) or `ERR_SMUX_LIMIT` (too large)
   */
  push(chunk: Buffer, sink: MessageSink): void {
    if (this.#stopped) return;
    let data = chunk;
    let at = 0;
    if (this.#rawLeft > 0) {
      at = this.#rawPiece(chunk, 0, sink);
      if (this.#stopped || at === chunk.length) return;
    } else if (this.#pendingBytes > 0) {
      const pending = this.#pending!; // there are pending bytes
      pending.push(chunk);
      this.#pendingBytes += chunk.length;
      if (this.#need === 0) {
        if (this.#pendingBytes < PREFIX_SIZE) return;
        const prefix = Buffer.concat(pending, PREFIX_SIZE);
        this.#need = PREFIX_SIZE + this.#length(prefix, 0);
        if (sink.rawPieces === true && pieceable(prefix, 0)) return this.#passOnPending(prefix.readUInt16LE(2), sink);
      }
      if (this.#pendingBytes < this.#need) return;
      data = this.#joinPending(sink);
      if (this.#stopped) return;
    }
    while (data.length - at >= PREFIX_SIZE) {
      const end = at + PREFIX_SIZE + this.#length(data, at);
      if (end > data.length) {
        if (sink.rawPieces !== true || !pieceable(data, at)) break;
        this.#rawFlags = data.readUInt16LE(at + 2);
        this.#rawOwed = PREFIX_SIZE;
        this.#rawLeft = end - at - PREFIX_SIZE;
        this.#rawPiece(data, at + PREFIX_SIZE, sink);
        return;
      }
      sink.onMessage(decodeMessage(data, at, end), end - at);
      at = end;
      if (this.#stopped) return;
    }
    if (at < data.length) {
      (this.#pending ??= []).push(at === 0 ? data : data.subarray(at));
      this.#pendingBytes = data.length - at;
      if (this.#pendingBytes >= PREFIX_SIZE) this.#need = PREFIX_SIZE + this.#length(data, at);
    }
  }

  /**
   * Passes `data[at…]` on as a piece of the RAW message under way (as much of it as is the message's); returns
   * where the message ended in `data` (its length when the message goes on).
   */
  #rawPiece(data: Buffer, at: number, sink: MessageSink): number {
    const left = this.#rawLeft;
    const n = data.length - at < left ? data.length - at : left;
    if (n === 0) return at; // the chunk ended with the prefix
    this.#rawLeft = left - n;
    const size = this.#rawOwed + n;
    this.#rawOwed = 0;
    sink.onMessage(newMessage(Kind.RAW, this.#rawFlags, at === 0 && n === data.length ? data : data.subarray(at, at + n)), size);
    return at + n;
  }

  /**
   * The prefix, gathered from pieces, starts a RAW message to pass on in pieces: what arrived of its body goes now,
   * the rest as it comes; when the message is already whole, the bytes after it are read on.
   */
  #passOnPending(flags: number, sink: MessageSink): void {
    // The prefix was incomplete until the last chunk came (`#need` is known from 8 bytes on): the body starts there.
    const pending = this.#pending!; // called with the prefix pending
    const last = pending[pending.length - 1];
    const start = last.length - (this.#pendingBytes - PREFIX_SIZE);
    pending.length = 0;
    this.#pendingBytes = 0;
    this.#rawFlags = flags;
    this.#rawOwed = PREFIX_SIZE;
    this.#rawLeft = this.#need - PREFIX_SIZE;
    this.#need = 0;
    let end = start;
    if (this.#rawLeft > 0) end = this.#rawPiece(last, start, sink);
    else {
      this.#rawOwed = 0;
      sink.onMessage(newMessage(Kind.RAW, flags, last.subarray(start, start)), PREFIX_SIZE); // an empty body
    }
    if (!this.#stopped && this.#rawLeft === 0 && end < last.length) this.push(last.subarray(end), sink);
  }

  /** Decodes the gathered message, joined (its own bytes only), and returns the bytes after it in its last chunk. */
  #joinPending(sink: MessageSink): Buffer {
    const pending = this.#pending!; // called with a whole message pending
    const need = this.#need;
    const last = pending[pending.length - 1];
    const end = last.length - (this.#pendingBytes - need); // where the message ends in its last chunk
    const whole = Buffer.concat(pending, need);
    pending.length = 0; // kept for the next partial message
    this.#pendingBytes = 0;
    this.#need = 0;
    sink.onMessage(decodeMessage(whole, 0, need), need);
    return end === last.length ? EMPTY : last.subarray(end);
  }

  #length(buf: Buffer, at: number): number {
    const length = buf.readUInt32LE(at + 4);
    if (length > this.#maxBytes) {
      throw new SmuxError('ERR_SMUX_LIMIT', `a call message of ${length} bytes exceeds ${this.#limitName} (${this.#maxBytes} bytes)`);
    }
    return length;
  }
}

const EMPTY = Buffer.alloc(0);

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
function newMessage(kind: number, flags: number, body: unknown): CallMessage {
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

/** Decodes the message in `buf[start, end)`. */
function decodeMessage(buf: Buffer, start: number, end: number): CallMessage {
  const kind = buf[start];
  const encoding = buf[start + 1];
  const flags = buf.readUInt16LE(start + 2);
  if (kind < Kind.REQUEST || kind > LAST_KIND) throw malformed(`unknown message kind ${kind}`);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw malformed(`unknown flag bits 0x${flags.toString(16)}`);
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
      message.body = buf.subarray(at, end);
      break;
    case Encoding.STRING:
      message.body = buf.toString('utf8', at, end);
      break;
    default:
      throw malformed(`unknown body encoding ${encoding}`);
  }
  return message;
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
