import { SmuxError } from '../smux/index.js';
import { type CallMessage, Encoding, FIELD_FLAGS, Flag, Kind, KNOWN_FLAGS, LAST_KIND, PREFIX_SIZE } from './call-codec.js';

/*
 * Decoding call messages (docs/PROTOCOL.md §2) from a stream's bytes: the prefix is checked before a message is
 * buffered, then the fields its flags announce, then the body.
 */

/** Receives the messages a {@link MessageReader} decodes (the per-call object itself: no closures). */
export interface MessageSink {
  /** `size`: the message's bytes on the wire, prefix included. */
  onMessage(message: CallMessage, size: number): void;
}

/**
 * Splits a stream's bytes into call messages. The size limit is checked on each prefix before the message is
 * buffered; a message inside one chunk is decoded in place (a byte body is a view of the chunk), one that
 * straddles chunks is joined once.
 */
export class MessageReader {
  readonly #maxBytes: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #need = 0; // whole size of the message being gathered, once its prefix is known
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

  /** True while part of a message is buffered (EOF now would truncate it). */
  get partial(): boolean {
    return this.#pendingBytes > 0;
  }

  /** Bytes of the partial message buffered. */
  get bufferedBytes(): number {
    return this.#pendingBytes;
  }

  /**
   * Stops for good, also in the middle of a chunk: what the sink does not want (the bytes after a unary
   * request) is not parsed, so the outcome never depends on how the bytes were split into frames.
   */
  stop(): void {
    this.#stopped = true;
    this.#pending = [];
    this.#pendingBytes = 0;
  }

  /**
   * Feeds bytes; `sink.onMessage` is called for each complete message, in order.
   * @throws SmuxError `ERR_SMUX_PROTOCOL` (malformed) or `ERR_SMUX_LIMIT` (too large)
   */
  push(chunk: Buffer, sink: MessageSink): void {
    if (this.#stopped) return;
    let data = chunk;
    if (this.#pendingBytes > 0) {
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
      if (this.#need === 0) {
        if (this.#pendingBytes < PREFIX_SIZE) return;
        this.#need = PREFIX_SIZE + this.#length(Buffer.concat(this.#pending, PREFIX_SIZE), 0);
      }
      if (this.#pendingBytes < this.#need) return;
      data = Buffer.concat(this.#pending, this.#pendingBytes);
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#need = 0;
    }
    let at = 0;
    while (data.length - at >= PREFIX_SIZE) {
      const end = at + PREFIX_SIZE + this.#length(data, at);
      if (end > data.length) break;
      sink.onMessage(decodeMessage(data, at, end), end - at);
      at = end;
      if (this.#stopped) return;
    }
    if (at < data.length) {
      this.#pending.push(at === 0 ? data : data.subarray(at));
      this.#pendingBytes = data.length - at;
      if (this.#pendingBytes >= PREFIX_SIZE) this.#need = PREFIX_SIZE + this.#length(data, at);
    }
  }

  #length(buf: Buffer, at: number): number {
    const length = buf.readUInt32LE(at + 4);
    if (length > this.#maxBytes) {
      throw new SmuxError('ERR_SMUX_LIMIT', `a call message of ${length} bytes exceeds ${this.#limitName} (${this.#maxBytes} bytes)`);
    }
    return length;
  }
}

/** Where decoding stands in the message being decoded (module state instead of a closure per message). */
let cursor = 0;

/** Reads a length-prefixed UTF-8 field at `cursor` and advances it. */
function readField(buf: Buffer, lengthBytes: 1 | 2, end: number): string {
  if (cursor + lengthBytes > end) throw malformed('truncated field');
  const length = lengthBytes === 1 ? buf[cursor] : buf.readUInt16LE(cursor);
  cursor += lengthBytes;
  if (cursor + length > end) throw malformed('truncated field');
  const value = buf.toString('utf8', cursor, cursor + length);
  cursor += length;
  return value;
}

/** Decodes the message in `buf[start, end)`. */
function decodeMessage(buf: Buffer, start: number, end: number): CallMessage {
  const kind = buf[start];
  const encoding = buf[start + 1];
  const flags = buf.readUInt16LE(start + 2);
  if (kind < Kind.REQUEST || kind > LAST_KIND) throw malformed(`unknown message kind ${kind}`);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw malformed(`unknown flag bits 0x${flags.toString(16)}`);
  const message: CallMessage = { kind, flags, body: undefined };
  cursor = start + PREFIX_SIZE;
  if ((flags & FIELD_FLAGS) !== 0) {
    if ((flags & Flag.ID) !== 0) message.id = readField(buf, 1, end);
    if ((flags & Flag.PATTERN) !== 0) message.pattern = readField(buf, 2, end);
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
