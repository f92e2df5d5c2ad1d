import { afterEach, describe, expect, test } from '@jest/globals';
import { Cmd, type SmuxStream } from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { until } from '../helpers/net.js';
import { cleanup, collect, type Collected, echo, pair, pattern, quiesced, quiet, rawClientOf, rawServerOf } from '../helpers/sessions.js';

afterEach(cleanup);

/** The next stream the session's peer opens, via the 'stream' event. */
function nextPeerStream(session: { once(event: 'stream', fn: (s: SmuxStream) => void): unknown }): Promise<SmuxStream> {
  return new Promise((resolve) => session.once('stream', (s) => resolve(quiet(s))));
}

describe('SmuxStream over TCP', () => {
  test.each([1, 2] as const)('v%i: end() sends FIN after all queued data; the peer reads everything, then EOF', async (version) => {
    const { client, server } = await pair({ version });
    const peer = nextPeerStream(server);
    const s = quiet(await client.openStream());
    const data = pattern(1 << 20, version);
    s.write(data.subarray(0, 1000));
    s.end(data.subarray(1000));
    const p = await peer;
    await quiesced(client, server); // v2: the writer is window-blocked with data left; the FIN must stay behind it
    const got = collect(p);
    await until(() => got.ended, 10_000, 'EOF');
    expect(got.data().equals(data)).toBe(true);
    expect(got.error).toBeNull();
    expect(s.channel.finSent).toBe(true);
  });

  test('half-close: the side that got FIN still writes back and the other side reads it', async () => {
    const { client, server } = await pair();
    const peer = nextPeerStream(server);
    const s = quiet(await client.openStream());
    s.end('request');
    const p = await peer;
    const atServer = collect(p);
    await until(() => atServer.ended, 5_000, 'request + EOF');
    expect(atServer.data().toString()).toBe('request');
    const atClient = collect(s);
    p.write('response, ');
    p.end('done');
    await until(() => atClient.ended, 5_000, 'response + EOF');
    expect(atClient.data().toString()).toBe('response, done');
    await until(() => atClient.closed && atServer.closed, 5_000, 'both ends to close cleanly');
    expect([atClient.error, atServer.error]).toEqual([null, null]);
    await until(() => client.numStreams === 0 && server.numStreams === 0, 5_000, 'both unregistered');
  });

  test.each([1, 2] as const)('v%i: no unread data is lost when FIN has gone both ways before the reader reads', async (version) => {
    // A small readable buffer, so most of the reply waits in the channel (not in the Duplex) when the FIN lands.
    const { client, server } = await pair({ version, streamHighWaterMark: 16_384 });
    const peer = nextPeerStream(server);
    const a = quiet(await client.openStream());
    a.end('question');
    const b = await peer;
    const atB = collect(b);
    await until(() => atB.ended, 5_000, 'request at B');
    // Under v2 the reply stays within one window so B's FIN can arrive while A reads nothing.
    const response = pattern(version === 1 ? 300_000 : 60_000, 11);
    b.end(response);
    await until(() => a.channel.peerEnded && a.channel.finSent, 5_000, "B's FIN at A while A has read nothing");
    expect(a.channel.readableLength).toBeGreaterThan(0);
    const atA = collect(a); // A reads only now
    await until(() => atA.ended, 5_000, 'A to read the response and EOF');
    expect(atA.data().equals(response)).toBe(true);
    expect(atA.error).toBeNull();
  });

  test('the session dying after the peer’s FIN keeps the received data readable (no error)', async () => {
    const { client, server } = await pair({ streamHighWaterMark: 16_384 });
    const peer = nextPeerStream(server);
    const a = quiet(await client.openStream());
    a.write('go');
    const reply = pattern(100_000, 12);
    (await peer).end(reply);
    await until(() => a.channel.peerEnded, 5_000, "the peer's FIN");
    expect(a.channel.readableLength).toBeGreaterThan(0); // most of it still held in the channel
    client.destroy();
    const got = collect(a);
    await until(() => got.ended, 5_000, 'EOF');
    expect(got.data().equals(reply)).toBe(true);
    expect(got.error).toBeNull();
  });

  test('destroy(): Go Close — queued data dropped, FIN sent, unregistered at once; later frames dropped without tokens', async () => {
    const { client, server } = await pair({ maxReceiveBuffer: 65_536 });
    const peer = nextPeerStream(server);
    const s = await client.openStream();
    const mine = collect(s);
    s.write(pattern(1 << 20, 3));
    expect(client.numStreams).toBe(1);
    s.destroy();
    expect(client.numStreams).toBe(0); // at once, not after the FIN left
    s.destroy(); // idempotent
    const p = await peer;
    const atServer = collect(p);
    await until(() => atServer.ended, 5_000, 'EOF at the peer');
    expect(atServer.bytes).toBeLessThan(1 << 20); // queued data was dropped
    expect(atServer.error).toBeNull();
    await until(() => mine.closed, 5_000, 'local close');
    expect(mine.error).toBeNull();

    // The peer keeps writing on its (half-open) side: we drop it uncharged, and another stream still flows.
    const flood = pattern(1 << 20, 4);
    const before = client.stats.bytesIn;
    p.write(flood);
    await until(() => client.stats.bytesIn - before > flood.length, 10_000, 'the flood to arrive');
    expect(client.stats.receiveBudgetLeft).toBe(65_536);
    server.on('stream', echo);
    const live = quiet(await client.openStream());
    const echoed = collect(live);
    live.end('alive');
    await until(() => echoed.ended, 5_000, 'echo on another stream');
    expect(echoed.data().toString()).toBe('alive');
  });

  /** Writes that cannot all go out (a v2 window the peer never reopens), each recording how its callback settled. */
  async function stuckWrites(ending: boolean) {
    const { client, server } = await pair({ version: 2 });
    const peer = nextPeerStream(server);
    const s = await client.openStream();
    const mine = collect(s);
    const settled: Array<string | null> = [];
    const record = (error?: Error | null): void => void settled.push(error ? ((error as { code?: string }).code ?? error.message) : null);
    s.write(pattern(1 << 20, 6), record); // beyond the peer's 256 KiB window: pending in the engine
    s.write(pattern(1_000, 7), record); // queued by Node behind it
    if (ending) s.end(record);
    await peer; // never read
    await quiesced(client, server);
    expect(settled).toEqual([]);
    return { client, s, mine, settled };
  }

  test('a write pending when the stream is destroyed fails its callback, and Node fails those queued behind it (both hung before)', async () => {
    const { s, mine, settled } = await stuckWrites(false);
    s.destroy();
    await until(() => settled.length === 2, 2_000, 'both write callbacks');
    expect(settled).toEqual(['ERR_SMUX_STREAM_CLOSED', 'ERR_SMUX_STREAM_CLOSED']); // Node fails the queued one with the first error
    await until(() => mine.closed, 2_000, 'close');
    expect(mine.error).toBeNull(); // destroy() without an error stays quiet: no 'error' event
  });

  test('a write pending when the session is destroyed fails too; end()’s callback as well', async () => {
    const { client, settled } = await stuckWrites(true);
    client.destroy();
    await until(() => settled.length === 3, 2_000, 'the write and end() callbacks');
    expect(settled[0]).toBe('ERR_SMUX_STREAM_CLOSED');
    expect(settled.slice(1).every((code) => code !== null)).toBe(true); // failed, never reported as written
  });

  test('a write pending when the stream is destroyed with an error fails with that error', async () => {
    const { s, settled } = await stuckWrites(false);
    s.on('error', () => {});
    s.destroy(new Error('given up'));
    await until(() => settled.length === 2, 2_000, 'both write callbacks');
    expect(settled[0]).toBe('given up');
  });

  test('end twice, destroy twice: one FIN on the wire, no error', async () => {
    const { raw, client } = await rawServerOf();
    const s = await client.openStream();
    const mine = collect(s);
    s.write('x');
    s.end();
    s.end();
    await until(() => raw.finFor(3), 5_000, 'FIN');
    s.destroy();
    s.destroy();
    const t = await client.openStream();
    const other = collect(t);
    t.end();
    await until(() => raw.finFor(5), 5_000, 'FIN of a second stream');
    expect(raw.framesFor(3).map((f) => f.cmd)).toEqual([Cmd.SYN, Cmd.PSH, Cmd.FIN]);
    expect(raw.dataFor(3).toString()).toBe('x');
    await until(() => mine.closed, 5_000, 'closed');
    expect([mine.error, other.error]).toEqual([null, null]);
  });

  test('data arriving after a FIN is dropped: never a push after EOF, the session carries on', async () => {
    const { raw, server } = await rawClientOf();
    const got: Collected[] = [];
    server.on('stream', (s) => got.push(collect(s)));
    raw.send(Cmd.SYN, 3);
    raw.send(Cmd.PSH, 3, 'abc');
    raw.send(Cmd.FIN, 3);
    raw.send(Cmd.PSH, 3, 'late');
    raw.send(Cmd.FIN, 3);
    raw.send(Cmd.PSH, 3, 'later');
    raw.send(Cmd.SYN, 5);
    raw.send(Cmd.PSH, 5, 'ok');
    raw.send(Cmd.FIN, 5);
    await until(() => got.length === 2 && got[1].ended, 5_000, 'second stream');
    await until(() => got[0].ended, 5_000, 'first stream EOF');
    expect(got[0].data().toString()).toBe('abc');
    expect(got[1].data().toString()).toBe('ok');
    expect([got[0].error, got[1].error]).toEqual([null, null]);
    expect(server.stats.receiveBudgetLeft).toBe(server.config.maxReceiveBuffer);
    expect(server.isClosed).toBe(false);
  });

  test.each([
    ['PSH', Cmd.PSH],
    ['FIN', Cmd.FIN],
  ])('OpenStream race hold: nothing goes out on a peer-opened stream before the opener’s first frame (%s)', async (_name, first) => {
    const { raw, server } = await rawClientOf();
    server.on('stream', (s) => {
      quiet(s);
      if (s.id === 3) s.end('early reply');
      else s.on('data', (d: Buffer) => s.write(d));
    });
    raw.send(Cmd.SYN, 3);
    await until(() => server.numStreams === 1, 5_000, 'accept');
    // A later stream's reply proves the writer ran: anything queued for stream 3 would have gone first.
    raw.send(Cmd.SYN, 5);
    raw.send(Cmd.PSH, 5, 'marker');
    await until(() => raw.dataFor(5).toString() === 'marker', 5_000, 'marker echo');
    expect(raw.framesFor(3)).toEqual([]);
    raw.send(first, 3, first === Cmd.PSH ? 'go' : '');
    await until(() => raw.finFor(3), 5_000, 'reply and FIN after the first frame');
    expect(raw.framesFor(3).map((f) => f.cmd)).toEqual([Cmd.PSH, Cmd.FIN]);
    expect(raw.dataFor(3).toString()).toBe('early reply');
  });

  test('OpenStream race hold: the FIN of a destroyed or refused peer stream waits for the opener’s first frame', async () => {
    const { raw, server } = await rawClientOf({ maxStreams: 2 });
    server.on('stream', (s) => {
      quiet(s);
      if (s.id === 3) s.destroy();
      else s.on('data', (d: Buffer) => s.write(d));
    });
    raw.send(Cmd.SYN, 3); // accepted, destroyed at once: FIN held
    raw.send(Cmd.SYN, 5); // accepted
    raw.send(Cmd.SYN, 7); // refused: 3 is still registered until its FIN may go
    raw.send(Cmd.PSH, 5, 'marker');
    await until(() => raw.dataFor(5).toString() === 'marker', 5_000, 'marker echo');
    expect(raw.framesFor(3)).toEqual([]);
    expect(raw.framesFor(7)).toEqual([]);
    expect(server.stats.streamsRefused).toBe(1);
    raw.send(Cmd.PSH, 3, 'x');
    raw.send(Cmd.PSH, 7, 'y');
    await until(() => raw.finFor(3) && raw.finFor(7), 5_000, 'both FINs');
    expect(raw.framesFor(3).map((f) => f.cmd)).toEqual([Cmd.FIN]);
    expect(raw.framesFor(7).map((f) => f.cmd)).toEqual([Cmd.FIN]);
    expect(server.numStreams).toBe(1);
  });
});

