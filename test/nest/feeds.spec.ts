/**
 * Real-time feeds: `@MessagePattern(pattern, smuxFeed({ bufferSize }))`. Each item carries its sequence number and
 * the server's timestamp; a caller that reads slowly gets the newest items with gaps (the drops), the server holds
 * at most `bufferSize` unsent items and never slows the producer. Ordinary Observable replies stay lossless.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Readable } from 'node:stream';
import { type CallHandler, Controller, type ExecutionContext, Injectable, type NestInterceptor, UseInterceptors } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { lastValueFrom, map, Observable, range, take, tap, toArray } from 'rxjs';
import { type ClientSmux, type SmuxFeedItem, smuxFeed } from '../../lib/index.js';
import { encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { type AppHandle, closeAll, rawCall, rawSession, startApp, until, within } from './helpers.js';

const producer = { emitted: 0, stopped: false };
const wideProducer = { emitted: 0, stopped: 0 };

@Injectable()
class TapInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(tap(() => undefined));
  }
}

@Controller()
class FeedController {
  @MessagePattern('ticks', smuxFeed({ bufferSize: 8 }))
  ticks(@Payload() count: number): Observable<number> {
    return range(1, count);
  }

  @MessagePattern('firehose', smuxFeed({ bufferSize: 16 })) // 1 KiB items as fast as possible, until cancelled
  firehose(): Observable<Buffer> {
    producer.emitted = 0;
    producer.stopped = false;
    return new Observable<Buffer>((subscriber) => {
      const timer = setInterval(() => {
        for (let i = 0; i < 200; i++) {
          producer.emitted++;
          subscriber.next(Buffer.alloc(1024, producer.emitted & 0xff));
        }
      }, 1);
      return () => {
        producer.stopped = true;
        clearInterval(timer);
      };
    });
  }

  @MessagePattern('generated', smuxFeed({ bufferSize: 8 })) // an async generator: consumed as it yields, each value an item
  async *generated(@Payload() count: number): AsyncGenerator<number> {
    for (let i = 1; i <= count; i++) yield i;
  }

  @MessagePattern('readable-feed', smuxFeed()) // a Readable in object mode
  readableFeed(): Readable {
    return Readable.from(['a', 'b', 'c']);
  }

  @MessagePattern('single', smuxFeed()) // a plain value is a feed of one item
  single(): string {
    return 'only';
  }

  @UseInterceptors(TapInterceptor) // an interceptor wraps the generator in an Observable of it
  @MessagePattern('intercepted', smuxFeed({ bufferSize: 8 }))
  async *intercepted(@Payload() count: number): AsyncGenerator<number> {
    for (let i = 1; i <= count; i++) yield i * 10;
  }

  @MessagePattern('wide', smuxFeed({ bufferSize: 64 })) // `count` items of 8 KiB at once, then completion
  wide(@Payload() count: number): Observable<Buffer> {
    return range(1, count).pipe(map((i) => Buffer.alloc(8 * 1024, i)));
  }

  @MessagePattern('wide-stream', smuxFeed({ bufferSize: 4 })) // 8 KiB items, 10 a millisecond, until cancelled
  wideStream(): Observable<Buffer> {
    return new Observable<Buffer>((subscriber) => {
      const timer = setInterval(() => {
        for (let i = 0; i < 10; i++) subscriber.next(Buffer.alloc(8 * 1024, ++wideProducer.emitted & 0xff));
      }, 1);
      return () => {
        wideProducer.stopped++;
        clearInterval(timer);
      };
    });
  }

  @MessagePattern('lossless') // the same values, not a feed
  lossless(@Payload() count: number): Observable<number> {
    return range(1, count);
  }
}

let handle: AppHandle;
let client: ClientSmux;

beforeAll(async () => {
  handle = await startApp({ controllers: [FeedController] });
  client = handle.client();
});
afterAll(closeAll);

describe('real-time feeds', () => {
  test('a caller that keeps up gets every item with seq 1, 2, 3 …, a timestamp, and no drops', async () => {
    const before = Date.now();
    const items = await lastValueFrom(client.send<SmuxFeedItem<number>>('ticks', 5).pipe(toArray()));
    expect(items.map((i) => [i.value, i.seq, i.dropped])).toEqual([
      [1, 1, 0],
      [2, 2, 0],
      [3, 3, 0],
      [4, 4, 0],
      [5, 5, 0],
    ]);
    for (const item of items) {
      expect(item.timestamp).toBeGreaterThanOrEqual(before - 50); // the server's clock, in epoch ms
      expect(item.timestamp).toBeLessThanOrEqual(Date.now() + 50);
    }
  });

  test('a caller that stops reading: the producer is never slowed, the server holds a bounded backlog, the newest items arrive and the gaps count the drops', async () => {
    const session = await rawSession(handle.port);
    const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, {}, { id: '1', pattern: 'firehose' }));
    call.channel.pause(); // the caller reads nothing: the stream's window fills up
    await until(() => producer.emitted >= 20_000, 10_000, 'the producer to run on'); // 20 MiB produced
    const serverStream = handle.sessions.at(-1)!;
    // What the server holds for this caller: the window it already sent (≤ 256 KiB), its queue (≤ 64 KiB) and the
    // ring of 16 items — not the 20 MiB produced.
    expect(serverStream.stats.bytesOut).toBeLessThan(1024 * 1024);
    call.channel.resume();
    await until(() => call.messages.length > 0 && call.messages.at(-1)!.seq! > 20_000, 10_000, 'the newest items');
    const seqs = call.messages.map((m) => m.seq!);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b)); // in order
    expect(seqs.at(-1)! - seqs.length).toBeGreaterThan(15_000); // most were dropped, and the gaps say so
    expect(call.messages.every((m) => (m.flags & Flag.FEED) !== 0 && typeof m.timestamp === 'number')).toBe(true);
    call.channel.destroy(); // cancel: the producer stops
    await until(() => producer.stopped, 5_000, 'the producer to be unsubscribed');
  });

  test('through ClientSmux: a slow subscriber sees gaps in seq and the running count of drops', async () => {
    let lastSeq = 0;
    let gaps = 0;
    let lastDropped = 0;
    const items = await within(
      lastValueFrom(
        client.send<SmuxFeedItem<Buffer>>('firehose', {}).pipe(
          map((item) => {
            if (item.seq !== lastSeq + 1) gaps++;
            lastSeq = item.seq;
            lastDropped = item.dropped;
            const until = Date.now() + 2; // a subscriber that blocks its event loop: the socket is not read meanwhile
            while (Date.now() < until);
            return item;
          }),
          take(300),
          toArray(),
        ),
      ),
      'the slow subscription',
      30_000,
    );
    expect(items).toHaveLength(300);
    expect(gaps).toBeGreaterThan(0);
    expect(lastDropped).toBe(lastSeq - 300);
    await until(() => producer.stopped, 5_000, 'the producer to be unsubscribed');
  });

  test.each([
    ['an async generator', 'generated', 3, [1, 2, 3]],
    ['an async generator behind an interceptor', 'intercepted', 3, [10, 20, 30]],
    ['a Readable', 'readable-feed', 0, ['a', 'b', 'c']],
    ['a plain value', 'single', 0, ['only']],
  ])('a feed handler returning %s: each value is a feed item', async (_kind, pattern, count, values) => {
    const items = await lastValueFrom(client.send<SmuxFeedItem>(pattern, count).pipe(toArray()));
    expect(items.map((i) => i.value)).toEqual(values);
    expect(items.map((i) => i.seq)).toEqual(values.map((_, i) => i + 1));
    expect(items.every((i) => i.dropped === 0 && typeof i.timestamp === 'number')).toBe(true);
  });

  test('an ordinary Observable reply is lossless whatever the pace', async () => {
    const values = await lastValueFrom(
      client.send<number>('lossless', 3_000).pipe(
        map((v) => {
          const until = Date.now() + (v % 500 === 0 ? 5 : 0);
          while (Date.now() < until);
          return v;
        }),
        toArray(),
      ),
    );
    expect(values).toEqual(Array.from({ length: 3_000 }, (_, i) => i + 1));
  });

  test('smuxFeed() refuses a bufferSize below 1', () => {
    expect(() => smuxFeed({ bufferSize: 0 })).toThrow(expect.objectContaining({ code: 'ERR_SMUX_INVALID_ARGUMENT' }));
  });
});

describe("real-time feeds and the server's reply bounds", () => {
  const budget = 256 * 1024;
  let bounded: AppHandle;
  beforeAll(async () => {
    bounded = await startApp({ controllers: [FeedController], server: { maxQueuedReplyBytes: budget, maxReplyBufferBytes: 4 * 1024 } });
  });

  test('items larger than maxReplyBufferBytes: a feed runs on (that bound is an Observable reply’s, which cannot wait)', async () => {
    const items = await lastValueFrom(bounded.client().send<SmuxFeedItem<Buffer>>('wide', 20).pipe(toArray()));
    expect(items.map((i) => i.value[0])).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(items.every((i) => i.dropped === 0)).toBe(true);
  });

  test("feeds that fill the connection's maxQueuedReplyBytes hold their items, dropping the oldest, instead of failing; once the caller reads they go on", async () => {
    const session = await rawSession(bounded.port);
    const feeds = 12; // each may queue its stream's 64 KiB once its window is full: 3 × the budget
    const calls = Array.from({ length: feeds }, () => rawCall(session, encodeMessage(Kind.REQUEST, 0, 0, { pattern: 'wide-stream' })));
    for (const call of calls) call.channel.pause(); // the caller reads nothing
    wideProducer.emitted = 0;
    wideProducer.stopped = 0;
    // 40 MiB produced: far beyond the windows (12 × 256 KiB), the queues (12 × 64 KiB) and the budget.
    await until(() => wideProducer.emitted >= 5_000, 20_000, 'the producers to run on');
    const serverSession = bounded.sessions.at(-1)!;
    expect(serverSession.stats.bytesOut).toBeLessThan(feeds * (256 + 64 + 64) * 1024); // bounded, not 40 MiB
    for (const call of calls) call.channel.resume();
    await until(() => calls.every((c) => c.messages.length > 0 && c.messages.at(-1)!.seq! > 400), 20_000, 'every feed to go on');
    for (const call of calls) {
      expect(call.messages.filter((m) => (m.flags & Flag.ERROR) !== 0)).toEqual([]); // no ERR_SMUX_LIMIT
      const seqs = call.messages.map((m) => m.seq!);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      expect(seqs.at(-1)! - seqs.length).toBeGreaterThan(0); // items were dropped while the caller did not read
    }
    for (const call of calls) call.channel.destroy(); // cancel: the producers stop
    await until(() => wideProducer.stopped === feeds, 5_000, 'the producers to be unsubscribed');
  });
});
