import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { type ClientSmux, SmuxContext } from '../../lib/index.js';
import { encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { type AppHandle, closeAll, deferred, rawCall, rawSession, startApp, until, within } from './helpers.js';

const KiB = 1024;

let probe: ReturnType<typeof newProbe>;

function newProbe() {
  return {
    pulls: 0,
    emitted: 0,
    entered: deferred<SmuxContext>(),
    aborted: deferred(),
    released: deferred(), // the source was closed: generator finally, Observable teardown, Readable destroyed
    gate: deferred(),
  };
}

function watch(ctx: SmuxContext): void {
  ctx.signal.addEventListener('abort', () => probe.aborted.resolve());
}

/** A Readable that reports when it is destroyed; `chunks` are pushed at once, then it idles (never ends). */
function idleReadable(chunks: string[]): Readable {
  const readable = new Readable({
    read() {},
    destroy(error, callback) {
      probe.released.resolve();
      callback(error);
    },
  });
  for (const chunk of chunks) readable.push(chunk);
  return readable;
}

@Controller()
class StreamingController {
  /** An endless generator of 1 KiB values: only backpressure keeps it from running ahead of the caller. */
  @MessagePattern('endless')
  async *endless(@Ctx() ctx: SmuxContext) {
    watch(ctx);
    try {
      for (let i = 0; ; i++) {
        probe.pulls++;
        if (i % 64 === 63) await new Promise((resolve) => setImmediate(resolve)); // let the event loop breathe
        yield Buffer.alloc(KiB, i % 256);
      }
    } finally {
      probe.released.resolve();
    }
  }

  /** An Observable that pushes 64 KiB per millisecond whatever the caller does. */
  @MessagePattern('flood')
  flood(@Ctx() ctx: SmuxContext) {
    watch(ctx);
    return new Observable<Buffer>((subscriber) => {
      const timer = setInterval(() => {
        for (let k = 0; k < 64; k++) {
          probe.emitted++;
          subscriber.next(Buffer.alloc(KiB));
        }
      }, 1);
      return () => {
        clearInterval(timer);
        probe.released.resolve();
      };
    });
  }

  @MessagePattern('idle-readable')
  idle(@Ctx() ctx: SmuxContext) {
    watch(ctx);
    probe.entered.resolve(ctx);
    return idleReadable(['first']);
  }

  @MessagePattern('late-readable')
  async late(@Ctx() ctx: SmuxContext) {
    watch(ctx);
    probe.entered.resolve(ctx);
    await probe.gate.promise;
    return idleReadable(['never sent']);
  }
}

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
};

describe('streamed replies: backpressure and release of the source', () => {
  let handle: AppHandle;
  let client: ClientSmux;

  beforeAll(async () => {
    handle = await startApp({ controllers: [StreamingController], server: { maxReplyBufferBytes: 512 * KiB } });
    client = handle.client();
  });
  beforeEach(() => {
    probe = newProbe();
  });
  afterAll(closeAll);

  test('an async generator is pulled only as fast as the caller reads (stream window), and in order', async () => {
    const session = await rawSession(handle.port);
    const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, {}, { id: '1', pattern: 'endless' }));
    call.channel.pause(); // a caller that does not read: no window updates go back
    await until(() => probe.pulls >= 200, 5_000, 'the generator to start');
    await turns(300);
    // 256 KiB of window plus the stream's 64 KiB high-water mark is ~320 values; without backpressure
    // the generator would have run far ahead (64 values per turn).
    expect(probe.pulls).toBeLessThan(1_000);
    const stalledAt = probe.pulls;

    call.channel.resume();
    await until(() => probe.pulls > stalledAt + 500 && call.messages.length > 500, 5_000, 'pulling to resume once the caller reads');
    const firstBytes = call.messages.slice(0, 500).map((m) => (m.body as Buffer)[0]);
    expect(firstBytes).toEqual(Array.from({ length: 500 }, (_, i) => i % 256));
    expect(call.messages.every((m) => (m.flags & Flag.LAST) === 0)).toBe(true);

    call.channel.end(); // cancel
    await within(probe.aborted.promise, 'ctx.signal to abort');
    await within(probe.released.promise, "the generator's finally");
  });

  test('an Observable that outruns a caller who does not read fails the call with ERR_SMUX_LIMIT and is unsubscribed', async () => {
    const session = await rawSession(handle.port);
    const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, {}, { id: '1', pattern: 'flood' }));
    call.channel.pause();
    await within(probe.released.promise, 'the flood to be unsubscribed');
    await within(probe.aborted.promise, 'ctx.signal to abort');
    const emitted = probe.emitted;
    await turns(20);
    expect(probe.emitted).toBe(emitted); // nothing runs on

    call.channel.resume();
    const last = await within(call.last, 'the final message');
    expect(last.flags & (Flag.LAST | Flag.ERROR)).toBe(Flag.LAST | Flag.ERROR);
    expect(last.body).toEqual({ code: 'ERR_SMUX_LIMIT', message: expect.any(String) });
    // What was queued before the limit still arrives, in front of the error.
    expect(call.messages.length).toBeGreaterThan(1);
    await within(call.ended, "the server's FIN");
    call.channel.end();
  });

  test('a cancelled call releases its Readable even while the Readable is idle', async () => {
    const values: unknown[] = [];
    const subscription = client.send('idle-readable', {}).subscribe({ next: (v) => void values.push(v), error: () => undefined });
    await until(() => values.length === 1, 5_000, 'the first chunk');
    expect(Buffer.isBuffer(values[0]) && values[0].toString()).toBe('first'); // a byte-mode Readable gives Buffers
    subscription.unsubscribe();
    await within(probe.aborted.promise, 'ctx.signal to abort');
    await within(probe.released.promise, 'the Readable to be destroyed after the cancel', 2_000);
  });

  test('a Readable returned by an async handler after its caller cancelled is destroyed, not left open', async () => {
    const subscription = client.send('late-readable', {}).subscribe({ error: () => undefined });
    await within(probe.entered.promise, 'the handler');
    subscription.unsubscribe();
    await within(probe.aborted.promise, 'ctx.signal to abort');
    probe.gate.resolve();
    await within(probe.released.promise, 'the late Readable to be destroyed', 2_000);
  });
});
