/*
 * The contract between a stream and the session's `FrameWriter` (writer.ts): what the writer asks of a stream
 * that has frames to send, and where the stream hands its payload pieces.
 */

/** Receives the payload pieces of the frame being built. */
export interface PayloadSink {
  appendPayload(piece: Buffer): void;
  /** A piece of ASCII text (one byte per character): copied into the frame as it is, without an encoding pass. */
  appendText(piece: string): void;
}

/** Control frames a {@link FrameSource} asks for (bits of `controlBits`). */
export const CONTROL_SYN = 1;
/** A window update (v2). */
export const CONTROL_UPD = 2;
/** A FIN sent ahead of (dropped) data, by a destroyed stream. */
export const CONTROL_FIN = 4;

/**
 * What the writer needs from a stream: the whole contract between the two. The writer owns `writerFlags`;
 * the stream sets `controlBits` and asks to be queued with `FrameWriter.queueControl` /
 * `FrameWriter.queueData`.
 */
export interface FrameSource {
  /** The stream id. */
  readonly id: number;
  /** Bits owned by the writer (which of its queues hold the source). */
  writerFlags: number;
  /** Control frames requested (`CONTROL_*` bits); the writer clears them as it writes them. */
  controlBits: number;
  /** The UPD payload's `consumed` value (u32). */
  readonly numRead: number;
  /** The UPD payload's `window` value: the receive window this side advertises for the stream, in bytes. */
  readonly window: number;
  /** True when the ordered FIN (after all data) can go now. */
  readonly finReady: boolean;
  /** Bytes the next PSH may carry: queued, within the peer's window (v2) and `limit`; 0 when none can go. */
  sendableBytes(limit: number): number;
  /** Hands `n` queued bytes to `sink` as payload pieces (views of buffers, or ASCII text; no copies), in order. */
  takeData(n: number, sink: PayloadSink): void;
  /** A FIN for the stream is in the batch being written. */
  markFinSent(): void;
  /** A batch with the stream's frames was handed to the socket. */
  afterFlush(): void;
}
