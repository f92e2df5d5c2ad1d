/**
 * `nestjs-smux`: a NestJS microservice transport over smux, and the smux core itself.
 *
 * @packageDocumentation
 */
export * from './smux/index.js';
