import { describe, expect, test } from '@jest/globals';
import { Cmd } from '../../lib/smux/constants.js';
import { type FrameSink, FrameDecoder } from '../../lib/smux/decoder.js';
import { SmuxError } from '../../lib/smux/errors.js';
import { encodeFrame, encodeUpdPayload } from '../helpers/frames.js';
import { chunkIndexOf, everyTwoWaySplit, ownedCopy, splitAt, splitEvery } from '../helpers/chunks.js';

/** One sink call, tagged with the frame (1-based) whose header was decoded last: PSH pieces of one frame share it. */
type Event =
  | { frame: number; type: 'syn' | 'fin'; streamId: number }
  | { frame: number; type: 'nop' }
  | { frame: number; type: 'psh'; streamId: number; data: Buffer }
  | { frame: number; type: 'upd'; streamId: number; consumed: number; window: number }
  | { frame: number; type: 'error'; error: SmuxError };

class Recorder implements FrameSink {
  readonly events: Event[] = [];
  readonly decoder: FrameDecoder;
  /** Runs after each recorded event: lets a test pause, resume or push from inside a callback. */
  after: (event: Event, decoder: FrameDecoder) => void = () => {};

  constructor(version: number) {
    this.decoder = new FrameDecoder(version, this);
  }

  onSyn(streamId: number): void {
    this.#record({ frame: this.decoder.framesDecoded, type: 'syn', streamId });
  }
  onFin(streamId: number): void {
    this.#record({ frame: this.decoder.framesDecoded, type: 'fin', streamId });
  }
  onPsh(streamId: number, data: Buffer): void {
    this.#record({ frame: this.decoder.framesDecoded, type: 'psh', streamId, data });
  }
  onNop(): void {
    this.#record({ frame: this.decoder.framesDecoded, type: 'nop' });
  }
  onUpd(streamId: number, consumed: number, window: number): void {
    this.#record({ frame: this.decoder.framesDecoded, type: 'upd', streamId, consumed, window });
  }
  onProtocolError(error: SmuxError): void {
    this.#record({ frame: this.decoder.framesDecoded, type: 'error', error });
  }

  /** PSH pieces merged per frame, payloads as text: easy to compare whatever the chunking. */
  get frames(): unknown[] {
    const out: Array<Record<string, unknown>> = [];
    for (const e of this.events) {
      const last = out.at(-1);
      if (e.type === 'psh' && last?.['type'] === 'psh' && last['frame'] === e.frame)
        last['data'] = `${last['data'] as string}${e.data.toString('latin1')}`;
      else if (e.type === 'psh') out.push({ ...e, data: e.data.toString('latin1') });
      else if (e.type === 'error') out.push({ frame: e.frame, type: 'error', code: e.error.code });
      else out.push({ ...e });
    }
    return out;
  }

  #record(event: Event): void {
    this.events.push(event);
    this.after(event, this.decoder);
  }
}

function decode(version: number, chunks: Buffer[]): Recorder {
  const recorder = new Recorder(version);
  for (const chunk of chunks) recorder.decoder.push(chunk);
  return recorder;
}

/** Call-stack depth at the caller (all frames, not Node's default 10). */
function stackDepth(): number {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = Infinity;
  const depth = new Error().stack!.split('\n').length;
  Error.stackTraceLimit = limit;
  return depth;
}

const ping = encodeFrame(1, Cmd.PSH, 3, Buffer.from('ping'));

