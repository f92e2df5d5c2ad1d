/**
 * ClientRawCall — a byte stream on the caller's side (`client.openDuplex()`) — with its SmuxDuplex on an in-memory
 * session pair with a fake clock and a stub client (no sockets, no sleeps): the REQUEST first, writes as RAW
 * messages, each direction's END, when the call settles, and how it fails (the server's error, a destroy, the
 * deadline, the server's early FIN).
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { type SmuxChannel, SmuxError } from '../../lib/smux/index.js';
import { type CallMessage, encodeMessage, encodeTransportError, Flag, Kind } from '../../lib/nest/call-codec.js';
import { callDone, type ClientCallHost, openCall, type PendingCall } from '../../lib/nest/client-call.js';
import { ClientRawCall } from '../../lib/nest/client-raw-call.js';
import { MessageReader } from '../../lib/nest/message-reader.js';
import { createPacketCodec } from '../../lib/nest/packet-codec.js';
import { SmuxDuplex } from '../../lib/nest/raw-duplex.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';

let pair: ReturnType<typeof memorySessions>;
afterEach(() => pair?.close());

const KiB = 1024;

/**
 * A byte-stream call on the client session, its request built as `ClientSmux.openDuplex()` builds it (the codec,
 * Flag.RAW); the server's end of its stream as raw messages; what the Duplex reads and how it ends.
 * `open: false` leaves the call waiting for its stream (call `opened()`).
 */
async function rawCall({ timeout = 0, open = true } = {}) {
  pair = memorySessions();
  const settled: PendingCall[] = [];
  const lost = { calls: 0 }; // host.cutOff(): calls in flight on a connection that died
  const server = { channel: null as SmuxChannel | null, messages: [] as CallMessage[], fin: false, closed: false };
  const reader = new MessageReader(1 << 30);
  pair.server.on('channel', (channel) => {
    server.channel = channel;
    channel.setHandler({
      onData: (data) => reader.push(data, { onMessage: (m) => void server.messages.push(m) }),
      onEnd: () => (server.fin = true),
      onClose: () => (server.closed = true),
    });
  });
  const host: ClientCallHost = {
    clock: pair.clock,
    maxMessageBytes: 1 << 20,
    maxSourceBufferBytes: 1 << 20,
    codec: createPacketCodec(false, {
      serializer: { serialize: (v: unknown) => v },
      deserializer: { deserialize: (v: unknown) => v },
      normalizePattern: (p) => JSON.stringify(p),
      patternAsString: (p) => String(p),
    }),
    launch: () => undefined,
    settled: (c) => void settled.push(c),
    cutOff: () => void lost.calls++,
    connectError: () => null,
    closing: () => false,
    closes: () => 0,
  };
  const request = host.codec.encodeCall(Kind.REQUEST, {
    pattern: 'upload',
    data: { name: 'f' },
    headers: undefined,
    timeout: timeout > 0 ? timeout : undefined,
    flags: Flag.RAW,
  });
  const duplex = new SmuxDuplex(64 * KiB);
  const call = new ClientRawCall(host, duplex, request, timeout, false);
  const read = { text: '', ended: false, error: null as unknown, closed: false };
  duplex.on('data', (chunk: Buffer) => (read.text += chunk.toString()));
  duplex.on('end', () => (read.ended = true));
  duplex.on('error', (error) => (read.error = error));
  duplex.on('close', () => (read.closed = true));
  const opened = async (): Promise<void> => {
    openCall(call, pair.client.openChannel());
    await flush();
  };
  if (open) await opened();
  /** The server writes one message on the call's stream. */
  const send = (kind: number, flags: number, body: unknown): void =>
    void server.channel!.write(Buffer.concat(encodeMessage(kind, flags, body)));
  return { call, duplex, settled, server, read, send, opened, lost };
}

/** The bytes of the RAW messages among `messages`. */
const rawBytes = (messages: CallMessage[]): Buffer =>
  Buffer.concat(messages.filter((m) => m.kind === Kind.RAW).map((m) => m.body as Buffer));

