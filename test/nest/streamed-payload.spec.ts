/**
 * SmuxStreamedPayload on its own, fed as the server feeds it (pushToPayload / endPayload / failPayload) with a
 * recording InputFlow in place of the call's endpoint: what it holds and when it pauses and resumes reading, how a
 * subscription's end and an iterator's `return()` stop reading, and that a payload is read once. Its per-call objects
 * are shared functions and small classes (docs/NOTES.md, heap per held call); these pin down what they do.
 */
import { describe, expect, test } from '@jest/globals';
import { map, take } from 'rxjs';
import { endPayload, failPayload, type InputFlow, pushToPayload, SmuxStreamedPayload } from '../../lib/nest/streamed-input.js';

/** An InputFlow that records what the payload asks of it. */
function recordingFlow() {
  const calls: string[] = [];
  const flow: InputFlow & { calls: string[]; held: number } = {
    calls,
    held: 0,
    pause: () => void calls.push('pause'),
    resume: () => void calls.push('resume'),
    stopReading: () => void calls.push('stopReading'),
    hold: (bytes) => void (flow.held = bytes),
  };
  return flow;
}

function payloadWith(...items: unknown[]) {
  const flow = recordingFlow();
  const payload = new SmuxStreamedPayload(flow);
  for (const item of items) pushToPayload(payload, item, 10);
  return { flow, payload };
}

describe('SmuxStreamedPayload: held items', () => {
  test('a held byte item is a copy when it is a small part of the read it came in, the item itself otherwise', async () => {
    const small = Buffer.alloc(64 * 1024, 1).subarray(10, 20); // 10 bytes of a 64 KiB read
    const large = Buffer.alloc(1_000, 2).subarray(0, 900);
    const { payload } = payloadWith(small, large);
    const iterator = payload[Symbol.asyncIterator]();
    const first = (await iterator.next()).value as Buffer;
    expect(first.equals(small)).toBe(true);
    expect(first.buffer).not.toBe(small.buffer); // held as a view, it kept the 64 KiB read alive
    expect(first.buffer.byteLength).toBe(10);
    expect((await iterator.next()).value).toBe(large);
  });

  test('it pauses reading at 32 held items and resumes once fewer than 16 are left as the iterator takes them', async () => {
    const { flow, payload } = payloadWith(...Array.from({ length: 31 }, (_, i) => i));
    expect(flow.calls).toEqual([]);
    expect(flow.held).toBe(310);
    pushToPayload(payload, 31, 10);
    expect(flow.calls).toEqual(['pause']);
    const iterator = payload[Symbol.asyncIterator]();
    for (let i = 0; i < 16; i++) expect(await iterator.next()).toEqual({ done: false, value: i });
    expect(flow.calls).toEqual(['pause']); // 16 left
    expect(await iterator.next()).toEqual({ done: false, value: 16 });
    expect(flow.calls).toEqual(['pause', 'resume']);
    expect(flow.held).toBe(150);
  });

  test('held items, then END: a late iterator takes them in order, then is done; a late subscriber gets them, then completes', async () => {
    const taken: unknown[] = [];
    const late = payloadWith('a', 'b');
    endPayload(late.payload);
    for await (const item of late.payload) taken.push(item);
    expect(taken).toEqual(['a', 'b']);
    expect(late.flow.held).toBe(0);

    const seen: unknown[] = [];
    const subscribed = payloadWith('a', 'b');
    endPayload(subscribed.payload);
    subscribed.payload.subscribe({ next: (item) => seen.push(item), complete: () => seen.push('complete') });
    expect(seen).toEqual(['a', 'b', 'complete']);
    expect(subscribed.flow.held).toBe(0);
    expect(subscribed.flow.calls).toEqual([]); // it ended: nothing to resume or stop
  });

  test("held items reach a subscriber before live ones; the caller's failure errors it and drops what is held", () => {
    const { flow, payload } = payloadWith(1, 2);
    const seen: unknown[] = [];
    payload.pipe(map((n) => (n as number) * 10)).subscribe({ next: (n) => seen.push(n), error: (e: unknown) => seen.push(e) });
    expect(flow.calls).toEqual(['resume']);
    expect(flow.held).toBe(0);
    pushToPayload(payload, 3, 10);
    failPayload(payload, 'gone');
    pushToPayload(payload, 4, 10);
    expect(seen).toEqual([10, 20, 30, 'gone']);
  });
});

describe('SmuxStreamedPayload: the handler stops reading', () => {
  test('a subscription that ends before END (take, unsubscribe) stops reading once; one that ends after END does not', () => {
    const early = payloadWith();
    const seen: unknown[] = [];
    early.payload.pipe(take(2)).subscribe((n) => seen.push(n));
    pushToPayload(early.payload, 'a', 10);
    expect(early.flow.calls).toEqual(['resume']);
    pushToPayload(early.payload, 'b', 10);
    expect(early.flow.calls).toEqual(['resume', 'stopReading']);
    expect(seen).toEqual(['a', 'b']);

    const manual = payloadWith();
    const subscription = manual.payload.subscribe(() => undefined);
    subscription.unsubscribe();
    subscription.unsubscribe();
    expect(manual.flow.calls).toEqual(['resume', 'stopReading']);

    const ended = payloadWith();
    const completed = ended.payload.subscribe(() => undefined);
    endPayload(ended.payload);
    expect(completed.closed).toBe(true);
    expect(ended.flow.calls).toEqual(['resume']);
  });

  test("a for await that breaks stops reading and drops the held items; the iterator's return() is done with its value", async () => {
    const { flow, payload } = payloadWith('a', 'b', 'c');
    for await (const item of payload) if (item === 'a') break;
    expect(flow.calls).toEqual(['resume', 'stopReading']); // fewer than 16 held after the first: reading resumes
    expect(flow.held).toBe(0);

    const other = payloadWith('a');
    const iterator = other.payload[Symbol.asyncIterator]();
    await expect(iterator.return!('v')).resolves.toEqual({ done: true, value: 'v' });
    await expect(iterator.next()).resolves.toEqual({ done: true, value: undefined });
    expect(other.payload.ended).toBe(true);
  });

  test('an iterator waiting for an item gets the next one pushed, or the failure', async () => {
    const { payload } = payloadWith();
    const iterator = payload[Symbol.asyncIterator]();
    const first = iterator.next();
    pushToPayload(payload, 'x', 10);
    await expect(first).resolves.toEqual({ done: false, value: 'x' });
    const second = iterator.next();
    failPayload(payload, new Error('cancelled'));
    await expect(second).rejects.toThrow('cancelled');
  });

  test('a payload is read once: a second subscription or iteration fails with ERR_SMUX_INVALID_ARGUMENT', () => {
    const { payload } = payloadWith();
    payload.subscribe(() => undefined);
    let failure: unknown = null;
    payload.subscribe({ error: (error: unknown) => (failure = error) });
    expect(failure).toMatchObject({ code: 'ERR_SMUX_INVALID_ARGUMENT' });
    expect(() => payload[Symbol.asyncIterator]()).toThrow(expect.objectContaining({ code: 'ERR_SMUX_INVALID_ARGUMENT' }));
  });
});
