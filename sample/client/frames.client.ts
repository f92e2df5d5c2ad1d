import { Inject, Injectable } from '@nestjs/common';
import type { ClientProxy } from '@nestjs/microservices';
import { lastValueFrom, map, type Observable, take, takeUntil, timer, toArray } from 'rxjs';
import { type SmuxFeedItem, type SmuxStub, smuxStub } from '../../lib/index.js';
import type { LiveRequest } from '../messages.js';
import { SAMPLE_SERVICE } from './sample-service.js';

/**
 * The contract of `frames.*`, for smuxStub. A feed's caller receives each frame wrapped as a SmuxFeedItem (seq,
 * timestamp, drops), so the contract says so: the handler itself returns `Observable<Buffer>`.
 */
interface FramesContract {
  live(request: LiveRequest): Observable<SmuxFeedItem<Buffer>>;
}

/** One frame as the viewer saw it. */
export interface FrameSeen {
  readonly seq: number;
  /** ms from the server's timestamp to its arrival here (both clocks are this process's in the sample). */
  readonly latencyMs: number;
  /** Frames the server dropped so far (the gaps in seq). */
  readonly dropped: number;
}

/** A viewer of `frames.live` that renders slowly. */
@Injectable()
export class FramesClient {
  readonly #frames: SmuxStub<FramesContract>;

  constructor(@Inject(SAMPLE_SERVICE) client: ClientProxy) {
    // frames.live(request) is client.send('frames.live', request), typed by the contract.
    this.#frames = smuxStub<FramesContract>(client, { prefix: 'frames.' });
  }

  /**
   * Watches the feed for `count` frames (or `maxMs`, whichever comes first), rendering each for `renderMs`; then
   * leaves, which cancels the call and stops the camera. Rendering blocks the thread, as a synchronous draw or
   * decode does: while it runs, nothing is read from the socket, the stream's window fills up, and the server
   * drops the oldest unsent frames rather than queue them — so a slow viewer sees recent frames, with gaps. (Here
   * the server shares the thread and waits too; its camera makes up the frames it owes on its next tick, as a real
   * one would have captured them meanwhile.) Slow *asynchronous* work per frame (`concatMap` + a timer) would not
   * do that: ClientSmux reads the socket at full speed, so the frames would queue up here with growing latency —
   * drop on this side too then (`auditTime`, `throttleTime`).
   */
  watch(request: LiveRequest, options: { count: number; maxMs: number; renderMs: number }): Promise<FrameSeen[]> {
    return lastValueFrom(
      this.#frames.live(request).pipe(
        map((item): FrameSeen => {
          // The timestamp is epoch ms with a fraction (the server's performance clock): compare like with like.
          const seen = { seq: item.seq, latencyMs: performance.timeOrigin + performance.now() - item.timestamp, dropped: item.dropped };
          render(options.renderMs);
          return seen;
        }),
        take(options.count),
        takeUntil(timer(options.maxMs)),
        toArray(),
      ),
    );
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** A slow synchronous renderer: blocks the thread for `ms` (without spinning the CPU). */
function render(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}
