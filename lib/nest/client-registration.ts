import type { InjectionToken, ModuleMetadata, OptionalFactoryDependency, Provider } from '@nestjs/common';
import type { ClientProviderOptions, ClientsProviderAsyncOptions } from '@nestjs/microservices';
import { ClientSmux } from './client-smux.js';
import type { ClientSmuxOptions } from './interfaces.js';

/** A {@link ClientSmux} to register in `ClientsModule`: its injection token and its options. */
export interface SmuxClientRegistration {
  /** The injection token (`@Inject(name) client: ClientProxy`). */
  name: string | symbol;
  /** The client's options, type-checked (Nest types `options` of a custom client as `Record<string, any>`). */
  options?: ClientSmuxOptions;
}

/** A {@link ClientSmux} whose options come from a factory (`ConfigService` and the like). */
export interface SmuxClientAsyncRegistration extends Pick<ModuleMetadata, 'imports'> {
  /** The injection token. */
  name: string | symbol;
  /** Providers the factory receives, in order. */
  inject?: Array<InjectionToken | OptionalFactoryDependency>;
  /** Returns the client's options (type-checked). */
  useFactory: (...args: never[]) => ClientSmuxOptions | Promise<ClientSmuxOptions>;
  /** Providers the factory's module needs besides `imports`. */
  extraProviders?: Provider[];
}

/**
 * The provider definition of a {@link ClientSmux} for `ClientsModule.register()`, with options typed as
 * {@link ClientSmuxOptions} so that tsc catches a misspelt option:
 *
 * ```ts
 * ClientsModule.register([smuxClient({ name: 'MATH', options: { host: '127.0.0.1', port: 4000 } })])
 * ```
 */
export function smuxClient(registration: SmuxClientRegistration): ClientProviderOptions {
  const { name, options } = registration;
  return options === undefined ? { name, customClass: ClientSmux } : { name, customClass: ClientSmux, options };
}

/**
 * The provider definition of a {@link ClientSmux} for `ClientsModule.registerAsync()`, options from a factory:
 *
 * ```ts
 * ClientsModule.registerAsync([smuxClientAsync({ name: 'MATH', inject: [ConfigService], useFactory: (c: ConfigService) => ({ port: c.get('MATH_PORT') }) })])
 * ```
 */
export function smuxClientAsync(registration: SmuxClientAsyncRegistration): ClientsProviderAsyncOptions {
  const { name, imports, inject, extraProviders, useFactory } = registration;
  const factory = useFactory as (...args: unknown[]) => ClientSmuxOptions | Promise<ClientSmuxOptions>;
  return {
    name,
    ...(imports === undefined ? {} : { imports }),
    ...(inject === undefined ? {} : { inject }),
    ...(extraProviders === undefined ? {} : { extraProviders }),
    useFactory: async (...args: unknown[]) => ({ customClass: ClientSmux, options: await factory(...args) }),
  };
}
