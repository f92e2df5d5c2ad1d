import { Buffer } from 'node:buffer';
import { SmuxError } from '../smux/index.js';
import { type CallMessage, Encoding, Kind, KIND_FLAGS, PREFIX_SIZE } from './call-codec.js';
import { decodeMessage, newMessage } from './message-decode.js';

/*
 * Splitting a stream's bytes into call messages (docs/PROTOCOL.md §2): the prefix is checked before a message is
 * buffered; message-decode.ts decodes the fields its flags announce, then the body.
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
 * is under a quarter of it: `detached()` (util/detached.ts)), one that straddles chunks is copied as it arrives into a buffer of its
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

/** The body of an empty RAW piece. */
const EMPTY = Buffer.alloc(0);
