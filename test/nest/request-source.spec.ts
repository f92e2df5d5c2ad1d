/**
 * RequestSource on an in-memory session pair (no sockets, a fake clock): a streamed request's items go as DATA … END
 * on the call's endpoint, after its REQUEST. An Observable is subscribed at once and what it emits before the stream
 * opens waits in an outbox, bounded by maxBufferBytes (also what it queues on a stream the peer does not read); an
 * AsyncIterable is pulled only once attached, and only as the window allows; stop() releases the source; a source that
 * fails, or an item that cannot be encoded, fails the call. The other end is a CallEndpoint whose owner records the
 * messages it decodes.
 */
import { Readable } from 'node:stream';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Observable, of, Subject, type Subscriber, throwError } from 'rxjs';
import { SmuxError } from '../../lib/smux/index.js';
import { type CallMessage, encodeMessagePieces, Kind } from '../../lib/nest/call-codec.js';
import { type ByteCounter, CallEndpoint } from '../../lib/nest/call-endpoint.js';
import type { EndpointOwner } from '../../lib/nest/endpoint-owner.js';
import { RequestSource, type RequestSourceOwner } from '../../lib/nest/request-source.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';

let pair: ReturnType<typeof memorySessions> | undefined;
afterEach(() => {
  pair?.close();
  pair = undefined;
});

const KiB = 1024;
const PREFIX = 8; // a message's prefix: a DATA of a string or bytes without fields is these bytes and the body

/** The call, as the source sees it: `fail()` ends it (as the client's call does), and every failure is kept. */
class Owner implements RequestSourceOwner {
  over = false;
  readonly failures: unknown[] = [];
  done(): boolean {
    return this.over;
  }
  fail(error: unknown): void {
    this.failures.push(error);
    this.over = true;
  }
}

/** The server's end: the messages it decoded; `seen` lists them as [kind, body] (a read error too, so it shows). */
class Peer implements EndpointOwner {
  readonly messages: CallMessage[] = [];
  readonly readErrors: SmuxError[] = [];
  onMessage(message: CallMessage): void {
    this.messages.push(message);
  }
  onReadError(error: SmuxError): void {
    this.readErrors.push(error);
  }
  onPeerEnd(): void {}
  onClosed(): void {}
  get seen(): Array<[string, unknown?]> {
    const seen = this.messages.map((m): [string, unknown?] => {
      if (m.kind === Kind.REQUEST) return ['REQUEST', m.body];
      if (m.kind === Kind.DATA) return ['DATA', m.body];
      if (m.kind === Kind.END) return ['END'];
      return [`kind ${m.kind}`, m.body];
    });
    return [...seen, ...this.readErrors.map((e): [string, unknown?] => ['READ ERROR', e.message])];
  }
  get ended(): boolean {
    return this.messages.some((m) => m.kind === Kind.END);
  }
  get dataCount(): number {
    return this.messages.filter((m) => m.kind === Kind.DATA).length;
  }
}

const quietOwner: EndpointOwner = { onMessage() {}, onReadError() {}, onPeerEnd() {}, onClosed() {} };

interface Rig {
  /** The client's end of the call, where the source writes. */
  endpoint: CallEndpoint;
  /** What the client's end wrote (the REQUEST included). */
  sent: ByteCounter;
  /** The server's end. */
  peer: Peer;
  peerEndpoint: CallEndpoint;
  requestBytes: number;
}

/** A call's stream, open, with its REQUEST written and delivered (as the client's call does before attach()). */
async function openCall(): Promise<Rig> {
  pair = memorySessions();
  const peer = new Peer();
  let peerEndpoint: CallEndpoint | null = null;
  pair.server.on('channel', (channel) => (peerEndpoint = new CallEndpoint(channel, 1 << 20, peer, 'server')));
  const sent: ByteCounter = { bytesSent: 0, bytesReceived: 0 };
  const endpoint = new CallEndpoint(pair.client.openChannel(), 1 << 20, quietOwner, 'client', true, null, sent);
  const request = encodeMessagePieces(Kind.REQUEST, 0, 'request');
  endpoint.write(request);
  await settle(() => peer.messages.length === 1, 'the REQUEST to arrive');
  if (peerEndpoint === null) throw new Error('the server saw no stream');
  return { endpoint, sent, peer, peerEndpoint, requestBytes: request.reduce((n, piece) => n + piece.length, 0) };
}

