/** A flat one-byte string of `size` characters (a string payload, as an application would send). */
export function makePayload(size: number): string {
  return Buffer.alloc(size, 'nestjs-smux benchmark payload 0123456789 ').toString('latin1');
}