// A v2 conversation using every command, for the chunking tests.
const v2Mix = Buffer.concat([
  encodeFrame(2, Cmd.SYN, 3),
  encodeFrame(2, Cmd.PSH, 3, Buffer.from('hello')),
  encodeFrame(2, Cmd.UPD, 3, encodeUpdPayload(0x0102_0304, 65_536)),
  encodeFrame(2, Cmd.NOP, 0),
  encodeFrame(2, Cmd.PSH, 0xffff_ffff, Buffer.from('!')),
  encodeFrame(2, Cmd.FIN, 3),
]);
const v2MixFrames = [
  { frame: 1, type: 'syn', streamId: 3 },
  { frame: 2, type: 'psh', streamId: 3, data: 'hello' },
  { frame: 3, type: 'upd', streamId: 3, consumed: 0x0102_0304, window: 65_536 },
  { frame: 4, type: 'nop' },
  { frame: 5, type: 'psh', streamId: 0xffff_ffff, data: '!' },
  { frame: 6, type: 'fin', streamId: 3 },
];

describe('FrameDecoder: decoding', () => {
  test('decodes SYN, PSH, NOP and FIN in order', () => {
    const chunk = Buffer.concat([encodeFrame(1, Cmd.SYN, 3), ping, encodeFrame(1, Cmd.NOP, 0), encodeFrame(1, Cmd.FIN, 3)]);
    const { frames, decoder } = decode(1, [chunk]);
    expect(frames).toEqual([
      { frame: 1, type: 'syn', streamId: 3 },
      { frame: 2, type: 'psh', streamId: 3, data: 'ping' },
      { frame: 3, type: 'nop' },
      { frame: 4, type: 'fin', streamId: 3 },
    ]);
    expect([decoder.framesDecoded, decoder.bufferedBytes, decoder.failed]).toEqual([4, 0, false]);
  });

  test('decodes a v2 UPD with both fields as unsigned 32-bit numbers', () => {
    const { frames } = decode(2, [encodeFrame(2, Cmd.UPD, 5, encodeUpdPayload(0xffff_ffff, 0x8000_0000))]);
    expect(frames).toEqual([{ frame: 1, type: 'upd', streamId: 5, consumed: 0xffff_ffff, window: 0x8000_0000 }]);
  });

  test('an empty PSH delivers nothing, and the frames after it are decoded', () => {
    const { events, decoder } = decode(1, [Buffer.concat([encodeFrame(1, Cmd.PSH, 3), encodeFrame(1, Cmd.FIN, 3)])]);
    expect(events).toEqual([{ frame: 2, type: 'fin', streamId: 3 }]);
    expect(decoder.framesDecoded).toBe(2);
  });

  test('100 000 frames in one chunk are decoded by a loop, at a constant stack depth', () => {
    const count = 100_000;
    const chunk = Buffer.concat(Array.from({ length: count }, (_, i) => encodeFrame(1, i % 2 === 0 ? Cmd.SYN : Cmd.FIN, i)));
    const recorder = new Recorder(1);
    const depths: number[] = [];
    recorder.after = (e) => {
      if (e.frame === 1 || e.frame === count) depths.push(stackDepth());
    };
    recorder.decoder.push(chunk);
    expect(recorder.events).toHaveLength(count);
    expect(recorder.events.at(-1)).toEqual({ frame: count, type: 'fin', streamId: count - 1 });
    // Recursion per frame would make the last callback much deeper than the first.
    expect(depths[1]).toBe(depths[0]);
  });

  test('a header split at every offset, or byte by byte, decodes the same frames', () => {
    for (const { at, chunks } of everyTwoWaySplit(v2Mix)) {
      expect({ at, frames: decode(2, chunks).frames }).toEqual({ at, frames: v2MixFrames });
    }
    expect(decode(2, splitEvery(v2Mix, 1)).frames).toEqual(v2MixFrames);
    expect(decode(2, splitEvery(v2Mix, 3)).frames).toEqual(v2MixFrames);
  });

  test('a UPD payload straddling chunks is read whole, at every split', () => {
    const upd = encodeFrame(2, Cmd.UPD, 9, encodeUpdPayload(123_456_789, 262_144));
    for (let at = 9; at < upd.length; at++) {
      const recorder = decode(2, splitAt(upd, [at]));
      expect(recorder.frames).toEqual([{ frame: 1, type: 'upd', streamId: 9, consumed: 123_456_789, window: 262_144 }]);
    }
  });
});