describe('stream idle timeouts (FakeClock, real sockets)', () => {
  test('read timeout: a stream that receives nothing is destroyed with ERR_SMUX_TIMEOUT, not while data keeps arriving', async () => {
    const clock = new FakeClock();
    const { client, server } = await pair({ clock, keepAliveDisabled: true });
    const peer = nextPeerStream(server);
    const s = await client.openStream();
    s.write('open');
    const p = await peer;
    const atServer = collect(p);
    const mine = collect(s);
    s.setTimeouts({ read: 1_000 });
    for (let i = 1; i <= 5; i++) {
      clock.advance(600);
      p.write('.');
      await until(() => mine.bytes === i, 5_000, `data ${i}`);
    }
    expect(s.destroyed).toBe(false); // 3 s passed, never 1 s without data
    clock.advance(999);
    expect(s.destroyed).toBe(false);
    clock.advance(1);
    await until(() => mine.error !== null, 5_000, 'timeout error');
    expect(mine.error!.code).toBe('ERR_SMUX_TIMEOUT');
    await until(() => atServer.ended, 5_000, 'the peer to see FIN');
    expect(client.numStreams).toBe(0);
  });

  test('write timeout: a writer blocked by a closed v2 window is destroyed with ERR_SMUX_TIMEOUT, not while it progresses', async () => {
    const clock = new FakeClock();
    const { client, server } = await pair({ version: 2, clock, keepAliveDisabled: true });
    const peer = nextPeerStream(server);
    const s = await client.openStream();
    const mine = collect(s);
    s.setTimeouts({ write: 1_000 });
    s.write(pattern(1 << 20, 5));
    const p = await peer; // never read until we say so
    await quiesced(client, server);
    const stalled = s.channel.writableLength; // bytes still queued in the engine (s.writableLength holds the whole chunk)
    expect(stalled).toBeGreaterThan(0);
    clock.advance(600);
    // The reader consumes: UPDs open the window and the writer makes progress.
    while (p.read() !== null);
    await until(() => s.channel.writableLength < stalled, 5_000, 'write progress');
    await quiesced(client, server);
    clock.advance(600);
    expect(s.destroyed).toBe(false);
    clock.advance(400);
    await until(() => mine.error !== null, 5_000, 'timeout error');
    expect(mine.error!.code).toBe('ERR_SMUX_TIMEOUT');
    expect(client.numStreams).toBe(0);
  });
});
