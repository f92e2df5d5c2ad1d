import { MAX_STREAM_ID } from './constants.js';
import { SmuxError } from './errors.js';

/**
 * Stream ids this side opens: Go's allocator. A client's first id is 3 (then 5, 7, …), a server's 2 (then 4, 6,
 * …); ids are never reused, so each side has 2^31 − 1 per session. When they run out, opening fails with
 * `ERR_SMUX_GOAWAY` for good and nothing is sent (the peer is not told; existing streams carry on).
 */
export class StreamIdAllocator {
  #last: number; // the last id handed out (Go's nextStreamID before its += 2)
  #goneAway = false;

  /**
   * @param role - which side of the session this is
   * @param firstStreamId - the first id to hand out (default 3 for a client, 2 for a server)
   */
  constructor(role: 'client' | 'server', firstStreamId?: number) {
    const first = firstStreamId ?? (role === 'client' ? 3 : 2);
    if ((first % 2 === 1) !== (role === 'client')) {
      throw new SmuxError(
        'ERR_SMUX_INVALID_CONFIG',
        `smux config: firstStreamId must be ${role === 'client' ? 'odd for a client' : 'even for a server'}, got ${first}`,
      );
    }
    this.#last = first - 2;
  }

  /** Ids still available. */
  get remaining(): number {
    return this.#goneAway ? 0 : Math.floor((MAX_STREAM_ID - this.#last) / 2);
  }

  /**
   * The next id.
   * @throws SmuxError `ERR_SMUX_GOAWAY` once ids are exhausted
   */
  next(): number {
    if (!this.#goneAway && this.#last + 2 <= MAX_STREAM_ID) {
      this.#last += 2;
      return this.#last;
    }
    this.#goneAway = true;
    throw new SmuxError('ERR_SMUX_GOAWAY', 'stream ids are exhausted on this session; open a new session');
  }
}