describe('FrameDecoder: zero-copy PSH payloads', () => {
  test('a PSH payload inside one chunk arrives as one view of that chunk', () => {
    const chunk = ownedCopy(Buffer.concat([ping, encodeFrame(1, Cmd.PSH, 5, Buffer.from('pong!'))]));
    const { events } = decode(1, [chunk]);
    const pieces = events.map((e) => (e.type === 'psh' ? e.data : Buffer.alloc(0)));
    expect(pieces.map((p) => p.toString())).toEqual(['ping', 'pong!']);
    expect(pieces.map((p) => [p.buffer === chunk.buffer, p.byteOffset - chunk.byteOffset])).toEqual([
      [true, 8],
      [true, 20],
    ]);
  });

  test('a PSH payload split across chunks arrives as views of each chunk, in order, with nothing copied', () => {
    const payload = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 31) % 251));
    const frame = encodeFrame(2, Cmd.PSH, 7, payload);
    const chunks = splitAt(frame, [4, 9, 308, 309, 1007]); // in the header, after 1 payload byte, 1-byte chunk, last byte alone
    const { events } = decode(2, chunks);
    const pieces = events.map((e) => (e.type === 'psh' ? e.data : Buffer.alloc(0)));
    expect(Buffer.concat(pieces).equals(payload)).toBe(true);
    // One piece per chunk holding payload bytes, each a view into that chunk (the first chunk is header only).
    expect(pieces.map((p) => chunkIndexOf(p, chunks))).toEqual([1, 2, 3, 4, 5]);
    expect(pieces.every((p) => p.length > 0)).toBe(true);
  });

  test('pieces never include bytes of the next frame', () => {
    const chunk = ownedCopy(Buffer.concat([encodeFrame(1, Cmd.PSH, 3, Buffer.from('abc')), encodeFrame(1, Cmd.FIN, 3)]));
    const head = chunk.subarray(0, 5);
    const rest = ownedCopy(chunk.subarray(5));
    const { events } = decode(1, [ownedCopy(head), rest]);
    expect(events.map((e) => (e.type === 'psh' ? [e.data.toString(), chunkIndexOf(e.data, [rest])] : e.type))).toEqual([['abc', 0], 'fin']);
  });
});

