/**
 * Golden vectors: the exact bytes Go's smux 1.5.16 writes for a fixed list of operations, captured by our Go
 * peer (`test/interop/peer golden`) into test/fixtures/golden/vectors.json. Our decoder must read them as
 * Go meant them, and our Session must write the very same bytes for the same operations.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { Cmd, Session, type SmuxConfig } from '../../lib/smux/index.js';
import { encodeFrame } from '../helpers/frames.js';
import { FrameDecoder, type FrameSink } from '../../lib/smux/decoder.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { tcpPair, until } from '../helpers/net.js';

interface VectorFrame {
  version: number;
  cmd: number;
  length: number;
  streamId: number;
  payloadHex: string;
}
interface Vector {
  name: string;
  description: string;
  version: 1 | 2;
  role: 'client' | 'server';
  hex: string;
  frames: VectorFrame[];
}

const vectors = JSON.parse(readFileSync(new URL('../fixtures/golden/vectors.json', import.meta.url), 'utf8')) as Vector[];
const byName = new Map(vectors.map((v) => [v.name, v]));
function vector(name: string): Vector {
  const v = byName.get(name);
  if (v === undefined) throw new Error(`no golden vector ${name}`);
  return v;
}

/** Decodes bytes fed one at a time (the harshest split) into whole frames, joining PSH pieces per frame. */
function decode(version: number, bytes: Buffer): VectorFrame[] {
  const frames: VectorFrame[] = [];
  const frame = (cmd: number, streamId: number, payload: Buffer): void => {
    frames.push({ version, cmd, length: payload.length, streamId, payloadHex: payload.toString('hex') });
  };
  let pshHeader = -1; // framesDecoded when the current PSH frame's header was read
  const sink: FrameSink = {
    onSyn: (id) => frame(Cmd.SYN, id, Buffer.alloc(0)),
    onFin: (id) => frame(Cmd.FIN, id, Buffer.alloc(0)),
    onNop: () => frame(Cmd.NOP, 0, Buffer.alloc(0)),
    onPsh: (id, data) => {
      if (decoder.framesDecoded !== pshHeader) {
        pshHeader = decoder.framesDecoded;
        frame(Cmd.PSH, id, data);
        return;
      }
      const last = frames.at(-1)!;
      last.payloadHex += data.toString('hex');
      last.length += data.length;
    },
    onUpd: (id, consumed, window) => {
      const payload = Buffer.alloc(8);
      payload.writeUInt32LE(consumed, 0);
      payload.writeUInt32LE(window, 4);
      frame(Cmd.UPD, id, payload);
    },
    onProtocolError: (e) => {
      throw e;
    },
  };
  const decoder = new FrameDecoder(version, sink);
  for (const byte of bytes) decoder.push(Buffer.from([byte]));
  return frames;
}

describe('golden vectors from Go smux 1.5.16', () => {
  test('the file holds the vectors PROTOCOL.md §1 names', () => {
    expect(vector('v1-client-syn-first').hex).toBe('0100000003000000');
    expect(vector('v1-client-psh-ping').hex).toBe('010204000300000070696e67');
    expect(vector('v1-client-fin').hex).toBe('0101000003000000');
    expect(vector('v2-server-upd-first-read').hex).toBe('02040800030000000400000000000100');
    expect(vector('v2-nop').hex).toBe('0203000000000000');
  });

  test.each(vectors.map((v) => [v.name, v] as const))('%s decodes to its frames and re-encodes to its bytes', (_name, v) => {
    const bytes = Buffer.from(v.hex, 'hex');
    expect(decode(v.version, bytes)).toEqual(v.frames);
    const encoded = Buffer.concat(v.frames.map((f) => encodeFrame(f.version, f.cmd, f.streamId, Buffer.from(f.payloadHex, 'hex'))));
    expect(encoded.toString('hex')).toBe(v.hex);
  });
});

