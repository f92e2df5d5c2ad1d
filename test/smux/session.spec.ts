import { afterEach, describe, expect, test } from '@jest/globals';
import { SmuxChannel, SmuxError, SmuxStream } from '../../lib/smux/index.js';
import { Cmd } from '../../lib/smux/constants.js';
import { observeSession } from '../../lib/smux/session-layer.js';
import { encodeFrame } from '../helpers/frames.js';
import { closed, until } from '../helpers/net.js';
import {
  cleanup,
  closeError,
  collect,
  type Collected,
  echo,
  errorOf,
  pair,
  pattern,
  quiet,
  rawServerOf,
  settle,
  watchUncaught,
} from '../helpers/sessions.js';

afterEach(cleanup);

describe('Session lifecycle over TCP', () => {
  test('client ids are 3, 5, 7 and server ids 2, 4, 6; each side accepts the other’s streams', async () => {
    const { client, server } = await pair();
    const clientOpened = [await client.openStream(), await client.openStream(), await client.openStream()].map(quiet);
    expect(clientOpened.map((s) => s.id)).toEqual([3, 5, 7]);
    const serverAccepted = [await server.acceptStream(), await server.acceptStream(), await server.acceptStream()].map(quiet);
    expect(serverAccepted.map((s) => s.id)).toEqual([3, 5, 7]);

    const serverOpened = [await server.openStream(), await server.openStream(), await server.openStream()].map(quiet);
    expect(serverOpened.map((s) => s.id)).toEqual([2, 4, 6]);
    const clientAccepted = [await client.acceptStream(), await client.acceptStream(), await client.acceptStream()].map(quiet);
    expect(clientAccepted.map((s) => s.id)).toEqual([2, 4, 6]);

    // Data both ways on a server-opened stream.
    const atClient = collect(clientAccepted[1]);
    serverOpened[1].write('ping');
    await until(() => atClient.bytes === 4, 5_000, 'ping');
    const atServer = collect(serverOpened[1]);
    clientAccepted[1].end('pong');
    await until(() => atServer.ended, 5_000, 'pong + EOF');
    expect(atClient.data().toString()).toBe('ping');
    expect(atServer.data().toString()).toBe('pong');
    expect([client.numStreams, server.numStreams]).toEqual([6, 6]);
  });

  test('a stream is registered before its SYN: an acceptor that replies at once is never lost (waitForOpenerData off)', async () => {
    const { client, server } = await pair({}, { waitForOpenerData: false });
    server.on('stream', (s) => {
      errorOf(s);
      s.end(`hello ${s.id}`);
    });
    const streams = await Promise.all(Array.from({ length: 50 }, () => client.openStream()));
    const got = streams.map((s) => collect(s));
    await until(() => got.every((c) => c.ended), 5_000, 'every reply and EOF');
    got.forEach((c, i) => expect(c.data().toString()).toBe(`hello ${streams[i].id}`));
  });

  test('with waitForOpenerData (default) the acceptor’s immediate reply waits for the opener’s first data', async () => {
    const { client, server } = await pair();
    let accepted: SmuxStream | null = null;
    server.on('stream', (s) => {
      accepted = s;
      errorOf(s);
      s.end('reply');
    });
    const s = await client.openStream();
    const got = collect(s);
    await until(() => accepted !== null, 5_000, 'accept');
    await settle();
    expect(got.bytes).toBe(0);
    expect(client.stats.framesIn).toBe(0); // nothing at all came back for the stream
    s.write('first');
    await until(() => got.ended, 5_000, 'reply after first data');
    expect(got.data().toString()).toBe('reply');
  });

  test("acceptStream() waiting before the SYN, the 'stream' event, and the 'channel' event (which wins)", async () => {
    const { client, server } = await pair();
    const waiting = server.acceptStream();
    const a = quiet(await client.openStream());
    a.write('a');
    expect(quiet(await waiting).id).toBe(a.id);

    const viaEvent: SmuxStream[] = [];
    server.on('stream', (s) => viaEvent.push(quiet(s)));
    const b = quiet(await client.openStream());
    b.write('b');
    await until(() => viaEvent.length === 1, 5_000, "'stream' event");
    expect(viaEvent[0]).toBeInstanceOf(SmuxStream);
    expect(viaEvent[0].id).toBe(b.id);

    const viaChannel: unknown[] = [];
    server.on('channel', (c) => viaChannel.push(c));
    const c = quiet(await client.openStream());
    c.write('c');
    await until(() => viaChannel.length === 1, 5_000, "'channel' event");
    expect(viaChannel[0]).toBeInstanceOf(SmuxChannel);
    expect(viaChannel[0]).not.toBeInstanceOf(SmuxStream);
    expect((viaChannel[0] as SmuxChannel).id).toBe(c.id);
    expect(viaEvent).toHaveLength(1); // 'stream' not emitted while a 'channel' listener exists
    expect(server.stats.streamsAccepted).toBe(3);
  });

  test("an observer (the Nest layer's path) hears channels and the close; the public events cannot reach or remove it", async () => {
    const { client, server } = await pair();
    const heard: string[] = [];
    const remove = observeSession(server, {
      channel: (channel) => void heard.push(`channel ${channel.id}`),
      close: (error) => void heard.push(`close ${error?.code ?? 'clean'}`),
    });
    const viaEvent: SmuxChannel[] = [];
    server.on('channel', (channel) => viaEvent.push(channel));
    const a = quiet(await client.openStream());
    a.write('a');
    await until(() => heard.length === 1 && viaEvent.length === 1, 5_000, 'the channel');
    expect(heard).toEqual([`channel ${a.id}`]);
    expect(viaEvent[0].id).toBe(a.id); // the same stream, as one channel for both
    // What anyone holding the session can do to its public events does not reach the observer.
    server.emit('close', undefined);
    server.removeAllListeners();
    expect(heard).toEqual([`channel ${a.id}`]);
    const b = quiet(await client.openStream());
    b.write('b');
    await until(() => heard.length === 2, 5_000, 'the second channel');
    expect(server.stats.streamsAccepted).toBe(2); // taken by the observer: not left in the accept backlog
    const gone = observeSession(server, { close: () => void heard.push('removed observer') });
    gone();
    client.destroy();
    await until(() => heard.length === 3, 5_000, 'the close');
    expect(heard.at(-1)).toMatch(/^close /);
    expect(heard).not.toContain('removed observer');
    remove();
  });

  test('a full accept backlog stops the session reading until acceptStream() takes one; memory stays bounded', async () => {
    const { client, server, serverSocket } = await pair({}, { acceptBacklog: 4 });
    const opened: SmuxStream[] = [];
    for (let i = 0; i < 6; i++) {
      const s = quiet(await client.openStream());
      s.write(`m${i}`);
      opened.push(s);
    }
    await until(() => server.numStreams === 4, 5_000, 'four streams in the backlog');
    await settle();
    expect(server.numStreams).toBe(4);
    expect(server.stats.framesIn).toBe(4); // the 5th SYN and all PSH frames wait unprocessed
    expect(serverSocket.isPaused()).toBe(true);

    // The peer keeps sending: nothing of it is taken in by the paused session.
    const big = pattern(8 << 20);
    opened[0].write(big);
    await until(() => client.stats.writeBlocked, 10_000, 'TCP backpressure at the sender');
    expect(server.stats.bytesIn).toBeLessThan(512 * 1024);

    const first = await server.acceptStream();
    expect(first.id).toBe(3);
    await until(() => server.numStreams === 5, 5_000, 'one more SYN processed'); // backlog full again at once
    const rest = [
      await server.acceptStream(),
      await server.acceptStream(),
      await server.acceptStream(),
      await server.acceptStream(),
      await server.acceptStream(),
    ];
    expect(rest.map((s) => s.id)).toEqual([5, 7, 9, 11, 13]);
    const got = [first, ...rest].map((s) => collect(s));
    await until(() => got[0].bytes === 2 + big.length && got.slice(1).every((c) => c.bytes === 2), 20_000, 'all data');
    expect(got[0].data().equals(Buffer.concat([Buffer.from('m0'), big]))).toBe(true);
    got.slice(1).forEach((c, i) => expect(c.data().toString()).toBe(`m${i + 1}`));
  });

  test('close(): every stream gets FIN after its queued data, the peer reads it all, then the session closes', async () => {
    const { client, server } = await pair();
    const got: Collected[] = [];
    server.on('stream', (s) => got.push(collect(s)));
    const a = quiet(await client.openStream());
    const b = quiet(await client.openStream());
    const big = pattern(1 << 20, 7);
    a.write(big);
    b.write('tail');
    const clientClosed = closed(client);
    const serverClosed = closed(server);
    const done = client.close();
    expect(client.isClosed).toBe(true);
    await done;
    expect(await clientClosed).toBeUndefined();
    await until(() => got.length === 2 && got.every((c) => c.ended), 10_000, 'both streams to EOF');
    expect(got[0].data().equals(big)).toBe(true);
    expect(got[1].data().toString()).toBe('tail');
    expect(((await serverClosed) as SmuxError).code).toBe('ERR_SMUX_SESSION_CLOSED');
    expect(client.numStreams).toBe(0);
    expect(client.close()).toBe(done); // idempotent
  });

  test('close() while the peer is still sending: the peer still gets all our queued data, then EOF', async () => {
    // The peer (budget 256 KiB, not reading yet) floods us; our 2 MiB cannot all have left when we close.
    const { client, server, clientSocket } = await pair({}, { maxReceiveBuffer: 262_144 });
    const flood = pattern(1 << 20, 3);
    let peer: SmuxStream | null = null;
    let peerError: ReturnType<typeof errorOf> | null = null;
    server.on('stream', (s) => {
      peer = s;
      peerError = errorOf(s);
      const more = (): void => {
        while (!s.destroyed && !s.writableEnded && s.write(flood));
      };
      s.on('drain', more);
      more();
    });
    const a = quiet(await client.openStream());
    const back = collect(a);
    const big = pattern(2 << 20, 7);
    a.write(big);
    await until(() => back.bytes > 1 << 20 && server.stats.receiveBudgetLeft <= 0, 10_000, 'the peer flooding us and stalled on our data');
    const closing = client.close();
    await until(() => clientSocket.writableFinished || clientSocket.destroyed, 5_000, 'our FIN and data handed to the kernel');
    const got = collect(peer!); // the peer reads only now
    await until(() => got.ended || peerError!.error !== null, 10_000, 'EOF or an error at the peer');
    // Closing a socket with unread input (the flood) makes the kernel send RST and drop what it had not sent.
    expect({ bytes: got.bytes, ended: got.ended, error: got.ended ? null : peerError!.error?.message }).toEqual({
      bytes: big.length,
      ended: true,
      error: null,
    });
    expect(got.data().equals(big)).toBe(true);
    await closing;
  });

  test('a stream left paused while the close lingers: its data past the budget destroys it, and the peer’s hang-up is read', async () => {
    // Ours (budget 256 KiB, v1: no window stops the peer) does not read the peer's stream; the peer floods it. Once
    // our side is closed the session reads on to see the peer hang up: holding reading for the paused stream's data
    // again left the peer's FIN unread, and the close waited for its timer (30 s here).
    const { client, server } = await pair({ version: 1, maxReceiveBuffer: 262_144 }, { version: 1 });
    const flood = pattern(64 * 1024, 5);
    server.on('stream', (s) => {
      quiet(s);
      const more = (): void => {
        while (!s.destroyed && !s.writableEnded && s.write(flood));
      };
      s.on('drain', more);
      more();
    });
    const paused = await client.openStream();
    const failure = errorOf(paused);
    let streamClosed = false;
    paused.on('close', () => (streamClosed = true));
    paused.pause();
    paused.write('x'); // the peer's session learns of the stream
    await until(() => client.stats.receiveBudgetLeft <= 0, 10_000, 'the paused stream filling our budget');
    let hungUp = false;
    void closed(client).then(() => (hungUp = true));
    await client.close(); // our side is closed: from here the session only reads
    await until(() => hungUp, 5_000, 'the peer’s hang-up, read');
    expect(client.error).toBeNull(); // the peer hung up: neither the timer nor a reset ended it
    // Destroyed quietly (the close is ours, as a local destroy is): 'close' without 'end', no 'error' to crash on.
    await until(() => streamClosed, 5_000, 'the paused stream’s close');
    expect({ error: failure.error, ended: paused.readableEnded }).toEqual({ error: null, ended: false });
  });

  test('a stream read slowly while the close lingers gets all its data: only a stream the application stopped reading is dropped', async () => {
    // A v1 reader is always behind its peer: a slow one keeps the receive budget spent. Destroyed at the charge that
    // spent the budget while lingering (the first form of the fix above), it lost the rest, silently (a review).
    const { client, raw } = await rawServerOf({ version: 1, maxReceiveBuffer: 256 * 1024 });
    raw.socket.allowHalfOpen = true; // the peer keeps its side open after our FIN
    const stream = quiet(await client.openStream());
    stream.end('req');
    const total = 4 << 20;
    const piece = pattern(32 * 1024, 3);
    const frames = Array.from({ length: total / piece.length }, () => encodeFrame(1, Cmd.PSH, stream.id, piece));
    raw.sendRaw(Buffer.concat([...frames, encodeFrame(1, Cmd.FIN, stream.id)]));
    await client.close(); // our side is closed: the session lingers, reading
    let received = 0;
    for await (const chunk of stream) {
      received += (chunk as Buffer).length;
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(received).toBe(total);
  });

  test('destroy() right after close() resolved, the peer still sending: our streams end at once; the peer sees our FIN, not a reset', async () => {
    // As a client's close() does (closeWithin without linger): the graceful close's flush, then destroy(). The socket
    // closed with the peer's data unread made the kernel reset the connection: the peer got EPIPE or ECONNRESET.
    const { client, server, serverSocket } = await pair({ version: 1 }, { version: 1 });
    const flood = pattern(16 * 1024, 9);
    server.on('stream', (s) => {
      quiet(s);
      const more = (): void => {
        while (!s.destroyed && s.write(flood));
      };
      s.on('drain', more);
      more();
    });
    const ours = await client.openStream();
    const got = collect(ours);
    ours.write('x');
    await until(() => got.bytes > 1 << 20, 10_000, 'the peer’s flood arriving');
    const peerClosed = closed(server);
    serverSocket.pause(); // the peer is busy writing: it reads our FIN only later
    await client.close();
    client.destroy();
    await until(() => ours.destroyed, 1_000, 'our stream ended with the session'); // at once: not after the peer
    await new Promise((resolve) => setTimeout(resolve, 100));
    serverSocket.resume();
    const reason = (await peerClosed) as SmuxError | undefined;
    expect(reason?.message).toBe('the peer closed the connection'); // our FIN, not "connection error: write EPIPE"
  });

  test('destroy() right after close() resolved, the peer sending and never hanging up: our FIN reaches it; the socket is closed within the bound', async () => {
    const { client, raw, clientSocket } = await rawServerOf({ version: 1 });
    raw.socket.allowHalfOpen = true; // it stays open after our FIN
    const nops = Buffer.concat(Array.from({ length: 8192 }, () => encodeFrame(1, Cmd.NOP, 0)));
    let writing = true;
    const more = (): void => {
      while (writing && !raw.socket.destroyed && raw.socket.write(nops));
    };
    raw.socket.on('drain', more);
    more();
    await client.close();
    client.destroy();
    let paused = false; // the destroyed session's reads once paused the socket (its turn budget), and nothing resumed it
    clientSocket.on('data', () => (paused ||= clientSocket.isPaused()));
    // Our socket reads and discards while the peer sends; it is closed at the latest when the bound (2 s) is over:
    // the fd is not kept for ever.
    await until(() => clientSocket.destroyed, 5_000, 'our socket closed by the bound');
    writing = false;
    expect(paused).toBe(false);
    await until(() => raw.ended, 5_000, 'our FIN at the peer');
  });

  test('destroy() right after close(), then the event loop stalls while the peer sends: its bytes are read before the quiet is judged (no reset)', async () => {
    const { client, raw, clientSocket } = await rawServerOf({ version: 1 });
    raw.socket.allowHalfOpen = true;
    await client.close();
    client.destroy();
    // The peer sends while this process is busy for longer than the quiet (50 ms): when the loop comes back, the quiet
    // timer runs before the socket's bytes are read. Judged there, the socket was closed with them unread: a reset.
    raw.sendMany(64, Cmd.NOP, 0, Buffer.alloc(0));
    const stallUntil = performance.now() + 120;
    while (performance.now() < stallUntil); // the stall (bounded)
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(clientSocket.destroyed).toBe(false); // its bytes counted as input: not quiet yet
    raw.socket.end(); // the peer hangs up: our socket closes at its EOF
    await until(() => clientSocket.destroyed && raw.closed, 5_000, 'both sockets closed');
    expect(raw.error).toBeNull(); // our FIN, never a reset
    expect(raw.ended).toBe(true);
  });

  test('destroy() after the close lingered for the whole bound (2 s after our FIN): the socket is closed at once', async () => {
    const { client, raw, clientSocket } = await rawServerOf({ version: 1 });
    raw.socket.allowHalfOpen = true; // it never hangs up
    await client.close();
    await new Promise((resolve) => setTimeout(resolve, 2_050));
    client.destroy();
    expect(clientSocket.destroyed).toBe(true); // no second bound after the linger
  });

  test('destroy(err): every open stream errors with err; the peer’s streams fail with ERR_SMUX_SESSION_CLOSED', async () => {
    const { client, server } = await pair();
    const peer: Collected[] = [];
    server.on('stream', (s) => peer.push(collect(s)));
    const streams = [await client.openStream(), await client.openStream(), await client.openStream()];
    const mine = streams.map((s) => collect(s));
    for (const s of streams) s.write('x');
    await until(() => peer.length === 3 && peer.every((c) => c.bytes === 1), 5_000, 'streams open on both sides');
    const closeEvents: unknown[] = [];
    client.on('close', (e) => closeEvents.push(e));
    const err = new SmuxError('ERR_SMUX_LIMIT', 'test reason');
    client.destroy(err);
    client.destroy(new SmuxError('ERR_SMUX_PROTOCOL', 'second')); // idempotent: first error sticks
    await until(() => mine.every((c) => c.error !== null), 5_000, 'local stream errors');
    for (const c of mine) expect(c.error).toBe(err);
    expect(client.error).toBe(err);
    expect(client.numStreams).toBe(0);
    await until(() => peer.every((c) => c.error !== null), 5_000, 'peer stream errors');
    for (const c of peer) expect(c.error!.code).toBe('ERR_SMUX_SESSION_CLOSED');
    await until(() => server.isClosed && closeEvents.length > 0, 5_000, 'both sessions closed');
    await settle(20);
    expect(closeEvents).toEqual([err]);
    await expect(client.close()).resolves.toBeUndefined(); // close after destroy
  });

  test.each([
    ['destroyed locally', false],
    ['killed by the peer socket', true],
  ])('a session %s with streams in the accept backlog throws nothing; acceptStream() rejects', async (_name, killPeer) => {
    const guard = watchUncaught();
    try {
      const { client, server, clientSocket } = await pair();
      for (let i = 0; i < 3; i++) quiet(await client.openStream()).write(pattern(1000, i + 1));
      await until(() => server.numStreams === 3 && server.stats.framesIn >= 6, 5_000, 'three streams in the backlog');
      const serverClosed = closed(server);
      const reason = new SmuxError('ERR_SMUX_LIMIT', 'killed in test');
      if (killPeer) clientSocket.destroy();
      else server.destroy(reason);
      const error = (await serverClosed) as SmuxError | undefined;
      if (killPeer) expect(error!.code).toBe('ERR_SMUX_SESSION_CLOSED');
      else expect(error).toBe(reason);
      await expect(server.acceptStream()).rejects.toBe(server.error);
      await settle(20);
      expect(guard.errors).toEqual([]);
    } finally {
      guard.dispose();
    }
  });

  test('destroy(plain Error): the session and its streams end with an ERR_SMUX_SESSION_CLOSED carrying its message', async () => {
    const { client } = await pair();
    const s = await client.openStream();
    const streamError = new Promise<Error>((resolve) => s.once('error', resolve));
    const err = new Error('bye');
    client.destroy(err);
    const error = await closeError(client);
    expect([error?.code, error?.message, error?.cause]).toEqual(['ERR_SMUX_SESSION_CLOSED', 'bye', err]);
    expect(await streamError).toBe(error);
  });

  test.each([
    ['no stream open: ended, not failed (Go’s sess.Close())', 0],
    ['a stream open: it was cut off, ERR_SMUX_SESSION_CLOSED', 1],
  ])('the peer hanging up its socket with %s', async (_name, open) => {
    const { client, server, clientSocket } = await pair();
    if (open > 0) {
      quiet(await client.openStream()).write('x');
      await until(() => server.numStreams === 1, 5_000, 'the stream at the server');
    }
    clientSocket.end(); // a TCP FIN and nothing else: what Go's sess.Close() sends
    const error = await closeError(server);
    if (open === 0) expect(error).toBeNull();
    else expect([error?.code, error?.message]).toEqual(['ERR_SMUX_SESSION_CLOSED', 'the peer closed the connection']);
  });

  test('openStream() while closing rejects ERR_SMUX_SHUTTING_DOWN, after close ERR_SMUX_SESSION_CLOSED', async () => {
    const { client, server } = await pair();
    const serverDone = server.close();
    await expect(server.openStream()).rejects.toMatchObject({ code: 'ERR_SMUX_SHUTTING_DOWN' });
    await expect(server.acceptStream()).rejects.toMatchObject({ code: 'ERR_SMUX_SESSION_CLOSED' });
    await serverDone;
    await expect(server.openStream()).rejects.toMatchObject({ code: 'ERR_SMUX_SESSION_CLOSED' });
    // The peer hung up with no stream open: it ended the session (Go's sess.Close() does only that), no failure.
    expect(await closeError(client)).toBeNull();
    await expect(client.openStream()).rejects.toMatchObject({ code: 'ERR_SMUX_SESSION_CLOSED' });
  });

  test('ERR_SMUX_GOAWAY once ids run out; existing streams keep working', async () => {
    const { client, server } = await pair({ firstStreamId: 0xffff_fffd }, { firstStreamId: 0xffff_fffe });
    server.on('stream', echo);
    const a = quiet(await client.openStream());
    const b = quiet(await client.openStream());
    expect([a.id, b.id]).toEqual([0xffff_fffd, 0xffff_ffff]);
    expect(client.streamIdsLeft).toBe(0);
    await expect(client.openStream()).rejects.toMatchObject({ code: 'ERR_SMUX_GOAWAY' });
    await expect(client.openStream()).rejects.toMatchObject({ code: 'ERR_SMUX_GOAWAY' });
    const s = quiet(await server.openStream());
    expect(s.id).toBe(0xffff_fffe);
    await expect(server.openStream()).rejects.toMatchObject({ code: 'ERR_SMUX_GOAWAY' });
    expect(client.isClosed).toBe(false);

    const got = collect(b);
    b.end('still works');
    await until(() => got.ended, 5_000, 'echo on the last id');
    expect(got.data().toString()).toBe('still works');
    const fromServer = await client.acceptStream();
    const gotServer = collect(fromServer);
    s.end('server too');
    await until(() => gotServer.ended, 5_000, 'server stream');
    expect(gotServer.data().toString()).toBe('server too');
  });

  test('maxStreams: peer streams beyond it are refused with FIN (opener sees EOF); local opens beyond it fail', async () => {
    const { client, server } = await pair({ maxStreams: 3 }, { maxStreams: 2 });
    const accepted: Collected[] = [];
    server.on('stream', (s) => accepted.push(collect(s)));
    const streams = [await client.openStream(), await client.openStream(), await client.openStream()];
    const got = streams.map((s) => collect(s));
    streams.forEach((s, i) => s.write(`req${i}`));
    await until(() => got[2].ended, 5_000, 'EOF on the refused stream');
    expect(got[2].bytes).toBe(0);
    expect(got[2].error).toBeNull();
    await until(() => accepted.length === 2 && accepted.every((c) => c.bytes === 4), 5_000, 'the accepted two');
    expect(accepted.map((c) => c.data().toString())).toEqual(['req0', 'req1']);
    expect(server.stats.streamsRefused).toBe(1);
    expect(server.stats.streamsAccepted).toBe(2);
    expect(server.numStreams).toBe(2);
    expect(got[0].ended || got[1].ended).toBe(false);
    await expect(client.openStream()).rejects.toMatchObject({ code: 'ERR_SMUX_LIMIT' });
  });

  test('stats count bytes, frames and streams on both sides', async () => {
    const { client, server } = await pair();
    server.on('stream', echo);
    expect(client.stats).toEqual({
      bytesIn: 0,
      bytesOut: 0,
      framesIn: 0,
      framesOut: 0,
      streamsOpened: 0,
      streamsAccepted: 0,
      streamsRefused: 0,
      receiveBudgetLeft: 4 * 1024 * 1024,
      receiveWindowGrowth: 0,
      writeBlocked: false,
      writeBufferBytes: 0, // nothing written yet: no write buffer allocated
    });
    const s = await client.openStream();
    const got = collect(s);
    s.end(Buffer.alloc(100, 1));
    await until(() => got.ended, 5_000, 'echo');
    await until(
      () => server.stats.bytesIn === client.stats.bytesOut && client.stats.bytesIn === server.stats.bytesOut,
      5_000,
      'counters to agree',
    );
    // SYN + PSH(100) + FIN out; PSH(100) + FIN back.
    expect(client.stats).toMatchObject({ framesOut: 3, bytesOut: 3 * 8 + 100, framesIn: 2, bytesIn: 2 * 8 + 100, streamsOpened: 1 });
    expect(server.stats).toMatchObject({ framesIn: 3, framesOut: 2, streamsAccepted: 1, streamsOpened: 0 });
    expect(client.stats.writeBufferBytes).toBe(16 * 1024); // small batches: the smallest slab
  });
});
