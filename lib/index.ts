/**
 * `nestjs-smux`: a NestJS microservice transport over smux ({@link ServerSmux}, {@link ClientSmux}), and the
 * smux core itself (also available alone, without Nest, as `nestjs-smux/smux`).
 *
 * @packageDocumentation
 */
export * from './nest/index.js';
export * from './smux/index.js';
