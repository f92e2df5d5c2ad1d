/**
 * A session's graceful close on its own (graceful-close.ts): a fake host records what the close asks of the writer,
 * the socket and the session, and a FakeClock fires the one timer by hand. No sockets, no sleeps.
 */
import { describe, expect, test } from '@jest/globals';
import { SmuxError } from '../../lib/smux/errors.js';
import { GracefulClose, type GracefulCloseHost } from '../../lib/smux/graceful-close.js';
import type { FrameWriter } from '../../lib/smux/writer.js';
import { FakeClock } from '../helpers/fake-clock.js';

const TIMEOUT = 5_000;

/** The session as the close sees it; every call lands in one log, so the order across objects shows. */
class Host implements GracefulCloseHost {
  readonly log: string[] = [];
  readonly destroyed: Array<SmuxError | undefined> = [];
  windowBound = false;
  readonly clock = new FakeClock();
  readonly fakeWriter = {
    blocked: false,
    pending: false,
    flush: () => void this.log.push('writer.flush'),
    close: () => void this.log.push('writer.close'),
  };
  readonly writer = this.fakeWriter as unknown as FrameWriter;
  readonly socket = {
    end: () => void this.log.push('socket.end'),
    unref: () => void this.log.push('socket.unref'),
  };

  windowBoundData(): boolean {
    return this.windowBound;
  }
  stopWriting(): void {
    this.log.push('stopWriting');
  }
  readToEnd(): void {
    this.log.push('readToEnd');
  }
  dropUnread(): void {
    this.log.push('dropUnread');
  }
  destroy(error?: SmuxError): void {
    this.log.push('destroy');
    this.destroyed.push(error);
  }
}

/** Whether `promise` settled by the next turn of the event loop (microtasks, `then` chains included, run first). */
function settles(promise: Promise<void>): Promise<boolean> {
  return Promise.race([promise.then(() => true), new Promise<boolean>((resolve) => setImmediate(() => resolve(false)))]);
}

/** What ending the connection writes to the log, in the order that matters: nothing may be written after FIN. */
const END = ['writer.close', 'stopWriting', 'socket.end'];

describe('GracefulClose', () => {
  test('construction flushes and arms one timer; with nothing pending it ends at once, exactly once', () => {
    const host = new Host();
    const close = new GracefulClose(host, TIMEOUT);
    expect(host.log).toEqual(['writer.flush', ...END]);
    expect(host.clock.pending).toBe(1);
    close.maybeEnd(); // e.g. the writer drained again after the end: a second FIN must not follow
    close.maybeEnd();
    expect(host.log).toEqual(['writer.flush', ...END]);
    // The timer is the given timeout, not shorter (still armed once ended: it also bounds the peer's close).
    host.clock.advance(TIMEOUT - 1);
    expect(host.destroyed).toEqual([]);
    host.clock.advance(1);
    expect(host.destroyed).toHaveLength(1);
  });

  test('maybeEnd() waits while the writer has frames pending, is blocked, or data waits behind a window', () => {
    const host = new Host();
    host.fakeWriter.pending = true;
    host.fakeWriter.blocked = true;
    host.windowBound = true;
    const close = new GracefulClose(host, TIMEOUT);
    // Clear the conditions one at a time: each one left alone must hold the end back.
    for (const clear of [() => (host.fakeWriter.pending = false), () => (host.fakeWriter.blocked = false)]) {
      clear();
      close.maybeEnd();
      expect(host.log).toEqual(['writer.flush']);
    }
    host.fakeWriter.pending = true; // only windowBoundData() false, the others true
    host.fakeWriter.blocked = true;
    host.windowBound = false;
    close.maybeEnd();
    expect(host.log).toEqual(['writer.flush']);
    host.fakeWriter.pending = false; // blocked alone
    close.maybeEnd();
    expect(host.log).toEqual(['writer.flush']);
    host.fakeWriter.blocked = false;
    close.maybeEnd();
    expect(host.log).toEqual(['writer.flush', ...END]);
  });

  test('done resolves on halfClosed(), not on socket.end(); then it lingers, unrefs the socket and reads to the end', async () => {
    const host = new Host();
    const close = new GracefulClose(host, TIMEOUT);
    expect(host.log).toContain('socket.end');
    // end() only queued our FIN; 'finish' (halfClosed) says it reached the kernel.
    expect(await settles(close.done)).toBe(false);
    expect(close.lingering).toBe(false);
    close.halfClosed();
    expect(close.lingering).toBe(true);
    expect(await settles(close.done)).toBe(true);
    expect(host.log).toEqual(['writer.flush', ...END, 'socket.unref', 'readToEnd']);
    expect(host.destroyed).toEqual([]);
  });

  test('the timer before halfClosed() destroys with ERR_SMUX_TIMEOUT', () => {
    const host = new Host();
    host.fakeWriter.pending = true; // the flush never finishes
    new GracefulClose(host, TIMEOUT);
    host.clock.advance(TIMEOUT);
    expect(host.destroyed).toHaveLength(1);
    expect(host.destroyed[0]).toBeInstanceOf(SmuxError);
    expect(host.destroyed[0]?.code).toBe('ERR_SMUX_TIMEOUT');
  });

  test('the timer after halfClosed() destroys without an error: a peer that never closes is cut off quietly', () => {
    const host = new Host();
    const close = new GracefulClose(host, TIMEOUT);
    close.halfClosed();
    host.clock.advance(TIMEOUT);
    expect(host.destroyed).toHaveLength(1);
    expect(host.destroyed[0]).toBeUndefined();
  });

  test('lingering with the budget spent: the stream holding the most is dropped once nothing was read for 1 s, not before', () => {
    const host = new Host();
    const close = new GracefulClose(host, TIMEOUT);
    close.budgetSpent(); // not lingering yet: reading is held as in an open session, nothing is dropped
    expect(host.clock.pending).toBe(1);
    close.halfClosed();
    host.log.length = 0;
    close.budgetSpent();
    close.budgetSpent(); // one wait at a time
    expect(host.clock.pending).toBe(2);
    host.clock.advance(900);
    close.budgetMoved(); // the application read some: a slow reader is not cut
    close.budgetSpent(); // and the budget is spent again
    host.clock.advance(900);
    expect(host.log).toEqual([]);
    host.clock.advance(100); // 1 s without a read
    expect(host.log).toEqual(['dropUnread']);
    close.budgetSpent(); // spent again by another stream: a new wait
    close.ended();
    expect(host.clock.pending).toBe(0); // both timers cleared
    host.clock.advance(10 * TIMEOUT);
    expect(host.log).toEqual(['dropUnread']);
  });

  test('ended() clears the timer and resolves done without halfClosed(); twice is harmless', async () => {
    const host = new Host();
    host.fakeWriter.blocked = true; // the close never gets as far as end(), let alone halfClosed()
    const close = new GracefulClose(host, TIMEOUT);
    expect(host.clock.pending).toBe(1);
    close.ended(); // destroyed by the peer or the owner meanwhile
    expect(host.clock.pending).toBe(0);
    close.ended();
    expect(host.clock.pending).toBe(0);
    expect(await settles(close.done)).toBe(true);
    host.clock.advance(10 * TIMEOUT); // nothing left to fire: no second destroy of an ended session
    expect(host.destroyed).toEqual([]);
    expect(close.lingering).toBe(false);
    expect(host.log).toEqual(['writer.flush']);
  });
});
