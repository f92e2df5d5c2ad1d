/*
 * A SmuxStream left half-open when its session ends: the peer's FIN arrived, our side was not ended, then the
 * session went (destroyed here, the peer's hang-up, a socket error, or a graceful close). It used to stay open for
 * ever — no 'close', `finished()` never settling — until the application wrote. Now it closes once its readable side
 * has ended (the application read everything the peer sent), quietly unless something of ours was still in flight.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import type net from 'node:net';
import { finished } from 'node:stream/promises';
import { type Session, SmuxError, type SmuxStream } from '../../lib/smux/index.js';
import { until } from '../helpers/net.js';
import { cleanup, collect, pair, pattern, quiet } from '../helpers/sessions.js';

afterEach(cleanup);

type Ending = 'destroyed locally' | 'destroyed locally with an error' | 'the peer hangs up' | 'a socket error';

interface HalfOpen {
  client: Session;
  clientSocket: net.Socket;
  serverSocket: net.Socket;
  /** Our stream (the client's). */
  mine: SmuxStream;
  /** The peer's end of it, which has sent `reply` and FIN. */
  peer: SmuxStream;
}

/** A client stream whose peer sent `reply` and FIN; ours stays open for writing. */
async function halfOpen(reply: Buffer | string, streamHighWaterMark?: number): Promise<HalfOpen> {
  const { client, server, clientSocket, serverSocket } = await pair(streamHighWaterMark === undefined ? {} : { streamHighWaterMark });
  const accepted = new Promise<SmuxStream>((resolve) => server.once('stream', (s) => resolve(quiet(s))));
  const mine = await client.openStream();
  mine.write('go'); // the acceptor's reply waits for the opener's first data (waitForOpenerData)
  const peer = await accepted;
  peer.end(reply);
  return { client, clientSocket, serverSocket, mine, peer };
}

/** Ends the client's session the given way. */
function endSession(h: HalfOpen, how: Ending): void {
  if (how === 'destroyed locally') h.client.destroy();
  else if (how === 'destroyed locally with an error') h.client.destroy(new SmuxError('ERR_SMUX_LIMIT', 'test reason'));
  else if (how === 'the peer hangs up') h.serverSocket.destroy();
  else h.clientSocket.destroy(new Error('test socket error'));
}

const endings: Ending[] = ['destroyed locally', 'destroyed locally with an error', 'the peer hangs up', 'a socket error'];

describe('a half-open SmuxStream when its session ends', () => {
  test.each(endings)('read to the end, then the session ends (%s): the stream emits close without an error', async (how) => {
    const h = await halfOpen('reply');
    const got = collect(h.mine);
    await until(() => got.ended, 5_000, "the peer's reply and EOF");
    expect(got.closed).toBe(false); // our direction is still open
    const settled = finished(h.mine).catch((error: Error & { code?: string }) => error.code);
    endSession(h, how);
    await until(() => h.client.isClosed, 5_000, 'the session to close');
    expect(h.client.error === null).toBe(how === 'destroyed locally');
    await until(() => got.closed, 5_000, "the stream's close");
    expect({ data: got.data().toString(), error: got.error }).toEqual({ data: 'reply', error: null });
    expect(await settled).toBe('ERR_STREAM_PREMATURE_CLOSE'); // finished() settles, as for a destroyed half-open net.Socket
  });

  test.each(['destroyed locally', 'the peer hangs up'] as const)(
    'data still buffered when the session ends (%s) stays readable to the end, then the stream closes',
    async (how) => {
      const reply = pattern(100_000, 21);
      const h = await halfOpen(reply, 16_384); // a small buffer: most of the reply waits unread
      await until(() => h.mine.channel.peerEnded, 5_000, "the peer's FIN");
      expect(h.mine.readableLength + h.mine.channel.readableLength).toBeGreaterThan(0);
      endSession(h, how);
      await until(() => h.client.isClosed, 5_000, 'the session to close');
      expect(h.mine.destroyed).toBe(false); // unread data is not dropped
      const got = collect(h.mine); // the application reads only now
      await until(() => got.closed, 5_000, 'the reply, EOF and close');
      expect(got.ended).toBe(true);
      expect(got.data().equals(reply)).toBe(true);
      expect(got.error).toBeNull();
    },
  );

  test('a graceful close() ends our side for us: once the application read to the end, the stream closes', async () => {
    const h = await halfOpen('reply');
    const got = collect(h.mine);
    await until(() => got.ended, 5_000, "the peer's reply and EOF");
    await h.client.close();
    await until(() => got.closed, 5_000, "the stream's close");
    expect({ data: got.data().toString(), error: got.error }).toEqual({ data: 'reply', error: null });
  });

  test.each([
    ['a write waiting for the socket', false],
    ['corked data', true],
  ])('with %s when the session fails, the stream errors with the session’s error', async (_name, corked) => {
    const h = await halfOpen('reply');
    const got = collect(h.mine);
    await until(() => got.ended, 5_000, "the peer's reply and EOF");
    if (corked) h.mine.cork();
    h.mine.write(pattern(1 << 20, 22)); // queued in the engine (or corked): not yet handed to the socket
    const reason = new SmuxError('ERR_SMUX_LIMIT', 'test reason');
    h.client.destroy(reason);
    await until(() => got.closed, 5_000, "the stream's close");
    expect(got.error).toBe(reason);
  });
});

describe('a SmuxStream whose readable side has not ended when its session ends (unchanged)', () => {
  test.each([
    ['destroyed locally', null],
    ['the peer hangs up', 'ERR_SMUX_SESSION_CLOSED'],
  ] as const)('the session ends (%s): close at once, without end; an error only when the session failed', async (how, code) => {
    const { client, server, serverSocket } = await pair();
    const accepted = new Promise<SmuxStream>((resolve) => server.once('stream', (s) => resolve(quiet(s))));
    const mine = await client.openStream();
    const got = collect(mine);
    mine.write('go');
    (await accepted).write('partial'); // no FIN
    await until(() => got.bytes === 7, 5_000, 'the partial reply');
    if (how === 'destroyed locally') client.destroy();
    else serverSocket.destroy();
    await until(() => got.closed, 5_000, "the stream's close");
    expect({ ended: got.ended, code: got.error?.code ?? null }).toEqual({ ended: false, code });
  });
});
