import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { Cmd, isSmuxError, type Session, type SmuxError, type SmuxStream } from '../../lib/smux/index.js';
import { encodeFrame, encodeUpdPayload } from '../helpers/frames.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { until } from '../helpers/net.js';
import { cleanup, closeError, collect, echo, pair, pattern, quiet, type RawPeer, rawClientOf, watchUncaught } from '../helpers/sessions.js';

let guard: ReturnType<typeof watchUncaught>;
beforeEach(() => {
  guard = watchUncaught();
});
afterEach(async () => {
  await cleanup();
  guard.dispose();
  expect(guard.errors).toEqual([]);
});

/** The session's close error once it closed, and the raw socket closed by the session (EOF or ECONNRESET). */
async function deathOf(session: Session, raw: RawPeer): Promise<SmuxError> {
  const error = (await closeError(session)) as SmuxError;
  await until(() => raw.closed, 5_000, 'the raw socket to be closed by the session');
  expect(raw.ended || raw.error?.code === 'ECONNRESET').toBe(true);
  return error;
}

const keepAlive = { keepAliveInterval: 1_000, keepAliveTimeout: 3_000 };

describe('bad input from a raw TCP peer', () => {
  test.each([
    ['a wrong version byte', 1, encodeFrame(2, Cmd.NOP, 0)],
    ['an unknown command', 1, encodeFrame(1, 5, 3)],
    ['command 255', 2, encodeFrame(2, 255, 3)],
    ['SYN with a payload', 1, encodeFrame(1, Cmd.SYN, 5, Buffer.from('x'))],
    ['FIN with a payload', 1, encodeFrame(1, Cmd.FIN, 3, Buffer.from('x'))],
    ['NOP with a payload', 2, encodeFrame(2, Cmd.NOP, 0, Buffer.alloc(4))],
    ['UPD with 4 bytes', 2, encodeFrame(2, Cmd.UPD, 3, Buffer.alloc(4))],
    ['UPD with 12 bytes', 2, encodeFrame(2, Cmd.UPD, 3, Buffer.alloc(12))],
    ['UPD in a v1 session', 1, encodeFrame(1, Cmd.UPD, 3, encodeUpdPayload(0, 65_536))],
  ] as const)('%s → the session closes with ERR_SMUX_PROTOCOL and drops the connection', async (_name, version, bytes) => {
    const { raw, server } = await rawClientOf({ version });
    let stream: SmuxStream | null = null;
    server.on('stream', (s) => (stream = s));
    raw.send(Cmd.SYN, 3);
    raw.send(Cmd.PSH, 3, 'ok');
    await until(() => stream !== null, 5_000, 'a stream before the bad frame');
    const got = collect(stream!);
    await until(() => got.bytes === 2, 5_000, 'data before the bad frame');
    raw.sendRaw(bytes);
    const error = await deathOf(server, raw);
    expect(isSmuxError(error, 'ERR_SMUX_PROTOCOL')).toBe(true);
    expect(server.isClosed).toBe(true);
    await until(() => got.error !== null, 5_000, 'the stream to fail');
    expect(got.error).toBe(error);
  });

  test.each([
    ['half a header', Buffer.from([1, 2, 100])],
    [
      'a PSH header whose payload never comes whole',
      Buffer.concat([encodeFrame(1, Cmd.SYN, 3), encodeFrame(1, Cmd.PSH, 3, Buffer.alloc(100, 7)).subarray(0, 58)]),
    ],
    ['a UPD missing half its payload', encodeFrame(2, Cmd.UPD, 3, encodeUpdPayload(1, 2)).subarray(0, 12)],
  ] as const)('truncated input (%s): the session waits for the rest until keep-alive ends it', async (name, bytes) => {
    const clock = new FakeClock();
    const { raw, server } = await rawClientOf({ version: name.includes('UPD') ? 2 : 1, clock, ...keepAlive });
    raw.sendRaw(bytes);
    await until(() => server.stats.bytesIn === bytes.length, 5_000, 'bytes to arrive');
    clock.advance(2_000);
    expect(server.isClosed).toBe(false);
    clock.advance(1_000);
    const error = await deathOf(server, raw);
    expect(isSmuxError(error, 'ERR_SMUX_KEEPALIVE_TIMEOUT')).toBe(true);
  });

  test('random input (Go TestRandomFrame style): nothing thrown; each session ends with a SmuxError', async () => {
    const inputs: Array<[string, Buffer]> = [];
    for (let seed = 1; seed <= 10; seed++) inputs.push([`random bytes ${seed}`, pattern(1 + ((seed * 37) % 300), seed)]);
    for (let seed = 11; seed <= 15; seed++) {
      // Valid version, random command bytes and ids.
      const r = pattern(40, seed);
      inputs.push([
        `random commands ${seed}`,
        Buffer.concat(Array.from({ length: 8 }, (_, i) => encodeFrame(1, r[i], r.readUInt32LE(8 + i * 4)))),
      ]);
    }
    for (let seed = 16; seed <= 20; seed++) {
      // Valid commands with random ids, then random version bytes.
      const r = pattern(64, seed);
      const frames = Array.from({ length: 8 }, (_, i) => {
        const cmd = [Cmd.SYN, Cmd.FIN, Cmd.PSH, Cmd.NOP][r[i] % 4];
        return encodeFrame(
          1,
          cmd,
          cmd === Cmd.NOP ? 0 : r.readUInt32LE(16 + i * 4) % 64,
          cmd === Cmd.PSH ? r.subarray(0, 1 + (r[i + 8] % 16)) : undefined,
        );
      });
      const versions = encodeFrame(r[60] === 1 ? 0 : r[60], Cmd.NOP, 0);
      inputs.push([`valid then bad version ${seed}`, Buffer.concat([...frames, versions])]);
    }
    inputs.push([
      'only valid frames',
      Buffer.concat([encodeFrame(1, Cmd.SYN, 9), encodeFrame(1, Cmd.PSH, 9, Buffer.from('x')), encodeFrame(1, Cmd.NOP, 0)]),
    ]);

    const outcomes = new Set<string>();
    for (const [name, bytes] of inputs) {
      const clock = new FakeClock();
      const { raw, server } = await rawClientOf({ clock, ...keepAlive });
      server.on('stream', quiet);
      raw.sendRaw(bytes);
      await until(() => server.isClosed || server.stats.bytesIn === bytes.length, 5_000, `${name}: bytes to arrive`);
      if (!server.isClosed) clock.advance(keepAlive.keepAliveTimeout + keepAlive.keepAliveInterval); // waiting for a frame's rest
      const error = await deathOf(server, raw);
      expect([name, isSmuxError(error) && ['ERR_SMUX_PROTOCOL', 'ERR_SMUX_KEEPALIVE_TIMEOUT'].includes(error.code)]).toEqual([name, true]);
      outcomes.add(error.code);
      await cleanup();
    }
    expect([...outcomes].sort()).toEqual(['ERR_SMUX_KEEPALIVE_TIMEOUT', 'ERR_SMUX_PROTOCOL']);
    expect(guard.errors).toEqual([]);
  });

  test('a healthy session pair in the same process keeps working after a bad one died', async () => {
    const healthy = await pair();
    healthy.server.on('stream', echo);
    const before = quiet(await healthy.client.openStream());
    const beforeGot = collect(before);
    before.write('one;');
    await until(() => beforeGot.bytes === 4, 5_000, 'first echo');

    const { raw, server } = await rawClientOf();
    raw.sendRaw(pattern(500, 99));
    await deathOf(server, raw);

    before.end('two');
    await until(() => beforeGot.ended, 5_000, 'echo on the existing stream');
    expect(beforeGot.data().toString()).toBe('one;two');
    const after = quiet(await healthy.client.openStream());
    const afterGot = collect(after);
    after.end('new stream');
    await until(() => afterGot.ended, 5_000, 'echo on a new stream');
    expect(afterGot.data().toString()).toBe('new stream');
  });

  test('duplicate SYNs are ignored: 100 SYNs for one id make one stream', async () => {
    const { raw, server } = await rawClientOf();
    const streams: SmuxStream[] = [];
    server.on('stream', (s) => {
      streams.push(s);
      echo(s);
    });
    for (let i = 0; i < 100; i++) raw.send(Cmd.SYN, 1000);
    raw.send(Cmd.PSH, 1000, 'once');
    await until(() => raw.dataFor(1000).toString() === 'once', 5_000, 'echo');
    expect(streams.map((s) => s.id)).toEqual([1000]);
    expect(server.numStreams).toBe(1);
    expect(server.stats.streamsAccepted).toBe(1);
    expect(server.isClosed).toBe(false);
  });

  test('a peer opening ids of our parity (Go does not check) never loses its stream to one we open: ours skip them', async () => {
    // Found by a hostile-peer trial's note: an id in use was taken over, so our stream got the peer's frames.
    const { raw, server } = await rawClientOf();
    const streams: SmuxStream[] = [];
    server.on('stream', (s) => {
      streams.push(s);
      echo(s);
    });
    raw.send(Cmd.SYN, 2);
    raw.send(Cmd.SYN, 4);
    raw.send(Cmd.PSH, 2, 'theirs');
    await until(() => raw.dataFor(2).toString() === 'theirs', 5_000, 'the echo on their stream 2');
    const ours = await server.openStream();
    expect(ours.id).toBe(6); // 2 and 4 are the peer's
    ours.write('mine');
    await until(() => raw.dataFor(6).toString() === 'mine', 5_000, 'our data on 6');
    raw.send(Cmd.PSH, 4, 'still theirs');
    await until(() => raw.dataFor(4).toString() === 'still theirs', 5_000, 'the echo on their stream 4');
    expect(streams.map((s) => s.id)).toEqual([2, 4]);
    expect(server.numStreams).toBe(3);
  });

  test('data for unknown ids is dropped without tokens: a flood does not stop a known stream', async () => {
    const budget = 65_536;
    const { raw, server } = await rawClientOf({ maxReceiveBuffer: budget });
    server.on('stream', echo);
    raw.send(Cmd.SYN, 3);
    raw.send(Cmd.PSH, 3, 'first;');
    await until(() => raw.dataFor(3).length === 6, 5_000, 'first echo');
    const junk = pattern(32_768, 5);
    for (let i = 0; i < 64; i++) raw.send(Cmd.PSH, [99, 4, 1001, 0][i % 4], junk); // 2 MiB, 32× the budget
    raw.send(Cmd.PSH, 3, 'second');
    await until(() => raw.dataFor(3).toString() === 'first;second', 10_000, 'the known stream after the flood');
    expect(server.stats.receiveBudgetLeft).toBe(budget);
    expect(server.numStreams).toBe(1);
    expect(server.isClosed).toBe(false);
  });
});
