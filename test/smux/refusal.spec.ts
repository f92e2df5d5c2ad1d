/**
 * Streams the peer opens past `maxStreams` (issue 9, SYN floods): refused at a constant cost — no stream object,
 * a FIN for the id once the opener's first frame arrived — counted, and a peer that keeps opening streams past
 * the limit is cut off with ERR_SMUX_LIMIT after `maxRefusedStreams` refusals in a row. A raw TCP peer.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { Cmd, type SmuxChannel } from '../../lib/smux/index.js';
import { until } from '../helpers/net.js';
import { cleanup, closeError, type RawPeer, rawClientOf, settle } from '../helpers/sessions.js';

afterEach(cleanup);

const handler = { onData: () => undefined, onEnd: () => undefined, onClose: () => undefined };

/** Sends SYNs for `ids`. */
function syn(raw: RawPeer, ...ids: number[]): void {
  for (const id of ids) raw.send(Cmd.SYN, id);
}

/** Odd stream ids from `first`, `count` of them. */
const ids = (first: number, count: number) => Array.from({ length: count }, (_, i) => first + 2 * i);

describe('refusing streams past maxStreams', () => {
  test('a refused stream gets no stream object: it is counted, and its FIN goes once the opener’s first frame arrived', async () => {
    const { raw, server } = await rawClientOf({ maxStreams: 2 });
    const accepted: SmuxChannel[] = [];
    server.on('channel', (ch) => (ch.setHandler(handler), accepted.push(ch)));
    syn(raw, 3, 5, 7);
    raw.send(Cmd.PSH, 3, 'marker');
    await until(() => server.stats.framesIn === 4, 5_000, 'the frames');
    expect([accepted.length, server.numStreams, server.numPeerStreams, server.stats.streamsRefused]).toEqual([2, 2, 2, 1]);
    await settle();
    expect(raw.framesFor(7)).toEqual([]); // a Go opener may not have registered stream 7 yet
    raw.send(Cmd.PSH, 7, 'request');
    await until(() => raw.finFor(7), 5_000, 'the FIN of the refused stream');
    expect(raw.framesFor(7).map((f) => f.cmd)).toEqual([Cmd.FIN]);
    expect(server.numStreams).toBe(2);
    raw.send(Cmd.PSH, 7, 'more'); // later frames for it are dropped, like any unknown stream's
    raw.send(Cmd.FIN, 7);
    await settle();
    expect(raw.framesFor(7)).toHaveLength(1);
    expect(server.isClosed).toBe(false);
  });

  test('with waitForOpenerData off the refused stream’s FIN goes at once', async () => {
    const { raw, server } = await rawClientOf({ maxStreams: 1, waitForOpenerData: false });
    server.on('channel', (ch) => ch.setHandler(handler));
    syn(raw, 3, 5);
    await until(() => raw.finFor(5), 5_000, 'the FIN');
    expect(raw.framesFor(3)).toEqual([]);
    expect(server.stats.streamsRefused).toBe(1);
  });

  test('a peer that keeps opening streams past the limit is cut off with ERR_SMUX_LIMIT after maxRefusedStreams in a row', async () => {
    const { raw, server } = await rawClientOf({ maxStreams: 2, maxRefusedStreams: 3 });
    server.on('channel', (ch) => ch.setHandler(handler));
    syn(raw, 3, 5, 7, 9, 11);
    await until(() => server.stats.framesIn === 5, 5_000, 'the SYNs');
    expect([server.isClosed, server.stats.streamsRefused]).toEqual([false, 3]);
    syn(raw, 13);
    const error = await closeError(server);
    expect(error).toMatchObject({ code: 'ERR_SMUX_LIMIT' });
    expect(error!.message).toContain('maxRefusedStreams 3');
    await until(() => raw.closed, 5_000, 'the connection to close');
  });

  test('the count restarts whenever a stream is accepted', async () => {
    const { raw, server } = await rawClientOf({ maxStreams: 1, maxRefusedStreams: 2 });
    server.on('channel', (ch) => ch.setHandler({ ...handler, onEnd: () => ch.end() }));
    syn(raw, 3, 5, 7); // 3 accepted, two refused
    raw.send(Cmd.FIN, 3); // the peer ends 3, the server ends it too: both FINs through, it is gone
    await until(() => server.numStreams === 0 && raw.finFor(3), 5_000, 'stream 3 to finish');
    syn(raw, 9, 11, 13); // 9 accepted: two more refusals are allowed again
    await until(() => server.stats.framesIn === 7, 5_000, 'the SYNs');
    expect([server.isClosed, server.stats.streamsAccepted, server.stats.streamsRefused]).toEqual([false, 2, 4]);
    syn(raw, 15);
    expect(await closeError(server)).toMatchObject({ code: 'ERR_SMUX_LIMIT' });
  });

  test('streams refused while the session closes gracefully do not count against maxRefusedStreams', async () => {
    const { raw, server } = await rawClientOf({ maxStreams: 1, maxRefusedStreams: 2 });
    server.on('channel', (ch) => ch.setHandler(handler));
    syn(raw, 3);
    await until(() => server.numStreams === 1, 5_000, 'accept');
    void server.close();
    syn(raw, ...ids(5, 50));
    await until(() => server.stats.streamsRefused === 50, 5_000, 'the refusals');
    expect(server.error).toBeNull();
  });

  test('maxStreams bounds the streams the peer opened: this side still opens its own', async () => {
    const { raw, server } = await rawClientOf({ maxStreams: 2 });
    server.on('channel', (ch) => ch.setHandler(handler));
    syn(raw, 3, 5);
    await until(() => server.numPeerStreams === 2, 5_000, 'accept');
    const own = [server.openChannel(handler), server.openChannel(handler)];
    expect(own.map((ch) => ch.id)).toEqual([2, 4]);
    expect(() => server.openChannel(handler)).toThrow(expect.objectContaining({ code: 'ERR_SMUX_LIMIT' }));
    syn(raw, 7); // still refused: the peer's own count is at the limit
    await until(() => server.stats.streamsRefused === 1, 5_000, 'the refusal');
    expect([server.numStreams, server.numPeerStreams]).toEqual([4, 2]);
  });

  test('refused ids waiting for their first frame are bounded (1024): past that the oldest gets its FIN at once', async () => {
    const { raw, server } = await rawClientOf({ maxStreams: 1, maxRefusedStreams: 100_000 });
    server.on('channel', (ch) => ch.setHandler(handler));
    const refused = ids(5, 1100);
    syn(raw, 3, ...refused);
    await until(() => raw.frames.filter((f) => f.cmd === Cmd.FIN).length === 1100 - 1024, 5_000, 'FINs for the oldest');
    expect(raw.frames.filter((f) => f.cmd === Cmd.FIN).map((f) => f.streamId)).toEqual(refused.slice(0, 1100 - 1024));
    raw.send(Cmd.PSH, refused.at(-1)!, 'x'); // the newest still waits: its first frame brings its FIN
    await until(() => raw.finFor(refused.at(-1)!), 5_000, 'the FIN of the newest');
    expect(server.numStreams).toBe(1);
  });
});
