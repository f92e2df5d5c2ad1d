/**
 * A caller's cancel reaches a handler that does not read its request (ServerCall.onPeerEndHeld): the caller's FIN
 * came behind data the server holds unread, and used to wait until the handler read up to it — forever for one
 * that never reads, with the call, its slot and its budget held (found by a new-user trial: five such cancels
 * filled a connection's `maxCallsPerConnection` of 5, and every later call on it failed with ERR_SMUX_LIMIT).
 */
import { once } from 'node:events';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, NEVER, type Observable } from 'rxjs';
import type { ClientSmux, SmuxContext, SmuxStreamedPayload } from '../../lib/index.js';
import { encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { type AppHandle, closeAll, type Deferred, deferred, rawCall, rawSession, smuxError, startApp, until, within } from './helpers.js';

/** The handlers' contexts, in the order they were entered, and their signals' abort reasons. */
let entered: SmuxContext[];
let aborted: unknown[];
/** What a slow reader's for-await ended with. */
let readerEnded: Deferred<unknown>;
/** Lets a slow reader read on. */
let readOn: Deferred<void>;

function watch(ctx: SmuxContext): void {
  entered.push(ctx);
  ctx.signal.addEventListener('abort', () => aborted.push(ctx.signal.reason));
}

/** Until the server's end of the call's stream is paused: its input is held unread, the caller's FIN would wait behind it. */
async function inputHeld(ctx: SmuxContext): Promise<void> {
  await until(() => ctx.getStream().isPaused && ctx.getStream().readableLength > 0, 5_000, 'the request to be held unread');
}

@Controller()
class UnreadController {
  @MessagePattern('never-reads')
  neverReads(@Payload() _items: SmuxStreamedPayload<number>, @Ctx() ctx: SmuxContext): Promise<never> {
    watch(ctx);
    return new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)));
  }

  @MessagePattern('bidi-never-reads')
  bidiNeverReads(@Payload() _items: SmuxStreamedPayload<number>, @Ctx() ctx: SmuxContext): Observable<number> {
    watch(ctx);
    return NEVER;
  }

  @MessagePattern('reads-then-stops')
  async readsThenStops(@Payload() items: SmuxStreamedPayload<number>, @Ctx() ctx: SmuxContext): Promise<number> {
    watch(ctx);
    let n = 0;
    try {
      for await (const _item of items) {
        if (++n === 1) await readOn.promise; // stops reading after the first item until the test lets it go on
      }
      readerEnded.resolve(`ended after ${n}`);
    } catch (error) {
      readerEnded.resolve(error);
      throw error;
    }
    return n;
  }

  @MessagePattern('duplex-never-reads')
  duplexNeverReads(@Ctx() ctx: SmuxContext): Promise<never> {
    watch(ctx);
    ctx.getDuplex(); // taken, never read
    return new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)));
  }

  @MessagePattern('answers-unread')
  async answersUnread(@Payload() _items: SmuxStreamedPayload<number>, @Ctx() ctx: SmuxContext): Promise<string> {
    watch(ctx);
    await readOn.promise; // answers once the test saw the request held
    return 'answered';
  }

  @MessagePattern('echo')
  echo(@Payload() data: unknown): unknown {
    return data;
  }
}

/** Items until the caller stops asking (it does once it unsubscribed): far more than the server holds unread. */
async function* endless(bytes: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < 1_000_000; i++) yield Buffer.alloc(bytes, i & 0xff);
}

const cancelled = smuxError('ERR_SMUX_CANCELLED', 'the caller cancelled the call');