describe('FrameDecoder: invalid headers', () => {
  // Each is a protocol error in Go v1.5.57 (PROTOCOL.md §2); the session version is the first value.
  test.each([
    ['a v2 frame in a v1 session', 1, encodeFrame(2, Cmd.PSH, 3, Buffer.from('data'))],
    ['a v1 frame in a v2 session', 2, encodeFrame(1, Cmd.SYN, 3)],
    ['SYN with a payload', 1, encodeFrame(1, Cmd.SYN, 3, Buffer.from('x'))],
    ['FIN with a payload', 2, encodeFrame(2, Cmd.FIN, 3, Buffer.from('xy'))],
    ['NOP with a payload', 1, encodeFrame(1, Cmd.NOP, 0, Buffer.alloc(16))],
    ['UPD in a v1 session', 1, encodeFrame(1, Cmd.UPD, 3, encodeUpdPayload(1, 2))],
    ['UPD with a 7-byte payload', 2, encodeFrame(2, Cmd.UPD, 3, Buffer.alloc(7))],
    ['UPD with a 9-byte payload', 2, encodeFrame(2, Cmd.UPD, 3, Buffer.alloc(9))],
    ['unknown command 5', 1, encodeFrame(1, 5, 3)],
    ['unknown command 255', 2, encodeFrame(2, 255, 3)],
  ])('%s: one ERR_SMUX_PROTOCOL, nothing decoded after it', (_name, version, bad) => {
    const good = encodeFrame(version, Cmd.SYN, 11);
    const recorder = new Recorder(version);
    recorder.decoder.push(Buffer.concat([good, bad, good]));
    recorder.decoder.push(good); // later input is ignored too
    const [first, second, ...rest] = recorder.events;
    expect(first).toEqual({ frame: 1, type: 'syn', streamId: 11 });
    expect(second?.type).toBe('error');
    const error = (second as { error: unknown }).error;
    expect(error).toBeInstanceOf(SmuxError);
    expect((error as SmuxError).code).toBe('ERR_SMUX_PROTOCOL');
    expect(rest).toEqual([]);
    expect([recorder.decoder.failed, recorder.decoder.bufferedBytes]).toEqual([true, 0]);
  });

  test('the header is rejected as soon as it is complete, before any of its payload arrives', () => {
    const bad = encodeFrame(2, Cmd.PSH, 3, Buffer.from('secret'));
    const recorder = new Recorder(1);
    recorder.decoder.push(bad.subarray(0, 8));
    expect(recorder.frames).toEqual([{ frame: 1, type: 'error', code: 'ERR_SMUX_PROTOCOL' }]);
    recorder.decoder.push(bad.subarray(8));
    expect(recorder.events).toHaveLength(1); // the payload never reaches the sink
  });

  test('payload bytes of a rejected header are not decoded as frames (no desync as in Go 1.5.16)', () => {
    // A SYN claiming 8 payload bytes that happen to be a valid NOP.
    const bytes = Buffer.concat([encodeFrame(1, Cmd.SYN, 3).fill(8, 2, 3), encodeFrame(1, Cmd.NOP, 0)]);
    expect(decode(1, [bytes]).frames).toEqual([{ frame: 1, type: 'error', code: 'ERR_SMUX_PROTOCOL' }]);
  });

  test('stop() drops buffered bytes and ignores later input without reporting an error', () => {
    const recorder = new Recorder(1);
    recorder.decoder.push(ping.subarray(0, 6));
    recorder.decoder.stop();
    recorder.decoder.push(ping.subarray(6));
    recorder.decoder.push(ping);
    expect(recorder.events).toEqual([]);
    expect([recorder.decoder.failed, recorder.decoder.bufferedBytes]).toEqual([true, 0]);
  });
});