describe('ClientRawCall', () => {
  test('the REQUEST (RAW) goes first, even before writes made while the stream was opening; writes are RAW messages of at most 64 KiB; end() sends END', async () => {
    const { duplex, server, settled, opened } = await rawCall({ open: false });
    duplex.write('early '); // the Duplex exists before its stream
    await flush();
    await opened();
    const big = Buffer.alloc(150 * KiB, 0x61);
    duplex.write(big);
    duplex.end(' tail');
    await flush(8);
    const [first, ...rest] = server.messages;
    expect(first).toMatchObject({ kind: Kind.REQUEST, pattern: 'upload', body: { name: 'f' } });
    expect(first.id).toBeUndefined(); // the stream is the call: no packet id
    expect(first.flags & Flag.RAW).toBe(Flag.RAW);
    expect(rest.map((m) => m.kind)).toEqual([Kind.RAW, Kind.RAW, Kind.RAW, Kind.RAW, Kind.RAW, Kind.END]);
    expect(rest.filter((m) => m.kind === Kind.RAW).map((m) => (m.body as Buffer).length)).toEqual([6, 64 * KiB, 64 * KiB, 22 * KiB, 5]);
    expect(rawBytes(rest).equals(Buffer.concat([Buffer.from('early '), big, Buffer.from(' tail')]))).toBe(true);
    expect(rest.at(-1)!.flags).toBe(0); // the caller's END does not end the call: the server's END + LAST does
    expect(server.fin).toBe(false);
    expect(settled).toEqual([]);
  });

  test("the server's RAW bytes are readable; its END + LAST ends the readable side", async () => {
    const { server, read, send, settled } = await rawCall();
    send(Kind.RAW, 0, Buffer.from('abc'));
    send(Kind.RAW, 0, Buffer.from('def'));
    await flush();
    expect(read.text).toBe('abcdef');
    expect(read.ended).toBe(false);
    send(Kind.END, Flag.LAST, undefined);
    await flush();
    expect(read.ended).toBe(true);
    expect(read.error).toBeNull();
    expect(server.fin).toBe(false); // our direction is still open: the call goes on
    expect(settled).toEqual([]);
  });

  test("a RAW message of the server's is readable as its bytes arrive, not once it is whole", async () => {
    const { server, read } = await rawCall();
    const message = Buffer.concat(encodeMessage(Kind.RAW, 0, Buffer.alloc(100 * KiB, 0x62)));
    server.channel!.write(message.subarray(0, 40 * KiB));
    await flush();
    expect(read.text.length).toBe(40 * KiB - 8); // all of the body that came, nothing held back for the rest
    server.channel!.write(message.subarray(40 * KiB));
    await flush();
    expect(read.text).toBe('b'.repeat(100 * KiB));
    expect(read.error).toBeNull();
  });

  test('the call settles (host.settled once, then our FIN after our END) only when both ends are done, in either order', async () => {
    for (const oursFirst of [true, false]) {
      const { call, duplex, server, read, send, settled } = await rawCall({ timeout: 1000 });
      const ours = (): void => void duplex.end('up');
      const theirs = (): void => send(Kind.END, Flag.LAST, undefined);
      (oursFirst ? ours : theirs)();
      await flush();
      expect(settled).toEqual([]);
      expect(callDone(call)).toBe(false);
      expect(server.fin).toBe(false);
      (oursFirst ? theirs : ours)();
      await flush();
      expect(settled).toEqual([call]);
      expect(callDone(call)).toBe(true);
      expect(server.messages.map((m) => m.kind)).toEqual([Kind.REQUEST, Kind.RAW, Kind.END]); // nothing dropped: not a cancel
      expect(server.fin).toBe(true);
      expect(read).toMatchObject({ ended: true, error: null });
      expect(pair.clock.pending).toBe(0); // the deadline was cleared with the call
      pair.clock.advance(5000);
      duplex.destroy();
      await flush();
      expect(read.error).toBeNull();
      expect(settled).toEqual([call]); // once
      pair.close();
    }
  });

  test('RESPONSE + ERROR errors the Duplex with the body; with TRANSPORT, with a SmuxError of its code; the server sees a cancel', async () => {
    const plain = await rawCall();
    plain.send(Kind.RAW, 0, Buffer.from('some'));
    plain.send(Kind.RESPONSE, Flag.LAST | Flag.ERROR, { status: 'error', message: 'no space' });
    await flush();
    expect(plain.read.text).toBe('some');
    expect(plain.read.error).toEqual({ status: 'error', message: 'no space' });
    expect(plain.read.ended).toBe(false);
    expect(plain.settled).toEqual([plain.call]);
    expect(plain.server.fin).toBe(true);
    pair.close();

    const transport = await rawCall();
    transport.server.channel!.write(Buffer.concat(encodeTransportError(new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'bye'))));
    await flush();
    expect(transport.read.error).toBeInstanceOf(SmuxError);
    expect(transport.read.error).toMatchObject({ code: 'ERR_SMUX_SHUTTING_DOWN', message: 'bye', retryable: true });
    expect(transport.settled).toEqual([transport.call]);
    expect(transport.server.fin).toBe(true);
  });

  test('destroy() before completion cancels: the server sees FIN without our END, host.settled once, nothing more is read', async () => {
    const { call, duplex, server, read, send, settled } = await rawCall();
    duplex.write('part of an upload');
    await flush();
    duplex.destroy();
    await flush();
    expect(server.fin).toBe(true);
    expect(server.messages.map((m) => m.kind)).toEqual([Kind.REQUEST, Kind.RAW]); // FIN before END: a cancel
    expect(settled).toEqual([call]);
    expect(read.error).toBeNull(); // destroyed without an error: a cancel, not a failure
    expect(read.closed).toBe(true);
    send(Kind.RAW, 0, Buffer.from('late'));
    send(Kind.END, Flag.LAST, undefined);
    await flush();
    expect(read).toMatchObject({ text: '', ended: false, error: null });
    expect(settled).toEqual([call]);
  });

  test("a fake 'close' on a Duplex still waiting for its stream cancels nothing; a real destroy then does", async () => {
    const { call, duplex, settled, opened, server } = await rawCall({ open: false });
    duplex.emit('close'); // anyone holding the Duplex may
    await flush();
    expect(settled).toEqual([]);
    await opened(); // the stream opens: the call goes on
    expect(server.messages.map((m) => m.kind)).toEqual([Kind.REQUEST]);
    duplex.destroy();
    await flush();
    expect(settled).toEqual([call]);
  });

  test('the deadline (on the fake clock) fails the Duplex with ERR_SMUX_TIMEOUT and cancels the call on the server', async () => {
    const { call, server, read, settled } = await rawCall({ timeout: 500 });
    expect(server.messages[0].timeout).toBe(500);
    pair.clock.advance(499);
    await flush();
    expect(read.error).toBeNull();
    expect(server.fin).toBe(false);
    pair.clock.advance(1);
    await flush();
    expect(read.error).toMatchObject({ code: 'ERR_SMUX_TIMEOUT' });
    expect(server.fin).toBe(true);
    expect(settled).toEqual([call]);
  });

  test("the server's FIN before its END + LAST errors the Duplex with ERR_SMUX_STREAM_CLOSED (a cut-off download never looks complete)", async () => {
    const { call, server, read, send, settled } = await rawCall();
    send(Kind.RAW, 0, Buffer.from('partial'));
    server.channel!.end();
    await flush();
    expect(read.text).toBe('partial');
    expect(read.ended).toBe(false);
    expect(read.error).toMatchObject({ code: 'ERR_SMUX_STREAM_CLOSED' });
    expect(settled).toEqual([call]);
  });

  test('END + ERROR from the server (a failed direction) errors the Duplex with the body and cancels the call', async () => {
    const { call, server, read, send, settled } = await rawCall();
    send(Kind.RAW, 0, Buffer.from('some'));
    send(Kind.END, Flag.ERROR, { message: 'the source failed' });
    await flush();
    expect(read).toMatchObject({ text: 'some', ended: false, error: { message: 'the source failed' } });
    expect(settled).toEqual([call]);
    expect(server.fin).toBe(true);
  });

  test('a message of another kind, or a RAW message without bytes, errors the Duplex with ERR_SMUX_PROTOCOL and cancels the call', async () => {
    for (const [kind, flags, body] of [
      [Kind.RESPONSE, Flag.LAST, 'a value where bytes belong'],
      [Kind.DATA, 0, 'an item'],
      [Kind.RAW, 0, 'a string where bytes belong'],
    ] as const) {
      const { call, server, read, send, settled } = await rawCall();
      send(Kind.RAW, 0, Buffer.from('some'));
      send(kind, flags, body);
      send(Kind.RAW, 0, Buffer.from('more'));
      send(Kind.END, Flag.LAST, undefined);
      await flush();
      expect(read).toMatchObject({ text: 'some', ended: false, error: expect.objectContaining({ code: 'ERR_SMUX_PROTOCOL' }) });
      expect(settled).toEqual([call]);
      expect(server.fin).toBe(true);
      pair.close();
    }
  });

  test("the server's FIN after its END + LAST is no failure: the call completes with our END", async () => {
    const { call, duplex, server, read, send, settled } = await rawCall();
    send(Kind.END, Flag.LAST, undefined);
    server.channel!.end();
    await flush();
    expect(read).toMatchObject({ ended: true, error: null });
    expect(settled).toEqual([]);
    duplex.end();
    await flush();
    expect(read.error).toBeNull();
    expect(settled).toEqual([call]);
  });

  test("the connection lost after the server's END + LAST, our side never ended: the Duplex closes without an error, the loss is counted", async () => {
    // A download whose caller forgot end(): once a `for await` over it finished, an 'error' reached no one and
    // crashed the process (a new-user trial).
    const { call, read, send, settled, lost } = await rawCall();
    send(Kind.RAW, 0, Buffer.from('all of it'));
    send(Kind.END, Flag.LAST, undefined);
    await flush();
    pair.client.destroy(new SmuxError('ERR_SMUX_SESSION_CLOSED', 'connection error: read ECONNRESET'));
    await flush();
    expect(read).toEqual({ text: 'all of it', ended: true, error: null, closed: true });
    expect(settled).toEqual([call]);
    expect(lost.calls).toBe(1);
  });

  test('the connection lost after a write of ours (buffered, or accepted and queued), or before the server ended: the Duplex errors, the loss is counted', async () => {
    for (const [serverEnded, corked] of [
      [true, true],
      [true, false],
      [false, true],
    ]) {
      const { call, duplex, read, send, settled, lost } = await rawCall();
      if (serverEnded) send(Kind.END, Flag.LAST, undefined);
      await flush();
      if (corked) duplex.cork(); // held by Node; else accepted at once (its callback runs) but queued in the stream
      duplex.write('never sent'); // lost with the connection: say so
      const error = new SmuxError('ERR_SMUX_SESSION_CLOSED', 'connection error: read ECONNRESET');
      pair.client.destroy(error);
      await flush();
      expect(read).toMatchObject({ ended: serverEnded, error, closed: true });
      expect(settled).toEqual([call]);
      expect(lost.calls).toBe(1);
      pair.close();
    }
  });

  test('nothing of the call is reachable on it (its admission state, open, fail, its handlers): the transport drives it through accessors', async () => {
    const { call } = await rawCall({ open: false });
    const names: string[] = [];
    for (let at: object | null = call; at !== null && at !== Object.prototype; at = Object.getPrototypeOf(at) as object | null) {
      for (const key of Reflect.ownKeys(at)) if (key !== 'constructor') names.push(String(key));
    }
    expect(names).toEqual([]);
    expect(Object.getOwnPropertyNames(ClientRawCall).sort()).toEqual(['length', 'name', 'prototype']);
  });
});
