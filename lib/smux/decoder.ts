import { Buffer } from 'node:buffer';
import { Cmd, HEADER_SIZE, type ProtocolVersion, UPD_PAYLOAD_SIZE } from './constants.js';
import { SmuxError } from './errors.js';
import { headerError } from './frame.js';

/** Receives what the {@link FrameDecoder} decodes. Called synchronously from {@link FrameDecoder.push}. */
export interface FrameSink {
  /** A decoder detecting the version (constructed with 0) read the first frame's: from now on it requires it. */
  onVersion?(version: ProtocolVersion): void;
  /** A SYN for `streamId`. */
  onSyn(streamId: number): void;
  /** A FIN for `streamId`. */
  onFin(streamId: number): void;
  /**
   * Payload bytes of a PSH frame for `streamId`. A frame's payload may arrive in several pieces (when it
   * straddles socket chunks); each piece is a view into the chunk it came in, never a copy.
   */
  onPsh(streamId: number, data: Buffer): void;
  /** A NOP (keep-alive). */
  onNop(): void;
  /** A UPD for `streamId`. */
  onUpd(streamId: number, consumed: number, window: number): void;
  /** The input is invalid; nothing more is decoded after this. */
  onProtocolError(error: SmuxError): void;
}

/*
 * Decoder states. A header is read whole (8 bytes, assembled in a scratch buffer when it straddles chunks)
 * and validated before anything of its payload is looked at; a PSH payload is then handed on piece by piece
 * as it arrives, and a UPD payload (8 bytes) is read whole.
 *
 *   HEADER ──PSH, length > 0──▶ PSH_PAYLOAD ──all `remaining` bytes handed on──▶ HEADER
 *   HEADER ──UPD──▶ UPD_PAYLOAD ──8 bytes──▶ HEADER
 *   HEADER ──SYN / FIN / NOP / empty PSH──▶ HEADER
 *   any ──invalid header──▶ FAILED (terminal)
 */
const HEADER = 0;
const PSH_PAYLOAD = 1;
const UPD_PAYLOAD = 2;
const FAILED = 3;

/**
 * Incremental smux frame decoder over a list of socket chunks.
 *
 * - `push(chunk)` never copies payload bytes: PSH data is passed on as `subarray` views, split where a frame
 *   straddles chunks. Only 8-byte headers and UPD payloads that straddle chunks are assembled in a scratch
 *   buffer.
 * - Headers are validated (version, command, length rules) before any of their payload is consumed.
 * - `pause()` stops decoding before the next step (Go checks its token bucket before each header); bytes
 *   already received stay buffered until `resume()`. The caller bounds that by pausing the socket too.
 * - Many frames in one chunk are decoded in a loop, never by recursion.
 */
export class FrameDecoder {
  readonly #sink: FrameSink;
  #version: number;
  readonly #scratch = Buffer.allocUnsafe(HEADER_SIZE);
  #chunks: Buffer[] = [];
  #offset = 0; // consumed bytes of #chunks[0]
  #buffered = 0; // unconsumed bytes over all chunks
  #state = HEADER;
  #remaining = 0; // PSH payload bytes still to come
  #streamId = 0;
  #paused = false;
  #draining = false;
  #frames = 0;
  #view: Buffer = this.#scratch; // where #take8 left the last 8 bytes
  #viewAt = 0;

  /**
   * @param version - the session's protocol version; frames with another version byte are rejected. 0 detects
   *   it: the first frame's version byte (1 or 2) becomes the session's
   * @param sink - receives decoded frames
   */
  constructor(version: number, sink: FrameSink) {
    this.#version = version;
    this.#sink = sink;
  }

  /** Frame headers decoded so far. */
  get framesDecoded(): number {
    return this.#frames;
  }

  /** Bytes received but not decoded yet (only while paused, or a partial frame). */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** True once invalid input was seen; all later input is ignored. */
  get failed(): boolean {
    return this.#state === FAILED;
  }

