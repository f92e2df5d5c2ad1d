/**
 * Splitting byte strings into socket-like chunks for decoder tests.
 *
 * Every chunk owns its memory (a fresh `ArrayBuffer`, never Node's shared allocation pool), so a test can
 * tell which chunk a decoded view came from with {@link chunkIndexOf} and prove that nothing was copied.
 */

/** A copy of `bytes` in memory of its own. */
export function ownedCopy(bytes: Uint8Array): Buffer {
  const copy = Buffer.from(new ArrayBuffer(bytes.length));
  copy.set(bytes);
  return copy;
}

/**
 * Splits `bytes` at `offsets` (clamped to the buffer, sorted, deduplicated; 0 and the end are ignored), so
 * the result never holds an empty chunk. No offsets gives one chunk.
 */
export function splitAt(bytes: Uint8Array, offsets: Iterable<number>): Buffer[] {
  const cuts = [...new Set([...offsets].map((o) => Math.trunc(o)).filter((o) => o > 0 && o < bytes.length))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (cut > start) chunks.push(ownedCopy(bytes.subarray(start, cut)));
    start = cut;
  }
  return chunks;
}

/** Splits `bytes` into chunks of `size` bytes (the last may be shorter). */
export function splitEvery(bytes: Uint8Array, size = 1): Buffer[] {
  const offsets: number[] = [];
  for (let at = size; at < bytes.length; at += size) offsets.push(at);
  return splitAt(bytes, offsets);
}

/** Every way of cutting `bytes` into two non-empty chunks, with the cut offset. */
export function* everyTwoWaySplit(bytes: Uint8Array): Generator<{ at: number; chunks: Buffer[] }> {
  for (let at = 1; at < bytes.length; at++) yield { at, chunks: splitAt(bytes, [at]) };
}

/** Cuts at fractions of the length (numbers in [0, 1)), for property tests that do not know the length yet. */
export function splitAtFractions(bytes: Uint8Array, fractions: readonly number[]): Buffer[] {
  return splitAt(
    bytes,
    fractions.map((f) => Math.floor(f * bytes.length)),
  );
}

/**
 * The index of the chunk whose memory `view` lies entirely in, or -1 when it lies in none of them (a copy).
 */
export function chunkIndexOf(view: Uint8Array, chunks: readonly Uint8Array[]): number {
  return chunks.findIndex(
    (chunk) =>
      view.buffer === chunk.buffer &&
      view.byteOffset >= chunk.byteOffset &&
      view.byteOffset + view.length <= chunk.byteOffset + chunk.length,
  );
}
