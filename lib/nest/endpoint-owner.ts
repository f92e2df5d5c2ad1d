import type { SmuxError } from '../smux/index.js';
import type { CallMessage } from './call-codec.js';

/*
 * The call a CallEndpoint serves, and how the endpoint reaches it: through the owner's public methods
 * (EndpointOwner), or through functions its class registered once, for a call whose handlers must stay private.
 */

/** What an endpoint tells the call it serves (the server's or the client's Nest semantics), when its handlers are public. */
export interface EndpointOwner {
  /** A complete message arrived (`size`: its bytes on the wire). */
  onMessage(message: CallMessage, size: number): void;
  /** Bytes arrived while the endpoint does not read (they are dropped). */
  onUnreadData?(): void;
  /** Bytes that are not a valid message arrived (malformed, over the size limit): reading stops. */
  onReadError(error: SmuxError): void;
  /** The peer sent FIN (every message before it was delivered). */
  onPeerEnd(): void;
  /**
   * The peer sent FIN while bytes before it are held unread (the call paused its input): {@link onPeerEnd} follows once
   * they are read. An owner for which the FIN itself means something (the server: the caller cancelled) acts now.
   */
  onPeerEndHeld?(): void;
  /** The stream is finished (cleanly, destroyed, or its connection died: `error`). */
  onClosed(error: SmuxError | undefined): void;
  /** True while the owner reads a byte stream, whose RAW messages it takes in pieces (MessageSink.rawPieces, message-reader.ts). */
  readonly rawPieces?: boolean;
}

/**
 * The same handlers for a call whose class keeps them private: an app holds the client's calls (a subscription's
 * teardown), so nothing of theirs but `unsubscribe()` may be reachable. Functions given the call, made once in the
 * class's static block and registered with {@link registerEndpointOwner}: an endpoint finds its owner's table once,
 * when it is made, so a call costs no adapter object.
 */
export interface OwnerHandlers<O> {
  onMessage(owner: O, message: CallMessage, size: number): void;
  onUnreadData?(owner: O): void;
  onReadError(owner: O, error: SmuxError): void;
  onPeerEnd(owner: O): void;
  onPeerEndHeld?(owner: O): void;
  onClosed(owner: O, error: SmuxError | undefined): void;
  rawPieces?(owner: O): boolean;
}

/** The call an endpoint serves: an {@link EndpointOwner}, or an instance of a class that registered its handlers. */
export type CallOwner = EndpointOwner | object;

/** An {@link EndpointOwner}'s own methods, as a table. */
const PUBLIC_HANDLERS: OwnerHandlers<EndpointOwner> = {
  onMessage: (owner, message, size) => owner.onMessage(message, size),
  onUnreadData: (owner) => owner.onUnreadData?.(),
  onReadError: (owner, error) => owner.onReadError(error),
  onPeerEnd: (owner) => owner.onPeerEnd(),
  onPeerEndHeld: (owner) => owner.onPeerEndHeld?.(),
  onClosed: (owner, error) => owner.onClosed(error),
  rawPieces: (owner) => owner.rawPieces === true,
};

// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type -- keyed by the owner's class
const registered = new Map<Function, OwnerHandlers<object>>();

/** Registers the private handlers of `type`'s instances (its static block calls this once). */
export function registerEndpointOwner<O extends object>(type: abstract new (...args: never[]) => O, handlers: OwnerHandlers<O>): void {
  registered.set(type, handlers);
}

/** The handlers of `owner`: its own methods, or the table its class registered. */
export function handlersOf(owner: CallOwner): OwnerHandlers<object> {
  return registered.get(owner.constructor) ?? PUBLIC_HANDLERS;
}