/** Lets the event loop turn until `predicate` holds (at most `turns` turns). */
async function settle(predicate: () => boolean, what: string, turns = 1000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (predicate()) return;
    await flush(1);
  }
  throw new Error(`after ${turns} turns, still waiting for ${what}`);
}

function limitError(owner: Owner): SmuxError {
  expect(owner.failures).toHaveLength(1);
  const [error] = owner.failures;
  expect(error).toBeInstanceOf(SmuxError);
  expect((error as SmuxError).code).toBe('ERR_SMUX_LIMIT');
  return error as SmuxError;
}

/** An Observable that records its subscriber and its teardown. */
function manual<T>(): { source: Observable<T>; subscriber: () => Subscriber<T>; tornDown: () => boolean } {
  let subscriber: Subscriber<T> | null = null;
  let tornDown = false;
  const source = new Observable<T>((s) => {
    subscriber = s;
    return () => (tornDown = true);
  });
  return {
    source,
    subscriber: () => {
      if (subscriber === null) throw new Error('not subscribed');
      return subscriber;
    },
    tornDown: () => tornDown,
  };
}

describe('RequestSource: an Observable', () => {
  test('items emitted before attach wait in the outbox (nothing is written); after attach they go in order, then END on completion', async () => {
    const { endpoint, sent, peer, requestBytes } = await openCall();
    const owner = new Owner();
    const items = new Subject<unknown>();
    const source = new RequestSource(items, owner, 1 << 20);
    items.next('one');
    items.next({ two: 2 });
    items.next(Buffer.from([3]));
    await flush(8);
    expect(sent.bytesSent).toBe(requestBytes); // nothing but the REQUEST was written
    expect(peer.seen).toEqual([['REQUEST', 'request']]);

    source.attach(endpoint);
    items.next('four');
    items.complete();
    await settle(() => peer.ended, 'the END');
    expect(peer.seen).toEqual([
      ['REQUEST', 'request'],
      ['DATA', 'one'],
      ['DATA', { two: 2 }],
      ['DATA', Buffer.from([3])],
      ['DATA', 'four'],
      ['END'],
    ]);
    expect(owner.failures).toEqual([]);
  });

  test('a cold Observable that completes before attach: its items and its END all wait in the outbox', async () => {
    const { endpoint, sent, peer, requestBytes } = await openCall();
    const owner = new Owner();
    const source = new RequestSource(of(1, 2, 3), owner, 1 << 20);
    await flush(8);
    expect(sent.bytesSent).toBe(requestBytes);
    source.attach(endpoint);
    await settle(() => peer.ended, 'the END');
    expect(peer.seen).toEqual([['REQUEST', 'request'], ['DATA', 1], ['DATA', 2], ['DATA', 3], ['END']]);
    expect(owner.failures).toEqual([]);
  });

  test('more than maxBufferBytes emitted before attach fails the call with ERR_SMUX_LIMIT naming maxSourceBufferBytes (exactly the limit does not)', () => {
    const owner = new Owner();
    const items = new Subject<string>();
    const item = 'x'.repeat(50 - PREFIX); // 50 bytes on the wire
    new RequestSource(items, owner, 100);
    items.next(item);
    items.next(item); // 100 bytes in the outbox: at the limit, not beyond
    expect(owner.failures).toEqual([]);
    items.next(item);
    const error = limitError(owner);
    expect(error.message).toMatch(/maxSourceBufferBytes 100\b/);
    expect(error.message).toMatch(/\b150 bytes\b/);
  });

  test('a source that emits beyond the limit while it is subscribed is unsubscribed at once (its teardown runs)', () => {
    const owner = new Owner();
    let tornDown = false;
    let emitted = 0;
    const source = new Observable<Buffer>((subscriber) => {
      for (let i = 0; i < 4 && !subscriber.closed; i++) {
        subscriber.next(Buffer.alloc(KiB));
        emitted++;
      }
      return () => (tornDown = true);
    });
    new RequestSource(source, owner, 2 * KiB);
    limitError(owner);
    expect(emitted).toBe(4); // a synchronous source runs to its end inside subscribe() …
    expect(tornDown).toBe(true); // … and is unsubscribed right after, the call being over
  });

  test('after attach, bytes queued on a stream the peer does not read beyond maxBufferBytes fail the call with ERR_SMUX_LIMIT', async () => {
    const { endpoint, peerEndpoint } = await openCall();
    peerEndpoint.pause(); // the peer stops reading: its window closes once full
    const owner = new Owner();
    const items = new Subject<Buffer>();
    const limit = 64 * KiB;
    const source = new RequestSource(items, owner, limit);
    source.attach(endpoint);
    let emitted = 0;
    for (let i = 0; i < 64 && owner.failures.length === 0; i++) {
      items.next(Buffer.alloc(16 * KiB, i));
      emitted += PREFIX + 16 * KiB;
      await flush(2);
    }
    const error = limitError(owner);
    expect(error.message).toMatch(new RegExp(`maxSourceBufferBytes ${limit}\\b`));
    expect(emitted).toBeGreaterThan(limit); // what the window took did not count: only what is queued does
    const queued = Number(/got (\d+) bytes/.exec(error.message)?.[1]);
    expect(queued).toBeGreaterThan(limit);
    expect(queued).toBeLessThan(emitted);
  });

  test('while the peer reads, an Observable may send far more than maxBufferBytes in all', async () => {
    const { endpoint, peer } = await openCall();
    const owner = new Owner();
    const items = new Subject<Buffer>();
    const source = new RequestSource(items, owner, 64 * KiB);
    source.attach(endpoint);
    for (let i = 0; i < 32; i++) {
      items.next(Buffer.alloc(16 * KiB, i)); // 512 KiB in all
      await settle(() => endpoint.writableLength === 0, 'the queue to drain');
    }
    items.complete();
    await settle(() => peer.ended, 'the END');
    expect(owner.failures).toEqual([]);
    expect(peer.dataCount).toBe(32);
  });

  test('an Observable that errors fails the call with its error, before attach and after', async () => {
    const early = new Owner();
    const boom = new Error('boom');
    new RequestSource(
      throwError(() => boom),
      early,
      1 << 20,
    );
    expect(early.failures).toEqual([boom]);

    const { endpoint, peer } = await openCall();
    const late = new Owner();
    const items = new Subject<string>();
    const source = new RequestSource(items, late, 1 << 20);
    source.attach(endpoint);
    items.next('a');
    const bang = new Error('bang');
    items.error(bang);
    expect(late.failures).toHaveLength(1);
    expect(late.failures[0]).toBe(bang);
    await flush(8);
    expect(peer.seen).toEqual([
      ['REQUEST', 'request'],
      ['DATA', 'a'],
    ]); // no END after an error
  });

  test('stop() before attach unsubscribes it (its teardown runs), and what it had emitted is never written', async () => {
    const { endpoint, sent, peer, requestBytes } = await openCall();
    const owner = new Owner();
    const { source: items, subscriber, tornDown } = manual<string>();
    const source = new RequestSource(items, owner, 1 << 20);
    subscriber().next('kept in the outbox');
    expect(tornDown()).toBe(false);
    source.stop();
    expect(tornDown()).toBe(true);
    expect(subscriber().closed).toBe(true);
    source.attach(endpoint); // a stopped source has nothing to send, even if attached
    await flush(8);
    expect(sent.bytesSent).toBe(requestBytes);
    expect(peer.seen).toEqual([['REQUEST', 'request']]);
  });

  test('stop() after attach unsubscribes it, and nothing more is written', async () => {
    const { endpoint, sent, peer } = await openCall();
    const owner = new Owner();
    const { source: items, subscriber, tornDown } = manual<string>();
    const source = new RequestSource(items, owner, 1 << 20);
    source.attach(endpoint);
    subscriber().next('a');
    await settle(() => peer.dataCount === 1, 'the first item');
    const before = sent.bytesSent;
    source.stop();
    expect(tornDown()).toBe(true);
    subscriber().next('b'); // a closed subscriber: dropped
    subscriber().complete();
    await flush(8);
    expect(sent.bytesSent).toBe(before);
    expect(peer.seen).toEqual([
      ['REQUEST', 'request'],
      ['DATA', 'a'],
    ]);
  });

  test('once owner.done() is true, later items and the END are not sent', async () => {
    const { endpoint, sent, peer } = await openCall();
    const owner = new Owner();
    const items = new Subject<string>();
    const source = new RequestSource(items, owner, 1 << 20);
    source.attach(endpoint);
    items.next('a');
    await settle(() => peer.dataCount === 1, 'the first item');
    const before = sent.bytesSent;
    owner.over = true;
    items.next('b');
    items.complete();
    await flush(8);
    expect(sent.bytesSent).toBe(before);
    expect(peer.seen).toEqual([
      ['REQUEST', 'request'],
      ['DATA', 'a'],
    ]);
  });

  test('a call already over when the source is made: the Observable is unsubscribed at once', () => {
    const owner = new Owner();
    owner.over = true;
    const { source, tornDown } = manual<string>();
    new RequestSource(source, owner, 1 << 20);
    expect(tornDown()).toBe(true);
  });

  test('an item that cannot be encoded (a BigInt, a cycle) fails the call with ERR_SMUX_ENCODING; it is not written', async () => {
    const early = new Owner();
    new RequestSource(of({ n: 1n }), early, 1 << 20);
    expect(early.failures).toHaveLength(1);
    expect((early.failures[0] as SmuxError).code).toBe('ERR_SMUX_ENCODING');

    const { endpoint, sent, peer } = await openCall();
    const late = new Owner();
    const items = new Subject<unknown>();
    const source = new RequestSource(items, late, 1 << 20);
    source.attach(endpoint);
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    const before = sent.bytesSent;
    items.next(cycle);
    expect(late.failures).toHaveLength(1);
    expect(late.failures[0]).toBeInstanceOf(SmuxError);
    expect((late.failures[0] as SmuxError).code).toBe('ERR_SMUX_ENCODING');
    await flush(8);
    expect(sent.bytesSent).toBe(before);
    expect(peer.seen).toEqual([['REQUEST', 'request']]);
  });
});

