export { ServerSmux } from './server-smux.js';
export { ClientSmux } from './client-smux.js';
export { smuxClient, smuxClientAsync, type SmuxClientRegistration, type SmuxClientAsyncRegistration } from './client-registration.js';
export { SmuxContext, type CallControl } from './smux.context.js';
export { SmuxRecord, SmuxRecordBuilder, type SmuxRecordOptions } from './smux.record-builder.js';
export { SmuxStatus, type SmuxClientEvents, type SmuxServerEvents } from './smux.events.js';
export { SMUX_TRANSPORT } from './transport-id.js';
export type { ClientSmuxOptions, ReconnectOptions, ServerSmuxOptions, SmuxTransportOptions } from './interfaces.js';
