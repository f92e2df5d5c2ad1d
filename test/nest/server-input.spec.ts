/**
 * ServerInput — what a running call reads after its REQUEST — driven through ServerCall on an in-memory session
 * pair with a fake clock and a stub of the server (no Nest app, no sockets, no sleeps): a streamed request's
 * items (STREAM: DATA … END, the handler's SmuxStreamedPayload) and its backpressure, a byte stream's bytes (RAW
 * … END each way, the handler's SmuxDuplex) and how it completes or fails, the caller's cancel, a plain request.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import type { Session, SmuxChannel } from '../../lib/smux/index.js';
import { type CallMessage, encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { MessageReader } from '../../lib/nest/message-reader.js';
import { SmuxDuplex } from '../../lib/nest/raw-duplex.js';
import { ServerCall } from '../../lib/nest/server-call.js';
import { SmuxStreamedPayload } from '../../lib/nest/streamed-input.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';
import { stubCallHost } from '../helpers/server-call-host.js';

let pair: ReturnType<typeof memorySessions>;
afterEach(() => pair?.close());

/** The server's side: the calls its stub made, the requests it dispatched, what it was told. */
function harness() {
  pair = memorySessions();
  const calls: ServerCall[] = [];
  const { host, requests, log } = stubCallHost(pair.clock);
  pair.server.on('channel', (channel) => calls.push(new ServerCall(host, channel, null)));
  return { calls, requests, log };
}

/** A caller's stream: what it writes, and the messages and FIN it sees. */
function caller(session: Session, ...buffers: Buffer[]) {
  const messages: CallMessage[] = [];
  const reader = new MessageReader(1 << 30);
  const seen = { messages, fin: false, channel: null as unknown as SmuxChannel };
  seen.channel = session.openChannel({
    onData: (data) => reader.push(data, { onMessage: (m) => void messages.push(m) }),
    onEnd: () => (seen.fin = true),
    onClose: () => undefined,
  });
  for (const buffer of buffers) seen.channel.write(buffer);
  return seen;
}

const message = (kind: number, flags: number, body: unknown) => Buffer.concat(encodeMessage(kind, flags, body));
const request = (flags: number, data?: unknown) => Buffer.concat(encodeMessage(Kind.REQUEST, flags, data, { id: '1', pattern: 'p' }));
const data = (item: unknown) => message(Kind.DATA, 0, item);
const raw = (bytes: string | Buffer) => message(Kind.RAW, 0, Buffer.from(bytes));
const END = message(Kind.END, 0, undefined);

/** Every item of a streamed request, one at a time (as a handler's `for await` takes them). */
async function take(payload: SmuxStreamedPayload): Promise<unknown[]> {
  const items: unknown[] = [];
  for await (const item of payload) items.push(item);
  return items;
}

/** A promise's outcome, watched rather than awaited: an engine that never settles it fails the test instead of hanging it. */
function watch<T>(promise: Promise<T>) {
  const seen = { promise, settled: false, value: undefined as T | undefined, error: undefined as unknown };
  promise.then(
    (value) => Object.assign(seen, { settled: true, value }),
    (error: unknown) => Object.assign(seen, { settled: true, error }),
  );
  return seen;
}

/** What a handler's Duplex reads and how it ends ('end' or its error). */
function reading(duplex: SmuxDuplex) {
  const seen = { text: '', ended: false, error: null as unknown };
  duplex.on('data', (chunk: Buffer) => (seen.text += chunk.toString()));
  duplex.on('end', () => (seen.ended = true));
  duplex.on('error', (error) => (seen.error = error));
  return seen;
}

/** A call whose REQUEST (`flags`; a byte stream's carries the data 'meta') and the `after` messages arrived; its handler is not run yet. */
async function started(flags: number, ...after: Buffer[]) {
  const h = harness();
  const c = caller(pair.client, request(flags, (flags & Flag.STREAM) !== 0 ? undefined : 'meta'), ...after);
  await flush();
  const call = h.calls[0];
  return { ...h, c, call };
}

const TRANSPORT_ERROR = Flag.LAST | Flag.ERROR | Flag.TRANSPORT;