/** A session on one end of a real TCP pair; the raw other end records what the session writes. */
async function capture(role: 'client' | 'server', config: Partial<SmuxConfig>) {
  const { client, server } = await tcpPair();
  const [ours, raw]: [net.Socket, net.Socket] = role === 'client' ? [client, server] : [server, client];
  const session = role === 'client' ? Session.client(ours, config) : Session.server(ours, config);
  session.on('close', () => undefined);
  const received: Buffer[] = [];
  raw.on('data', (d: Buffer) => received.push(d));
  const bytes = (): Buffer => Buffer.concat(received);
  /** Waits for `n` more bytes than were taken so far, and returns them. */
  let taken = 0;
  const next = async (n: number): Promise<Buffer> => {
    await until(() => bytes().length >= taken + n, 5_000, `${n} bytes from the session`);
    const out = bytes().subarray(taken, taken + n);
    taken += n;
    return out;
  };
  cleanups.push(() => {
    session.destroy();
    raw.destroy();
  });
  return { session, raw, next, bytes };
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function hexOf(name: string): string {
  return vector(name).hex;
}

describe('our Session writes the bytes Go writes', () => {
  for (const version of [1, 2] as const) {
    const cfg = { version, keepAliveDisabled: true };

    test(`v${version} client: open stream 3, write "ping", end (FIN)`, async () => {
      const { session, next } = await capture('client', cfg);
      const stream = await session.openStream();
      expect((await next(8)).toString('hex')).toBe(hexOf(`v${version}-client-syn-first`));
      stream.write('ping');
      expect((await next(12)).toString('hex')).toBe(hexOf(`v${version}-client-psh-ping`));
      stream.end();
      expect((await next(8)).toString('hex')).toBe(hexOf(`v${version}-client-fin`));
    });

    test(`v${version} keep-alive NOP`, async () => {
      const clock = new FakeClock();
      const { next } = await capture('client', { version, clock, keepAliveInterval: 20, keepAliveTimeout: 100_000 });
      clock.advance(20);
      expect((await next(8)).toString('hex')).toBe(hexOf(`v${version}-nop`));
    });
  }

  test('v1 client ids 3 then 5; server ids 2 then 4', async () => {
    const client = await capture('client', { keepAliveDisabled: true });
    await client.session.openStream();
    await client.session.openStream();
    expect((await client.next(16)).toString('hex')).toBe(hexOf('v1-client-syn-first') + hexOf('v1-client-syn-second'));
    const server = await capture('server', { keepAliveDisabled: true });
    await server.session.openStream();
    await server.session.openStream();
    expect((await server.next(16)).toString('hex')).toBe(hexOf('v1-server-syn-first') + hexOf('v1-server-syn-second'));
  });

  test('v1 transcript: open, write "ping", close — written in one batch, byte-identical', async () => {
    const { session, next } = await capture('client', { keepAliveDisabled: true });
    const stream = await session.openStream();
    stream.end('ping');
    expect((await next(28)).toString('hex')).toBe(hexOf('v1-client-open-write-close'));
  });

  test('v1 write of 40000 bytes splits at maxFrameSize 32768 into 32768 + 7232', async () => {
    const v = vector('v1-client-psh-split-40000');
    const { session, next } = await capture('client', { keepAliveDisabled: true });
    const stream = await session.openStream();
    await next(8); // SYN
    stream.write(Buffer.from(v.frames.map((f) => f.payloadHex).join(''), 'hex'));
    expect((await next(v.hex.length / 2)).toString('hex')).toBe(v.hex);
  });

  test('v1 server answers "pong" on the client\'s stream 3', async () => {
    const { session, raw, next } = await capture('server', { keepAliveDisabled: true, waitForOpenerData: true });
    session.on('stream', (stream) => stream.once('data', () => stream.write('pong')));
    raw.write(Buffer.concat([encodeFrame(1, Cmd.SYN, 3), encodeFrame(1, Cmd.PSH, 3, Buffer.from('ping'))]));
    expect((await next(12)).toString('hex')).toBe(hexOf('v1-server-psh-pong'));
  });

  test('v2 server: UPD after the first read, then after half the window (window 65536)', async () => {
    const v = vector('v2-server-upd-half-window');
    const { session, raw, next } = await capture('server', { version: 2, keepAliveDisabled: true });
    session.on('stream', (stream) => stream.on('data', () => undefined));
    raw.write(Buffer.concat([encodeFrame(2, Cmd.SYN, 3), encodeFrame(2, Cmd.PSH, 3, Buffer.from('ping'))]));
    expect((await next(16)).toString('hex')).toBe(hexOf('v2-server-upd-first-read'));
    // Go's 40000-byte write arrives as 32768 + 7232: the UPD follows the first 32768 consumed. (We write the UPD
    // with the consumed total at the moment it leaves, so the frames are fed one at a time here: fed together,
    // one UPD would carry 40004 — equally valid, and one frame fewer.)
    raw.write(encodeFrame(2, Cmd.PSH, 3, Buffer.alloc(32_768, 1)));
    expect((await next(16)).toString('hex')).toBe(v.hex.slice(32));
    raw.write(encodeFrame(2, Cmd.PSH, 3, Buffer.alloc(7_232, 2)));
  });

  test('v2 server with maxStreamBuffer 1 MiB advertises that window', async () => {
    const { session, raw, next } = await capture('server', { version: 2, keepAliveDisabled: true, maxStreamBuffer: 1_048_576 });
    session.on('stream', (stream) => stream.on('data', () => undefined));
    raw.write(Buffer.concat([encodeFrame(2, Cmd.SYN, 3), encodeFrame(2, Cmd.PSH, 3, Buffer.from('ping'))]));
    expect((await next(16)).toString('hex')).toBe(hexOf('v2-server-upd-window-1mib'));
  });
});