describe('FrameDecoder: pause and resume', () => {
  const three = Buffer.concat([encodeFrame(1, Cmd.SYN, 3), ping, encodeFrame(1, Cmd.FIN, 3)]);

  test('while paused, pushed bytes are buffered and nothing is decoded', () => {
    const recorder = new Recorder(1);
    recorder.decoder.pause();
    recorder.decoder.push(three);
    expect(recorder.events).toEqual([]);
    expect([recorder.decoder.paused, recorder.decoder.bufferedBytes, recorder.decoder.framesDecoded]).toEqual([true, three.length, 0]);
    recorder.decoder.resume();
    expect(recorder.frames.map((f) => (f as Event).type)).toEqual(['syn', 'psh', 'fin']);
    expect([recorder.decoder.paused, recorder.decoder.bufferedBytes]).toEqual([false, 0]);
  });

  test('pause() from a callback stops before the next frame; resume() continues from there', () => {
    const recorder = new Recorder(1);
    recorder.after = (e, decoder) => {
      if (e.type === 'syn') decoder.pause();
    };
    recorder.decoder.push(three);
    expect(recorder.events.map((e) => e.type)).toEqual(['syn']);
    expect(recorder.decoder.bufferedBytes).toBe(three.length - 8);
    recorder.after = () => {};
    recorder.decoder.resume();
    expect(recorder.events.map((e) => e.type)).toEqual(['syn', 'psh', 'fin']);
  });

  test('pause() during a split PSH payload holds back the rest of that payload', () => {
    const frame = encodeFrame(1, Cmd.PSH, 3, Buffer.from('abcdef'));
    const recorder = new Recorder(1);
    recorder.after = (_e, decoder) => decoder.pause();
    recorder.decoder.push(frame.subarray(0, 10));
    recorder.decoder.push(frame.subarray(10));
    expect(recorder.frames).toEqual([{ frame: 1, type: 'psh', streamId: 3, data: 'ab' }]);
    expect(recorder.decoder.bufferedBytes).toBe(4);
    recorder.decoder.resume();
    expect(recorder.frames).toEqual([{ frame: 1, type: 'psh', streamId: 3, data: 'abcdef' }]);
  });

  test('pause() and resume() from inside every callback deliver each frame once, in order, without recursion', () => {
    const count = 1000;
    const chunk = Buffer.concat(Array.from({ length: count }, (_, i) => encodeFrame(1, Cmd.PSH, i, Buffer.from([i & 0xff]))));
    const recorder = new Recorder(1);
    const depths = new Set<number>();
    recorder.after = (e, decoder) => {
      decoder.pause();
      decoder.resume(); // as a consumer returning tokens inside onData would
      if (e.frame % 100 === 1) depths.add(stackDepth());
    };
    recorder.decoder.push(chunk);
    expect(recorder.events.map((e) => e.frame)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    expect(depths.size).toBe(1);
  });

  test('after an outside resume(), callbacks that pause and resume keep the loop going; one that only pauses stops it', () => {
    const recorder = new Recorder(1);
    recorder.decoder.pause();
    recorder.decoder.push(three);
    let resumes = 0;
    recorder.after = (_e, decoder) => {
      decoder.pause();
      if (++resumes < 3) decoder.resume();
    };
    recorder.decoder.resume();
    expect(recorder.events.map((e) => e.type)).toEqual(['syn', 'psh', 'fin']);
    expect(recorder.decoder.paused).toBe(true); // the last callback paused without resuming
  });

  test('a push() from inside a callback is decoded after the current bytes, in order', () => {
    const recorder = new Recorder(1);
    let pushed = false;
    recorder.after = (e, decoder) => {
      if (e.type === 'syn' && !pushed) {
        pushed = true;
        decoder.push(encodeFrame(1, Cmd.NOP, 0));
      }
    };
    recorder.decoder.push(three);
    expect(recorder.events.map((e) => e.type)).toEqual(['syn', 'psh', 'fin', 'nop']);
  });
});

describe('FrameDecoder: counters', () => {
  test('framesDecoded counts headers and bufferedBytes counts what waits for more input', () => {
    const frame = encodeFrame(2, Cmd.PSH, 3, Buffer.from('0123456789'));
    const upd = encodeFrame(2, Cmd.UPD, 3, encodeUpdPayload(1, 2));
    const recorder = new Recorder(2);
    const { decoder } = recorder;
    decoder.push(frame.subarray(0, 5));
    expect([decoder.framesDecoded, decoder.bufferedBytes]).toEqual([0, 5]); // half a header
    decoder.push(frame.subarray(5, 11));
    expect([decoder.framesDecoded, decoder.bufferedBytes]).toEqual([1, 0]); // 3 payload bytes handed on at once
    decoder.push(frame.subarray(11));
    decoder.push(upd.subarray(0, 13));
    expect([decoder.framesDecoded, decoder.bufferedBytes]).toEqual([2, 5]); // a UPD payload is read whole
    decoder.push(upd.subarray(13));
    expect([decoder.framesDecoded, decoder.bufferedBytes]).toEqual([2, 0]);
    expect(recorder.frames).toEqual([
      { frame: 1, type: 'psh', streamId: 3, data: '0123456789' },
      { frame: 2, type: 'upd', streamId: 3, consumed: 1, window: 2 },
    ]);
  });

  test('an empty chunk changes nothing', () => {
    const recorder = decode(1, [Buffer.alloc(0)]);
    expect([recorder.events.length, recorder.decoder.bufferedBytes, recorder.decoder.framesDecoded]).toEqual([0, 0, 0]);
  });
});