describe('RequestSource: an AsyncIterable', () => {
  test('an async generator is not touched before attach; after it, it is pulled: DATA items, then END', async () => {
    const { endpoint, sent, peer, requestBytes } = await openCall();
    const owner = new Owner();
    const pulls: number[] = [];
    async function* items(): AsyncGenerator<string> {
      pulls.push(0); // the body runs on the first next()
      for (let i = 1; i <= 3; i++) {
        yield `item ${i}`;
        pulls.push(i);
      }
    }
    const source = new RequestSource(items(), owner, 1 << 20);
    await flush(8);
    expect(pulls).toEqual([]);
    expect(sent.bytesSent).toBe(requestBytes);

    source.attach(endpoint);
    await settle(() => peer.ended, 'the END');
    expect(pulls).toEqual([0, 1, 2, 3]);
    expect(peer.seen).toEqual([['REQUEST', 'request'], ['DATA', 'item 1'], ['DATA', 'item 2'], ['DATA', 'item 3'], ['END']]);
    expect(owner.failures).toEqual([]);
  });

  test('a Readable is pulled after attach: its items, then END', async () => {
    const { endpoint, peer } = await openCall();
    const owner = new Owner();
    const source = new RequestSource(Readable.from([1, 'two', { three: 3 }]), owner, 1 << 20);
    source.attach(endpoint);
    await settle(() => peer.ended, 'the END');
    expect(peer.seen).toEqual([['REQUEST', 'request'], ['DATA', 1], ['DATA', 'two'], ['DATA', { three: 3 }], ['END']]);
    expect(owner.failures).toEqual([]);
  });

  test('it is pulled only as the window allows: a peer that does not read holds it back; once it reads, all of it arrives, then END (maxBufferBytes, the bound of an Observable, which cannot wait, does not apply)', async () => {
    const { endpoint, peer, peerEndpoint } = await openCall();
    peerEndpoint.pause();
    const owner = new Owner();
    const total = 64; // 1 MiB: sixteen times the window
    let pulled = 0;
    async function* items(): AsyncGenerator<Buffer> {
      for (let i = 0; i < total; i++) {
        pulled++;
        yield Buffer.alloc(16 * KiB, i);
      }
    }
    const source = new RequestSource(items(), owner, 16 * KiB); // less than the window holds back
    source.attach(endpoint);
    await flush(20);
    const held = pulled;
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThan(total / 2);
    await flush(20);
    expect(pulled).toBe(held); // waiting for the window, not pulling on
    expect(peer.ended).toBe(false);

    peerEndpoint.resume();
    await settle(() => peer.ended, 'the END');
    expect(pulled).toBe(total);
    const data = peer.messages.filter((m) => m.kind === Kind.DATA).map((m) => (m.body as Buffer)[0]);
    expect(data).toEqual(Array.from({ length: total }, (_, i) => i));
    expect(owner.failures).toEqual([]);
  });

  test('a generator that throws fails the call with its error (no END)', async () => {
    const { endpoint, peer } = await openCall();
    const owner = new Owner();
    const boom = new Error('boom');
    async function* items(): AsyncGenerator<string> {
      yield 'a';
      throw boom;
    }
    const source = new RequestSource(items(), owner, 1 << 20);
    source.attach(endpoint);
    await settle(() => owner.failures.length > 0, 'the failure');
    expect(owner.failures).toEqual([boom]);
    await flush(8);
    expect(peer.seen).toEqual([
      ['REQUEST', 'request'],
      ['DATA', 'a'],
    ]);
  });

  test('an item that cannot be encoded (a cycle) fails the call with ERR_SMUX_ENCODING', async () => {
    const { endpoint, peer } = await openCall();
    const owner = new Owner();
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    async function* items(): AsyncGenerator<unknown> {
      yield 'a';
      yield cycle;
      yield 'never sent';
    }
    const source = new RequestSource(items(), owner, 1 << 20);
    source.attach(endpoint);
    await settle(() => owner.failures.length > 0, 'the failure');
    expect(owner.failures).toHaveLength(1);
    expect((owner.failures[0] as SmuxError).code).toBe('ERR_SMUX_ENCODING');
    await flush(8);
    expect(peer.seen).toEqual([
      ['REQUEST', 'request'],
      ['DATA', 'a'],
    ]);
  });

  test('once owner.done() is true it is not pulled on, and nothing more is sent', async () => {
    const { endpoint, sent, peer } = await openCall();
    const owner = new Owner();
    let open = (): void => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let pulls = 0;
    async function* items(): AsyncGenerator<string> {
      pulls++;
      yield 'a';
      await gate;
      pulls++;
      yield 'b';
      pulls++;
      yield 'c';
    }
    const source = new RequestSource(items(), owner, 1 << 20);
    source.attach(endpoint);
    await settle(() => peer.dataCount === 1, 'the first item');
    const before = sent.bytesSent;
    owner.over = true;
    open();
    await flush(8);
    expect(pulls).toBe(2); // 'b' was taken (next() was pending) but not sent, and nothing after it pulled
    expect(sent.bytesSent).toBe(before);
    expect(peer.seen).toEqual([
      ['REQUEST', 'request'],
      ['DATA', 'a'],
    ]);
  });

  test('stop() before attach destroys a Readable', () => {
    const readable = Readable.from(['a', 'b']);
    const source = new RequestSource(readable, new Owner(), 1 << 20);
    expect(readable.destroyed).toBe(false);
    source.stop();
    expect(readable.destroyed).toBe(true);
  });

  test('stop() before attach return()s an iterator: a generator is closed without its body ever running', async () => {
    let returned = 0;
    let nexts = 0;
    const iterable: AsyncIterable<number> = {
      [Symbol.asyncIterator]: () => ({
        next: () => Promise.resolve({ done: false, value: ++nexts }),
        return: () => {
          returned++;
          return Promise.resolve({ done: true, value: undefined });
        },
      }),
    };
    const plain = new RequestSource(iterable, new Owner(), 1 << 20);
    expect(returned).toBe(0);
    plain.stop();
    await flush(2);
    expect(returned).toBe(1);
    expect(nexts).toBe(0);

    let started = false;
    async function* items(): AsyncGenerator<string> {
      started = true;
      yield 'a';
    }
    const generator = items();
    const source = new RequestSource(generator, new Owner(), 1 << 20);
    source.stop();
    await flush(2);
    expect(await generator.next()).toEqual({ done: true, value: undefined }); // closed: return() ran
    expect(started).toBe(false);
  });

  test('stop() after attach, while the pull waits for the window: the generator returns (its finally runs), nothing more is written', async () => {
    const { endpoint, sent, peer, peerEndpoint } = await openCall();
    peerEndpoint.pause();
    const owner = new Owner();
    let finallyRan = false;
    let pulled = 0;
    async function* items(): AsyncGenerator<Buffer> {
      try {
        for (let i = 0; i < 64; i++) {
          pulled++;
          yield Buffer.alloc(16 * KiB, i);
        }
      } finally {
        finallyRan = true;
      }
    }
    const source = new RequestSource(items(), owner, 16 * KiB); // less than the window holds back
    source.attach(endpoint);
    await flush(20);
    const held = pulled;
    expect(held).toBeLessThan(64); // held back by the window
    const written = sent.bytesSent;
    source.stop();
    await settle(() => finallyRan, "the generator's finally");

    peerEndpoint.resume(); // the window opens: a live pull would go on now
    await settle(() => peer.dataCount === held, 'what was written before stop()');
    await flush(20);
    expect(pulled).toBe(held);
    expect(sent.bytesSent).toBe(written);
    expect(peer.dataCount).toBe(held);
    expect(peer.ended).toBe(false);
    expect(owner.failures).toEqual([]);
  });
});
