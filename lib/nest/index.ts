export { ServerSmux } from './server-smux.js';
export { ClientSmux } from './client-smux.js';
export { smuxClient, smuxClientAsync, type SmuxClientRegistration, type SmuxClientAsyncRegistration } from './client-registration.js';
export { SmuxContext, type CallControl } from './smux.context.js';
export { SmuxConnection, type SmuxConnectionEvents } from './smux-connection.js';
export { SmuxStreamedPayload } from './streamed-input.js';
export { SmuxDuplex } from './raw-duplex.js';
export { smuxFeed, type SmuxFeedItem, type SmuxFeedOptions } from './feed.js';
export type { SmuxSource } from './sources.js';
export { SmuxRecord, SmuxRecordBuilder, type SmuxRecordOptions } from './smux.record-builder.js';
export { SmuxStatus, type SmuxClientEvents, type SmuxServerEvents } from './smux.events.js';
export { SMUX_TRANSPORT } from './transport-id.js';
export {
  SMUX_LATENCY_BUCKETS_MS,
  type SmuxCallFailure,
  type SmuxHistogramSnapshot,
  type SmuxMetrics,
  type SmuxMetricsSnapshot,
} from './metrics.js';
export type {
  ClientSmuxOptions,
  ReconnectOptions,
  ServerSmuxOptions,
  SmuxDnsOptions,
  SmuxDuplexOptions,
  SmuxHostAddress,
  SmuxTransportOptions,
} from './interfaces.js';
export type { SmuxConnectionInfo, SmuxConnectionState } from './client-lane.js';
export {
  smuxStub,
  type SmuxStub,
  type SmuxStubOptions,
  type SmuxStubMethod,
  type SmuxStubEvents,
  type SmuxStubPattern,
  type SmuxReplyOf,
} from './client-stub.js';