describe('ServerInput: a streamed request (REQUEST + STREAM, DATA … END)', () => {
  test("call.input yields the DATA items in order, whatever their encoding, and completes on END; the handler's reply follows", async () => {
    const { calls, c, call } = await started(Flag.STREAM, data({ n: 1 }), data('two'), data(Buffer.from([3])), data(null), END);
    expect(calls).toHaveLength(1);
    expect(call.input).toBeInstanceOf(SmuxStreamedPayload);
    expect(call.duplex).toBeNull();
    const taken = watch(take(call.input!));
    void call.run(async () => (await taken.promise).length, undefined, null, null);
    await flush();
    expect(taken.value).toEqual([{ n: 1 }, 'two', Buffer.from([3]), null]);
    expect(c.messages).toEqual([expect.objectContaining({ kind: Kind.RESPONSE, flags: Flag.LAST, body: 4 })]);
    expect(c.fin).toBe(true);
  });

  test('items that arrive while the handler is already reading reach it as they come; END completes its subscription', async () => {
    const { c, call } = await started(Flag.STREAM);
    const items: unknown[] = [];
    let completed = false;
    call.input!.subscribe({ next: (item) => items.push(item), complete: () => (completed = true) });
    c.channel.write(data(1));
    await flush();
    expect(items).toEqual([1]);
    c.channel.write(Buffer.concat([data(2), data(3)]));
    await flush();
    expect(items).toEqual([1, 2, 3]);
    expect(completed).toBe(false);
    c.channel.write(END);
    await flush();
    expect(completed).toBe(true);
  });

  test("END + ERROR errors the payload with ERR_SMUX_CANCELLED, the caller's error body as cause (held items are dropped)", async () => {
    const failure = { code: 'SOURCE_FAILED', message: 'the disk went away' };
    const { call } = await started(Flag.STREAM, data('a'), message(Kind.END, Flag.ERROR, failure));
    const taken = watch(take(call.input!));
    await flush();
    // Not the body itself: a handler that rethrows it had Nest log the peer's text (caller-source-failed.spec).
    expect(taken).toMatchObject({ settled: true, error: { code: 'ERR_SMUX_CANCELLED', message: "the caller's source failed" } });
    expect((taken.error as Error).cause).toEqual(failure);
  });

  test('a message of another kind mid-stream ends the call with an ERR_SMUX_PROTOCOL transport error; the payload errors too', async () => {
    for (const intruder of [raw('bytes'), request(0, 'again'), message(Kind.RESPONSE, Flag.LAST, 'no')]) {
      const { c, call, log } = await started(Flag.STREAM, data('a'));
      const items: unknown[] = [];
      let failure: unknown = null;
      call.input!.subscribe({ next: (item) => items.push(item), error: (error: unknown) => (failure = error) });
      void call.run(() => new Promise<void>(() => undefined), undefined, null, null); // a handler still reading
      c.channel.write(Buffer.concat([intruder, data('b'), END]));
      await flush();
      expect(items).toEqual(['a']); // nothing after the intruder is read
      expect(failure).toMatchObject({ code: 'ERR_SMUX_PROTOCOL' });
      expect(call.signal.reason).toMatchObject({ code: 'ERR_SMUX_PROTOCOL' });
      expect(c.messages).toEqual([
        expect.objectContaining({
          kind: Kind.RESPONSE,
          flags: TRANSPORT_ERROR,
          body: expect.objectContaining({ code: 'ERR_SMUX_PROTOCOL' }),
        }),
      ]);
      expect(c.fin).toBe(true);
      expect(log).toEqual(['stopped', 'awaitCallerFin']); // not 'settled': the handler still runs, so the call keeps its slot
      pair.close();
    }
  });

  test("a payload nobody takes stops the server reading past its high-water mark: the caller's writes stay window-bounded; taking items resumes", async () => {
    const ITEM = 16 * 1024;
    const COUNT = 128; // 2 MiB of items: four times what the payload holds plus the stream's window
    const { c, call } = await started(Flag.STREAM);
    const item = data(Buffer.alloc(ITEM, 7));
    for (let i = 0; i < COUNT; i++) c.channel.write(item);
    c.channel.write(END);
    const total = COUNT * item.length + END.length;
    await flush(30);
    // The payload holds 256 KiB (its bytes high-water mark), the stream the window beyond it: no more left the caller.
    const held = 256 * 1024 + item.length;
    const window = 256 * 1024;
    expect(call.channel.isPaused).toBe(true);
    expect(call.channel.readableLength).toBeLessThanOrEqual(window);
    const sent = total - c.channel.writableLength;
    expect(sent).toBeLessThanOrEqual(held + window);
    await flush(30);
    expect(total - c.channel.writableLength).toBe(sent); // and it stays there while nobody takes items
    // Taking the items reopens the window: all of them arrive, in order, and the caller's queue drains.
    const taken = watch(take(call.input!));
    for (let turn = 0; turn < 200 && !taken.settled; turn++) await flush(1);
    const items = taken.value as Buffer[];
    expect(items).toHaveLength(COUNT);
    expect(items.every((b) => b.length === ITEM && b[0] === 7)).toBe(true);
    await flush();
    expect(c.channel.writableLength).toBe(0);
  });

  test("the caller's FIN mid-stream errors the payload with ERR_SMUX_CANCELLED and aborts call.signal; nothing is written", async () => {
    const { c, call, log } = await started(Flag.STREAM, data('a'));
    const taken = watch(take(call.input!));
    void call.run(
      () => taken.promise,
      undefined,
      null,
      () => log.push('end hook'),
    );
    await flush();
    expect(call.signal.aborted).toBe(false);
    c.channel.end();
    await flush();
    expect(taken.error).toMatchObject({ code: 'ERR_SMUX_CANCELLED' });
    expect(call.signal.reason).toMatchObject({ code: 'ERR_SMUX_CANCELLED' });
    expect(call.running).toBe(false);
    expect(c.messages).toEqual([]);
    // A cancel: no wait for the caller's FIN; the slot goes once the handler returned (its `take` rejected).
    expect(log).toEqual(['stopped', 'end hook', 'closed', 'settled']);
  });
});

