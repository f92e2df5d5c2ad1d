import type { SmuxConfig } from './config.js';
import type { ReceiveBucket } from './flow-control.js';
import type { StreamCore } from './stream-core.js';
import type { WindowBudget } from './window-tuner.js';
import type { FrameWriter } from './writer.js';

/*
 * The contract between a stream's engine (stream-core.ts) and its session: what the stream reaches of the session.
 * The session hands each stream one private object with these members (plain fields, updated in place when the
 * version is adopted), never the session itself. The writer's side of a stream is frame-source.ts.
 */

/** What a stream needs from its session (a private object of the session, not the session itself). */
export interface StreamHost {
  readonly config: Readonly<SmuxConfig>;
  readonly writer: FrameWriter;
  readonly bucket: ReceiveBucket;
  /** Window auto-tuning's session state: non-null only in v2 with `maxStreamWindow` above `maxStreamBuffer`. */
  readonly windowBudget: WindowBudget | null;
  /** The protocol version in use (1 or 2). */
  readonly version: number;
  /** Forget the stream: frames for its id are dropped from now on. */
  release(core: StreamCore): void;
  /** Consumed bytes returned tokens: reading may resume. */
  tokensReturned(): void;
  /** Received bytes were charged: reading may have to pause. */
  tokensCharged(): void;
}
