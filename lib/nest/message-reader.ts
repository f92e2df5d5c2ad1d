import { Buffer } from 'node:buffer';
import { SmuxError } from '../smux/index.js';
import { detached } from '../util/detached.js';
import { type CallMessage, Encoding, FIELD_FLAGS, Flag, Kind, KIND_FLAGS, KNOWN_FLAGS, LAST_KIND, PREFIX_SIZE } from './call-codec.js';
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

/** Flags a RAW message delivered in pieces may carry: those valid on a RAW (none announces a field). */
const PIECE_FLAGS = KIND_FLAGS[Kind.RAW];

/**
 * Whether the prefix at `buf[at]` is a RAW message that may be delivered in pieces: bytes, valid flags. Another one is
 * gathered whole and refused by {@link decodeMessage}.
 */
function pieceable(buf: Buffer, at: number): boolean {
  return buf[at] === Kind.RAW && buf[at + 1] === Encoding.BYTES && (buf.readUInt16LE(at + 2) & ~PIECE_FLAGS) === 0;
}

/**
 * A partial message up to this size gets a buffer of its size at once (copied once, as a join would); a larger one
 * starts here and doubles, so a peer that declares a large message and sends little holds (and is charged) little.
 */
const GATHER_WHOLE = 66 * 1024;

/** How a reader's errors name its limit, and what fixes it (`remedy`: empty, or `: ` and the advice). */
export interface MessageLimit {
  readonly name: string;
  readonly remedy: string;
}

const THE_LIMIT: MessageLimit = { name: 'the limit', remedy: '' };

/**
 * Splits a stream's bytes into call messages. The size limit is checked on each prefix before the message is
 * buffered; a message inside one chunk is decoded in place (a byte body is a view of the chunk, or a copy when it
 * is under a quarter of it: {@link detached}), one that straddles chunks is copied as it arrives into a buffer of its
 * own ({@link GATHER_WHOLE}) — never a list of views, which pinned each read a piece came in and cost an object per
 * piece (a request sent in one-byte frames held ≈ 130 B of heap per byte) — except a RAW message of bytes for a sink
 * that reads a byte stream, whose body is passed on in pieces as it arrives, never buffered
 * ({@link MessageSink.rawPieces}).
 */
export class MessageReader {
  readonly #maxBytes: number;
  #gather: Buffer | null = null; // the partial message's bytes so far, in a buffer of its own (most never need one)
  #gathered = 0; // bytes of it in #gather
  #need = 0; // whole size of the message being gathered, once its prefix is known
  #rawLeft = 0; // body bytes still to come of the RAW message being passed on in pieces
  #rawFlags = 0; // its flags
  #rawOwed = 0; // its prefix bytes, not yet counted in a piece's size
  #stopped = false;

  readonly #limit: MessageLimit;

  /**
   * @param maxMessageBytes - largest `length` accepted (`ERR_SMUX_LIMIT` beyond)
   * @param limit - how errors name the limit and what fixes it: a shared constant (a reader is made per call)
   */
  constructor(maxMessageBytes: number, limit: MessageLimit = THE_LIMIT) {
    this.#maxBytes = maxMessageBytes;
    this.#limit = limit;
  }

  /** True while a message is incomplete (EOF now would truncate it): part of it is buffered, or passed on in pieces. */
  get partial(): boolean {
    return this.#gathered > 0 || this.#rawLeft > 0;
  }

  /**
   * Bytes held for the partial message: its buffer, room included — 8 until its prefix is whole, then its size up to
   * 66 KiB, or for a larger one at most twice what arrived (66 KiB at least).
   */
  get bufferedBytes(): number {
    return this.#gather === null ? 0 : this.#gather.length;
  }

  /**
   * Stops for good, also in the middle of a chunk: what the sink does not want (the bytes after a unary
   * request) is not parsed, so the outcome never depends on how the bytes were split into frames.
   */
  stop(): void {
    this.#stopped = true;
    this.#gather = null;
    this.#gathered = 0;
    this.#rawLeft = 0;
  }

