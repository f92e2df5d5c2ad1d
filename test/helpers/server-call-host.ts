import type { CallMessage } from '../../lib/nest/call-codec.js';
import { createPacketCodec } from '../../lib/nest/packet-codec.js';
import type { CallHost } from '../../lib/nest/server-call-host.js';
import type { Clock } from '../../lib/smux/index.js';

/** A stand-in for the server under a ServerCall: it records what it is asked (no Nest app, no routing). */
export interface StubCallHost {
  readonly host: CallHost;
  /** REQUEST and EVENT messages the calls dispatched. */
  readonly requests: CallMessage[];
  /** What the calls told the server: 'control', 'settled', 'awaitCallerFin', 'closed', 'limit: <code>', 'unencodable: <why>'. */
  readonly log: string[];
}

/** A {@link CallHost} with the native codec, 1 MiB message limit, and errors as `{ status, message }`. */
export function stubCallHost(clock: Clock, maxReplyBufferBytes = 1 << 20): StubCallHost {
  const requests: CallMessage[] = [];
  const log: string[] = [];
  const host: CallHost = {
    clock,
    maxMessageBytes: 1 << 20,
    maxReplyBufferBytes,
    codec: createPacketCodec(false, {
      serializer: { serialize: (v: unknown) => v },
      deserializer: { deserialize: (v: unknown) => v },
      normalizePattern: (p) => JSON.stringify(p),
      patternAsString: (p) => String(p),
    }),
    dispatchRequest: (_call, message) => void requests.push(message),
    dispatchEvent: (_call, message) => void requests.push(message),
    openControl: () => log.push('control'),
    controlMessage: () => log.push('control message'),
    toRpcError: (error) => ({ status: 'error', message: (error as Error).message }),
    callStopped: () => log.push('stopped'),
    callSettled: () => log.push('settled'),
    awaitCallerFin: () => log.push('awaitCallerFin'),
    callClosed: () => log.push('closed'),
    replyUnencodable: (_call, error) => log.push(`unencodable: ${(error as Error).message}`),
    limitReached: (_call, error) => log.push(`limit: ${error.code}`),
  };
  return { host, requests, log };
}