describe('a cancel reaches a handler that does not read its request', () => {
  let handle: AppHandle;
  let client: ClientSmux;

  beforeAll(async () => {
    handle = await startApp({ controllers: [UnreadController], server: { maxCallsPerConnection: 3, finTimeout: 60_000 } });
    client = handle.client({ timeout: 0 });
  });
  beforeEach(() => {
    entered = [];
    aborted = [];
    readerEnded = deferred<unknown>();
    readOn = deferred();
  });
  afterAll(closeAll);

  const inFlight = (): number => handle.server.metrics.snapshot().calls.inFlight;

  /** Once the `n`th handler's request is held unread, `cancel` it: its signal aborts and the call ends on the server. */
  async function cancelWhileHeld(cancel: () => void, n = 1): Promise<void> {
    await until(() => entered.length === n, 5_000, 'the handler');
    await inputHeld(entered[n - 1]);
    cancel();
    await until(() => aborted.length === n, 5_000, "the cancel to reach the handler's signal");
    expect(aborted[n - 1]).toEqual(cancelled);
    await until(() => inFlight() === 0, 5_000, 'the call to end on the server');
  }

  test('a client stream: unsubscribing aborts ctx.signal and frees the call — again and again, past maxCallsPerConnection', async () => {
    // Twice the connection's limit of 3: before the fix the fourth call already failed with ERR_SMUX_LIMIT.
    for (let round = 0; round < 6; round++) {
      const subscription = client.send('never-reads', endless(1_024)).subscribe({ error: () => undefined });
      await cancelWhileHeld(() => subscription.unsubscribe(), round + 1);
    }
    expect(await firstValueFrom(client.send('echo', 'still here'))).toBe('still here');
  });

  test('a bidirectional call whose handler never reads: unsubscribing aborts ctx.signal', async () => {
    const subscription = client.send('bidi-never-reads', endless(16 * 1_024)).subscribe({ error: () => undefined });
    await cancelWhileHeld(() => subscription.unsubscribe());
  });

  test('a handler that stopped reading gets the cancel at once, and its for-await ends with it — not with the held items', async () => {
    const subscription = client.send('reads-then-stops', endless(1_024)).subscribe({ error: () => undefined });
    await until(() => entered.length === 1, 5_000, 'the handler');
    await inputHeld(entered[0]);
    subscription.unsubscribe();
    await until(() => aborted.length === 1, 5_000, "the cancel to reach the handler's signal");
    readOn.resolve();
    expect(await within(readerEnded.promise, 'the for-await to end')).toEqual(cancelled);
    await until(() => inFlight() === 0, 5_000, 'the call to end on the server');
  });

  test('a byte stream whose handler never reads: destroying the Duplex aborts ctx.signal', async () => {
    const duplex = client.openDuplex('duplex-never-reads');
    duplex.on('error', () => undefined);
    const chunk = Buffer.alloc(64 * 1_024, 7);
    for (let i = 0; i < 16; i++) duplex.write(chunk); // 1 MiB, past the window: the server holds what it got unread
    await cancelWhileHeld(() => duplex.destroy());
  });

  test("an answered call whose request was left unread: the caller's FIN closes its stream at once, not at finTimeout", async () => {
    const session = await rawSession(handle.port);
    const request = encodeMessage(Kind.REQUEST, Flag.STREAM, undefined, { pattern: 'answers-unread', id: 'a' });
    const call = rawCall(session, request);
    const item = Buffer.concat(encodeMessage(Kind.DATA, 0, Buffer.alloc(8_192, 1)));
    for (let i = 0; i < 128; i++) call.channel.write(item); // 1 MiB, past the window: the server holds what it got unread
    await until(() => entered.length === 1, 5_000, 'the handler');
    await inputHeld(entered[0]);
    readOn.resolve();
    expect((await within(call.last, 'the answer')).body).toBe('answered');
    await within(call.ended, "the server's FIN");
    const server = handle.sessions.at(-1)!;
    expect(entered[0].getStream().isPaused).toBe(true); // what the caller sent is still held, unread
    call.channel.destroy(); // the caller is done: FIN (what it still had queued is dropped)
    await within(call.closed, 'the stream to close');
    // finTimeout is 60 s here: only the FIN, told while the request is held, lets the stream go now.
    await until(() => server.numStreams === 0, 5_000, "the server's end of the stream to go");
    session.destroy();
    await once(session, 'close');
  });

  test('on the wire: a caller that writes items until its window is full, then sends FIN (Go`s stream.Close)', async () => {
    const session = await rawSession(handle.port);
    const request = encodeMessage(Kind.REQUEST, Flag.STREAM, undefined, { pattern: 'never-reads', id: 'w' });
    const call = rawCall(session, request);
    const item = Buffer.concat(encodeMessage(Kind.DATA, 0, Buffer.alloc(8_192, 1)));
    for (let i = 0; i < 128; i++) call.channel.write(item); // 1 MiB, past the window: the server holds what it got unread
    await cancelWhileHeld(() => call.channel.destroy()); // Go's Close: what is queued is dropped, FIN goes now
    session.destroy();
    await once(session, 'close');
  });
});
