import type { MessagePiece } from '../../lib/nest/call-codec.js';

/** An encoded message's pieces as the bytes the channel sends (a text piece is ASCII: one byte per character). */
export function piecesBytes(pieces: readonly MessagePiece[]): Buffer {
  return Buffer.concat(pieces.map((piece) => (typeof piece === 'string' ? Buffer.from(piece, 'latin1') : piece)));
}