  /**
   * Feeds bytes; `sink.onMessage` is called for each complete message (or piece of a RAW message), in order.
   * @throws SmuxError `ERR_SMUX_PROTOCOL` (malformed) or `ERR_SMUX_LIMIT` (too large)
   */
  push(chunk: Buffer, sink: MessageSink): void {
    if (this.#stopped) return;
    let at = 0;
    if (this.#rawLeft > 0) at = this.#rawPiece(chunk, 0, sink);
    else if (this.#gathered > 0) at = this.#gatherFrom(chunk, sink);
    if (this.#stopped) return;
    while (chunk.length - at >= PREFIX_SIZE) {
      const end = at + PREFIX_SIZE + this.#length(chunk, at);
      if (end > chunk.length) {
        if (sink.rawPieces !== true || !pieceable(chunk, at)) break;
        this.#rawFlags = chunk.readUInt16LE(at + 2);
        this.#rawOwed = PREFIX_SIZE;
        this.#rawLeft = end - at - PREFIX_SIZE;
        this.#rawPiece(chunk, at + PREFIX_SIZE, sink);
        return;
      }
      sink.onMessage(decodeMessage(chunk, at, end), end - at);
      at = end;
      if (this.#stopped) return;
    }
    if (at < chunk.length) {
      const n = chunk.length - at;
      if (n >= PREFIX_SIZE) this.#need = PREFIX_SIZE + this.#length(chunk, at);
      this.#append(chunk, at, n);
    }
  }

  /**
   * Adds what `chunk` holds of the partial message; decodes it once whole (or passes a RAW message on in pieces once
   * its prefix is known). Returns where reading goes on in `chunk` (its length when all of it was taken).
   */
  #gatherFrom(chunk: Buffer, sink: MessageSink): number {
    let at = 0;
    if (this.#need === 0) {
      at = Math.min(PREFIX_SIZE - this.#gathered, chunk.length);
      this.#append(chunk, 0, at);
      if (this.#gathered < PREFIX_SIZE) return at;
      const prefix = this.#gather!; // gathered
      this.#need = PREFIX_SIZE + this.#length(prefix, 0);
      if (sink.rawPieces === true && pieceable(prefix, 0)) return this.#passOnGathered(prefix.readUInt16LE(2), chunk, at, sink);
    }
    const n = Math.min(this.#need - this.#gathered, chunk.length - at);
    this.#append(chunk, at, n);
    at += n;
    if (this.#gathered < this.#need) return at;
    const whole = this.#gather!; // gathered
    const need = this.#need;
    this.#gather = null; // the message's views (a byte body) keep it: the next partial message gets a new one
    this.#gathered = 0;
    this.#need = 0;
    sink.onMessage(decodeMessage(whole, 0, need), need);
    return at;
  }

  /** Copies `data[at, at + n)` into the partial message's buffer, growing it (doubling, up to the message's size). */
  #append(data: Buffer, at: number, n: number): void {
    let gather = this.#gather;
    const filled = this.#gathered;
    if (gather === null || filled + n > gather.length) {
      const need = this.#need; // 0 while the prefix is incomplete: room for the prefix only
      const grown =
        need === 0
          ? PREFIX_SIZE
          : need <= GATHER_WHOLE
            ? need
            : Math.min(need, Math.max(GATHER_WHOLE, 2 * (gather?.length ?? 0), 2 * (filled + n)));
      const next = Buffer.allocUnsafeSlow(Math.max(grown, filled + n));
      if (gather !== null) gather.copy(next, 0, 0, filled);
      this.#gather = gather = next;
    }
    data.copy(gather, filled, at, at + n);
    this.#gathered = filled + n;
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
   * The gathered prefix starts a RAW message to pass on in pieces; its body starts at `chunk[at]` (the prefix was
   * incomplete until `chunk` came). Returns where the message ended in `chunk` (its length when it goes on).
   */
  #passOnGathered(flags: number, chunk: Buffer, at: number, sink: MessageSink): number {
    this.#gather = null;
    this.#gathered = 0;
    this.#rawFlags = flags;
    this.#rawOwed = PREFIX_SIZE;
    this.#rawLeft = this.#need - PREFIX_SIZE;
    this.#need = 0;
    if (this.#rawLeft > 0) return this.#rawPiece(chunk, at, sink);
    this.#rawOwed = 0;
    sink.onMessage(newMessage(Kind.RAW, flags, EMPTY), PREFIX_SIZE); // an empty body
    return at;
  }

  #length(buf: Buffer, at: number): number {
    const length = buf.readUInt32LE(at + 4);
    if (length > this.#maxBytes) {
      throw new SmuxError(
        'ERR_SMUX_LIMIT',
        `a call message of ${length} bytes exceeds ${this.#limit.name} (${this.#maxBytes} bytes)${this.#limit.remedy}`,
      );
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