describe('ServerInput: a byte stream (REQUEST + RAW, RAW … END each way)', () => {
  test("call.duplex reads the caller's RAW bytes; the call is answered (FIN after END + LAST) only once both directions ended", async () => {
    for (const callerEndsFirst of [false, true]) {
      const { c, call, requests, log } = await started(Flag.RAW, raw('hello '), raw('world'));
      expect(requests.map((m) => m.body)).toEqual(['meta']); // the REQUEST's body is the request data
      expect(call.input).toBeNull();
      const duplex = call.duplex!;
      expect(duplex).toBeInstanceOf(SmuxDuplex);
      const seen = reading(duplex);
      await call.run(() => undefined, 'meta', null, null); // its handler returns; the call goes on in the Duplex
      await flush();
      expect(seen.text).toBe('hello world');
      expect(call.running).toBe(true);

      const first = (): void => (callerEndsFirst ? void c.channel.write(END) : void duplex.end('reply'));
      const second = (): void => (callerEndsFirst ? void duplex.end('reply') : void c.channel.write(END));
      first();
      await flush();
      expect(call.running).toBe(true); // one direction is not the call
      expect(c.fin).toBe(false);
      expect(log).toEqual([]);
      second();
      await flush();
      expect(seen.ended).toBe(true);
      expect(seen.error).toBeNull();
      expect(c.messages.map((m) => [m.kind, m.flags, m.body])).toEqual([
        [Kind.RAW, 0, Buffer.from('reply')],
        [Kind.END, Flag.LAST, undefined],
      ]);
      expect(c.fin).toBe(true);
      expect(log).toEqual(['settled', 'awaitCallerFin']);
      pair.close();
    }
  });

  test('the handler destroying its Duplex with an error before ending fails the call with RESPONSE + ERROR + LAST carrying toRpcError(error)', async () => {
    // Inside the handler (it then returns), and after it returned (a pipeline failing later).
    for (const when of ['in the handler', 'after it returned']) {
      const { c, call, log } = await started(Flag.RAW, raw('part'));
      const duplex = call.duplex!;
      const handler = (): void => void (when === 'in the handler' && duplex.destroy(new Error('disk full')));
      await call.run(handler, 'meta', null, null);
      if (when === 'after it returned') {
        await flush();
        expect(call.running).toBe(true);
        duplex.destroy(new Error('disk full'));
      }
      await flush();
      expect(c.messages).toEqual([
        expect.objectContaining({ kind: Kind.RESPONSE, flags: Flag.LAST | Flag.ERROR, body: { status: 'error', message: 'disk full' } }),
      ]);
      expect(c.fin).toBe(true);
      expect(log).toEqual(['settled', 'awaitCallerFin']);
      pair.close();
    }
  });

  test('a Duplex destroyed without an error before its end fails the call too (never an empty success)', async () => {
    const { c, call } = await started(Flag.RAW);
    let duplex: SmuxDuplex | null = null;
    await call.run(() => void (duplex = call.duplex), 'meta', null, null); // takes it, destroys it after returning
    duplex!.destroy();
    await flush();
    expect(c.messages).toEqual([
      expect.objectContaining({
        kind: Kind.RESPONSE,
        flags: Flag.LAST | Flag.ERROR,
        body: { status: 'error', message: 'the handler destroyed its stream' },
      }),
    ]);
  });

  test('after its END + LAST went out, a destroy by the handler only cancels: FIN, nothing more written', async () => {
    const { c, call, log } = await started(Flag.RAW, raw('up'));
    const duplex = call.duplex!;
    await call.run(() => undefined, 'meta', null, null);
    duplex.end('down');
    await flush();
    expect(c.messages.map((m) => [m.kind, m.flags])).toEqual([
      [Kind.RAW, 0],
      [Kind.END, Flag.LAST],
    ]);
    expect(c.fin).toBe(false); // the caller's direction is still open
    duplex.destroy(new Error('gave up reading'));
    await flush();
    expect(c.messages).toHaveLength(2); // no error after the server's last message
    expect(c.fin).toBe(true);
    expect(call.running).toBe(false);
    expect(call.signal.reason).toMatchObject({ code: 'ERR_SMUX_CANCELLED' });
    expect(log).toEqual(['settled', 'closed']); // a cancel: no wait for the caller's FIN, the stream is forgotten
  });

  test('a message of another kind mid byte stream, or a RAW message without bytes, ends the call with an ERR_SMUX_PROTOCOL transport error', async () => {
    for (const intruder of [
      data('an item where bytes belong'),
      message(Kind.RAW, 0, 'a string where bytes belong'),
      request(Flag.RAW, 'again'),
    ]) {
      const { c, call, log } = await started(Flag.RAW, raw('some'));
      const seen = reading(call.duplex!);
      await call.run(() => undefined, 'meta', null, null); // its handler returned: the call itself must notice
      c.channel.write(Buffer.concat([intruder, raw('more'), END]));
      await flush();
      expect(seen.text).toBe('some'); // nothing after the intruder is read
      expect(seen.ended).toBe(false);
      expect(seen.error).toMatchObject({ code: 'ERR_SMUX_PROTOCOL' });
      expect(c.messages).toEqual([
        expect.objectContaining({
          kind: Kind.RESPONSE,
          flags: TRANSPORT_ERROR,
          body: expect.objectContaining({ code: 'ERR_SMUX_PROTOCOL' }),
        }),
      ]);
      expect(call.running).toBe(false);
      expect(c.fin).toBe(true);
      expect(log).toEqual(['settled', 'awaitCallerFin']);
      pair.close();
    }
  });

  test("END + ERROR from the caller (its direction failed) errors the handler's Duplex and fails the call; its upload never looks complete", async () => {
    const failure = { code: 'SOURCE_FAILED', message: 'the disk went away' };
    const { c, call } = await started(Flag.RAW, raw('half'));
    const seen = reading(call.duplex!);
    await flush();
    c.channel.write(message(Kind.END, Flag.ERROR, failure));
    await flush();
    const error = { code: 'ERR_SMUX_CANCELLED', message: "the caller's source failed" };
    expect(seen).toMatchObject({ text: 'half', ended: false, error });
    expect((seen.error as Error).cause).toEqual(failure);
    expect(call.signal.reason).toBe(seen.error);
    // Our direction can no longer end normally: the call fails at once (it used to wait for good).
    expect(c.messages).toEqual([expect.objectContaining({ kind: Kind.RESPONSE, flags: TRANSPORT_ERROR, body: error })]);
    expect(c.fin).toBe(true);
  });

  test("the caller's FIN mid-stream errors the Duplex with ERR_SMUX_CANCELLED and aborts call.signal; nothing is written", async () => {
    const { c, call } = await started(Flag.RAW, raw('half an upl'));
    const duplex = call.duplex!;
    const seen = reading(duplex);
    await call.run(() => undefined, 'meta', null, null);
    await flush();
    expect(seen.text).toBe('half an upl');
    c.channel.end();
    await flush();
    expect(seen.ended).toBe(false); // a cut-off upload never looks complete
    expect(seen.error).toMatchObject({ code: 'ERR_SMUX_CANCELLED' });
    expect(duplex.destroyed).toBe(true);
    expect(call.signal.reason).toMatchObject({ code: 'ERR_SMUX_CANCELLED' });
    expect(c.messages).toEqual([]);
  });

  test('a call that is over lets its Duplex go once its handler returned (a handler still running keeps it): call.duplex then throws ERR_SMUX_STREAM_CLOSED', async () => {
    // The call lives on until the caller's FIN; a destroyed Duplex keeps what it buffered, so holding it would pin
    // that past the connection's budget for every such call (issue 9's raw-stall attack).
    const { c, call } = await started(Flag.RAW, raw('buffered, never read'));
    const duplex = call.duplex!;
    let returnNow!: () => void;
    const running = call.run(() => new Promise<void>((resolve) => (returnNow = resolve)), 'meta', null, null);
    c.channel.end(); // the caller cancels while the handler still runs
    await flush();
    expect(call.running).toBe(false);
    expect(call.duplex).toBe(duplex);
    returnNow();
    await running;
    let thrown: unknown;
    try {
      void call.duplex;
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ code: 'ERR_SMUX_STREAM_CLOSED' });
    expect(duplex.destroyed).toBe(true);
  });

  test("a destroyed Duplex drops the writes queued behind one that waits for the caller's window", async () => {
    const { c, call } = await started(Flag.RAW);
    c.channel.pause(); // the caller reads nothing: the stream's window fills
    const duplex = call.duplex!;
    let returnNow!: () => void;
    const running = call.run(() => new Promise<void>((resolve) => (returnNow = resolve)), 'meta', null, null);
    for (let i = 0; i < 16; i++) duplex.write(Buffer.alloc(64 * 1024));
    await flush();
    expect(duplex.writableLength).toBeGreaterThan(256 * 1024); // waiting behind the window
    duplex.destroy(); // by the handler, which goes on running: the call is not over yet
    await flush();
    expect(call.running).toBe(true);
    expect(duplex.writableLength).toBe(0); // not pinned until a window that a stalled caller never opens
    returnNow();
    await running;
  });
});

describe('ServerInput: a plain request', () => {
  test('a REQUEST without STREAM or RAW has neither input nor duplex; DATA, END and RAW after it are ignored', async () => {
    const { c, call, requests } = await started(0, data('item'), raw('bytes'), END, message(Kind.END, Flag.ERROR, 'boom'));
    expect(call.input).toBeNull();
    expect(call.duplex).toBeNull();
    c.channel.write(Buffer.concat([data('later'), Buffer.from('not even a message')]));
    await flush();
    expect(requests).toHaveLength(1);
    await call.run((d) => `got ${String(d)}`, 'meta', null, null);
    await flush();
    expect(c.messages).toEqual([expect.objectContaining({ kind: Kind.RESPONSE, flags: Flag.LAST, body: 'got meta' })]);
    expect(c.fin).toBe(true);
  });
});
