/*
 * What the sample's streaming calls carry, shared by the server's handlers and the client app (the math calls
 * keep their shapes inline, as they are one-liners).
 */

/** `files.upload`: the request data of the byte stream; the bytes follow on the Duplex. */
export interface UploadRequest {
  readonly name: string;
  /** Bytes the caller will send (the handler checks it got them all). */
  readonly size: number;
}

/** `files.upload`: what the handler writes back on the Duplex once the caller's bytes ended (as JSON). */
export interface UploadReceipt {
  readonly name: string;
  /** Bytes the handler read. */
  readonly bytes: number;
  /** SHA-256 of those bytes, hex. */
  readonly sha256: string;
}

/** `chat.talk`: one message of the caller's stream. */
export interface ChatMessage {
  readonly seq: number;
  readonly text: string;
}

/** `chat.talk`: the handler's answer to one message. */
export interface ChatReply {
  /** The `seq` of the message answered. */
  readonly re: number;
  readonly text: string;
}

/** `frames.live`: how the feed should produce its frames. */
export interface LiveRequest {
  /** Frames produced per second. */
  readonly fps: number;
  /** Bytes of each frame. */
  readonly frameBytes: number;
}
