/**
 * StreamRefusals (the session's refused ids): the order queue beside the IdTable. refusal.spec.ts drives the
 * same rules through a raw TCP peer; here the bookkeeping under churn — ids whose first frame came stay behind in
 * the queue until it is compacted, and eviction must still go oldest first.
 */
import { describe, expect, test } from '@jest/globals';
import { validateConfig } from '../../lib/smux/config.js';
import { REFUSED_WAITING_MAX, StreamRefusals } from '../../lib/smux/stream-refusals.js';

function refusals(config: Parameters<typeof validateConfig>[0] = {}): { refusals: StreamRefusals; fins: number[] } {
  const fins: number[] = [];
  return { refusals: new StreamRefusals(validateConfig(config), { queueFin: (id) => void fins.push(id) }), fins };
}

describe('StreamRefusals', () => {
  test('each refused id gets one FIN when its first frame comes; after much churn the oldest waiting go first', () => {
    const { refusals: r, fins } = refusals();
    const kept: number[] = []; // every 100th id never sends a frame: it waits through the churn (and compactions)
    for (let i = 0, id = 1; i < 10_000; i++, id += 2) {
      r.refuse(id);
      if (i % 100 === 0) kept.push(id);
      else {
        r.unknownStream(id); // its first frame: the FIN goes now
        r.unknownStream(id); // a later frame: nothing more
      }
    }
    expect([r.count, fins.length, new Set(fins).size]).toEqual([10_000, 9_900, 9_900]);
    // The bound evicts the oldest waiting ids, in order: the kept ones, then the new ones.
    fins.length = 0;
    const more = Array.from({ length: REFUSED_WAITING_MAX + 10 }, (_, i) => 30_001 + 2 * i);
    for (const id of more) r.refuse(id);
    expect(fins).toEqual([...kept, ...more.slice(0, 10)]); // 100 + 1 034 waiting, 1 024 kept
  });

  test('a waiting id refused again is evicted once', () => {
    const { refusals: r, fins } = refusals();
    r.refuse(1);
    r.refuse(1); // a duplicate SYN of a refused id
    for (let i = 0; i < REFUSED_WAITING_MAX; i++) r.refuse(3 + 2 * i);
    expect(fins).toEqual([1]);
    r.unknownStream(1);
    expect(fins).toEqual([1]);
  });

  test('without waitForOpenerData the FIN goes at once; past maxRefusedStreams in a row refuseOverLimit says stop', () => {
    const { refusals: r, fins } = refusals({ waitForOpenerData: false, maxRefusedStreams: 2 });
    expect([r.refuseOverLimit(1), r.refuseOverLimit(3), r.refuseOverLimit(5)]).toEqual([true, true, false]);
    expect(fins).toEqual([1, 3]);
    r.accepted(); // the run ends
    expect(r.refuseOverLimit(7)).toBe(true);
  });
});

describe('StreamRefusals with ids reused by the peer', () => {
  test('an id refused again after its first frame came keeps one live entry: eviction skips the stale one', () => {
    const { refusals: r, fins } = refusals();
    const X = 1;
    r.refuse(X);
    r.unknownStream(X); // its FIN goes; the queue keeps a stale entry for X
    const a = Array.from({ length: 500 }, (_, i) => 1_001 + 2 * i);
    const b = Array.from({ length: REFUSED_WAITING_MAX - 501 }, (_, i) => 5_001 + 2 * i);
    for (const id of a) r.refuse(id);
    r.refuse(X); // X waits again, now younger than every id of `a`
    for (const id of b) r.refuse(id);
    fins.length = 0;
    r.refuse(99_999); // one over the bound: the oldest waiting id is a[0], not X
    expect(fins).toEqual([a[0]]);
  });

  test('a peer cycling SYN, first frame, SYN on one id costs constant work per refusal (the queue stays compact)', () => {
    const { refusals: r, fins } = refusals();
    for (let n = 0; n < 50_000; n++) {
      r.refuse(7); // without compaction by entry, 50 000 cycles take minutes (the queue is copied on every refusal)
      r.unknownStream(7);
    }
    expect(fins.length).toBe(50_000);
  });
});
