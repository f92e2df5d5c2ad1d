/**
 * The transport id of {@link ServerSmux} (a registered symbol, the same across copies of the package):
 * `@MessagePattern('sum', SMUX_TRANSPORT)` binds a handler to the smux server only, in apps with several
 * transports.
 */
export const SMUX_TRANSPORT: unique symbol = Symbol.for('nestjs-smux');