  /** True while paused. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Appends received bytes and decodes as far as possible. */
  push(chunk: Buffer): void {
    if (this.#state === FAILED || chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    this.#drain();
  }

  /** Stops decoding before the next step; the sink sees nothing more until {@link resume}. */
  pause(): void {
    this.#paused = true;
  }

  /** Continues decoding buffered bytes. Safe to call from inside a sink callback. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#drain();
  }

  /** Drops buffered bytes and ignores all later input. */
  stop(): void {
    this.#state = FAILED;
    this.#chunks = [];
    this.#buffered = 0;
    this.#offset = 0;
  }

  #drain(): void {
    // A sink callback may call resume() (a consumer returning tokens); the outer loop carries on instead.
    if (this.#draining) return;
    this.#draining = true;
    try {
      while (!this.#paused) {
        const state = this.#state;
        if (state === HEADER) {
          if (this.#buffered < HEADER_SIZE) return;
          this.#readHeader();
        } else if (state === PSH_PAYLOAD) {
          if (this.#buffered === 0) return;
          this.#readPshPiece();
        } else if (state === UPD_PAYLOAD) {
          if (this.#buffered < UPD_PAYLOAD_SIZE) return;
          this.#take8();
          const buf = this.#view;
          const at = this.#viewAt;
          this.#state = HEADER;
          this.#sink.onUpd(this.#streamId, readU32(buf, at), readU32(buf, at + 4));
        } else {
          return;
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  #readHeader(): void {
    this.#take8();
    const buf = this.#view;
    const at = this.#viewAt;
    const version = buf[at];
    const cmd = buf[at + 1];
    const length = buf[at + 2] | (buf[at + 3] << 8);
    const streamId = readU32(buf, at + 4);
    const first = this.#frames++ === 0;
    if (first && this.#version === 0 && (version === 1 || version === 2)) {
      this.#version = version;
      this.#sink.onVersion?.(version);
    }
    // Still detecting after the first header: its version byte was neither 1 nor 2 (0 included).
    const problem = this.#version === 0 ? 'not a smux version' : headerError(version, cmd, length, this.#version);
    if (problem !== null) {
      // The very first bytes decide whether the peer speaks smux at all: show them, they say what it speaks.
      let message = `invalid frame: ${problem} (stream ${streamId})`;
      if (first && (version === 1 || version === 2) && version !== this.#version) {
        message = `smux protocol version mismatch: the peer sent a version ${version} frame, this session speaks version ${this.#version}`;
      } else if (first && (version === 1 || version === 2)) {
        // A smux header of our version that breaks a rule (a NOP with a payload): a broken peer, not another protocol.
        message = `invalid first frame: ${problem} (stream ${streamId}); its first bytes are ${describeBytes(buf, at, this.#chunks, this.#offset)}`;
      } else if (first) {
        message = `the peer does not speak smux: its first bytes are ${describeBytes(buf, at, this.#chunks, this.#offset)}`;
      }
      this.stop();
      this.#sink.onProtocolError(new SmuxError('ERR_SMUX_PROTOCOL', message));
      return;
    }
    switch (cmd) {
      case Cmd.PSH:
        if (length > 0) {
          this.#state = PSH_PAYLOAD;
          this.#remaining = length;
          this.#streamId = streamId;
        }
        return;
      case Cmd.SYN:
        this.#sink.onSyn(streamId);
        return;
      case Cmd.FIN:
        this.#sink.onFin(streamId);
        return;
      case Cmd.NOP:
        this.#sink.onNop();
        return;
      default: // UPD, the only command left after validation
        this.#state = UPD_PAYLOAD;
        this.#streamId = streamId;
    }
  }

  #readPshPiece(): void {
    const chunk = this.#chunks[0];
    const start = this.#offset;
    const available = chunk.length - start;
    const n = available < this.#remaining ? available : this.#remaining;
    const piece = start === 0 && n === chunk.length ? chunk : chunk.subarray(start, start + n);
    this.#consume(n);
    this.#remaining -= n;
    if (this.#remaining === 0) this.#state = HEADER;
    this.#sink.onPsh(this.#streamId, piece);
  }

  /**
   * Consumes 8 bytes and points `#view`/`#viewAt` at them: into the current chunk when they are contiguous,
   * else at a copy in the scratch buffer. (Fields, not a returned tuple: this runs once per frame.)
   */
  #take8(): void {
    const chunk = this.#chunks[0];
    const at = this.#offset;
    if (chunk.length - at >= 8) {
      this.#view = chunk;
      this.#viewAt = at;
      this.#consume(8);
      return;
    }
    let copied = 0;
    while (copied < 8) {
      const current = this.#chunks[0];
      const n = Math.min(8 - copied, current.length - this.#offset);
      current.copy(this.#scratch, copied, this.#offset, this.#offset + n);
      copied += n;
      this.#consume(n);
    }
    this.#view = this.#scratch;
    this.#viewAt = 0;
  }

  #consume(n: number): void {
    this.#buffered -= n;
    this.#offset += n;
    const chunks = this.#chunks;
    while (chunks.length > 0 && this.#offset >= chunks[0].length) {
      this.#offset -= chunks[0].length;
      chunks.shift();
    }
  }
}

/** Up to 16 bytes from the start of the input, as hex and as printable text: `47 45 54 20 … ("GET / HTTP/1.1")`. */
function describeBytes(header: Buffer, at: number, chunks: readonly Buffer[], offset: number): string {
  const rest = chunks.length > 0 ? chunks[0].subarray(offset, offset + 8) : Buffer.alloc(0);
  const bytes = Buffer.concat([header.subarray(at, at + HEADER_SIZE), rest]);
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  const text = [...bytes].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
  return `${hex} ("${text}")`;
}

function readU32(buf: Buffer, at: number): number {
  return (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16) | (buf[at + 3] << 24)) >>> 0;
}
