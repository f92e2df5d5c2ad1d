/**
 * Options are resolved and checked once, in the constructor: a wrong type, a value out of range or an unknown
 * name is a SmuxError ERR_SMUX_INVALID_CONFIG that names the option, the value with its type and what is
 * allowed — never a server that says "successfully started" and dies on its first connection, nor a client
 * whose calls all hang.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller, Injectable, Inject, Module } from '@nestjs/common';
import { ClientProxy, ClientsModule, MessagePattern } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { firstValueFrom } from 'rxjs';
import {
  type ClientSmuxOptions,
  ClientSmux,
  ServerSmux,
  type ServerSmuxOptions,
  smuxClient,
  smuxClientAsync,
  SmuxError,
} from '../../lib/index.js';
import { closeAll, startApp, trackClient } from './helpers.js';
import { resolveClientOptions, resolveServerOptions } from '../../lib/nest/options.js';

afterEach(closeAll);

/** The error a constructor throws for `options`. */
function refusal(make: () => unknown): SmuxError {
  try {
    make();
  } catch (error) {
    expect(error).toBeInstanceOf(SmuxError);
    expect((error as SmuxError).code).toBe('ERR_SMUX_INVALID_CONFIG');
    return error as SmuxError;
  }
  throw new Error('the constructor accepted the options');
}

const server = (options: unknown) => () => new ServerSmux(options as ServerSmuxOptions);
const client = (options: unknown) => () => new ClientSmux(options as ClientSmuxOptions);

describe('options are checked in the constructor', () => {
  test.each([
    [
      { keepAliveInterval: 40_000 },
      'ServerSmux option smux.keepAliveTimeout (30000 ms) must not be less than keepAliveInterval (40000 ms)',
    ],
    [{ maxFrameSize: 70_000 }, 'ServerSmux option smux.maxFrameSize must be an integer from 1 to 65535 (bytes), got 70000 (a number)'],
    [{ version: 3 }, "ServerSmux option smux.version must be 1, 2 or 'auto'"],
    [{ keepaliveInterval: 5_000 }, 'ServerSmux option smux.keepaliveInterval is not a known field (did you mean keepAliveInterval?)'],
    // Valid against the core's 64 KiB default, not against the transport's 256 KiB window (a new-user trial: the
    // server took it and crashed on its first connection).
    [
      { maxStreamWindow: 65_536 },
      'ServerSmux option smux.maxStreamWindow (65536) must be 0 (no auto-tuning) or from maxStreamBuffer (262144)',
    ],
    [
      { contendedStreamWindow: 600_000 },
      'ServerSmux option smux.contendedStreamWindow (600000) must be 0 (no limit) or from 16384 to the largest window a stream can have, 524288',
    ],
  ])('a bad smux option %j fails new ServerSmux(), not the first connection', (smux, message) => {
    expect(refusal(server({ port: 0, smux })).message).toContain(message);
  });

  test.each([
    ['maxConcurrentCalls', 0, 'must be an integer from 1 to 2147483647 (calls), got 0 (a number)'],
    ['maxQueuedCalls', -1, 'must be an integer from 0 to 2147483647 (calls; 0 = none wait), got -1 (a number)'],
    ['maxMessageBytes', 0, 'must be an integer from 1 to 4294967295 (bytes), got 0 (a number)'],
    ['connectTimeout', -1, 'must be an integer from 1 to 2147483647 (ms), got -1 (a number)'],
    ['timeout', '5000', 'must be an integer from 0 to 4294967295 (ms; 0 = no deadline), got "5000" (a string)'],
    ['timeout', 1.5, 'must be an integer from 0 to 4294967295 (ms; 0 = no deadline), got 1.5 (a number)'],
    ['waitForReady', 'yes', 'must be true or false, got "yes" (a string)'],
    ['port', 70_000, 'must be an integer from 0 to 65535 (a TCP port), got 70000 (a number)'],
    ['host', '', 'must be a non-empty string, got "" (a string)'],
    ['serializer', {}, 'must be an object with a serialize() method, got an object'],
  ])('ClientSmux option %s = %j is refused', (name, value, message) => {
    expect(refusal(client({ [name]: value })).message).toBe(`ClientSmux option ${name} ${message}`);
  });

  test.each([
    ['closeTimeout', -1, 'must be an integer from 0 to 2147483647 (ms; 0 ends running calls at once), got -1 (a number)'],
    ['maxConnections', 0, 'must be an integer from 1 to 2147483647 (connections), got 0 (a number)'],
    ['maxMessageBytes', -5, 'must be an integer from 1 to 4294967295 (bytes), got -5 (a number)'],
    ['finTimeout', 'x', 'must be an integer from 1 to 2147483647 (ms), got "x" (a string)'],
    ['maxCallsPerConnection', 1e10, 'must be an integer from 1 to 2147483647 (calls), got 10000000000 (a number)'],
    ['maxEventsPerConnection', 0, 'must be an integer from 1 to 2147483647 (event handlers), got 0 (a number)'],
    ['maxReplyBufferBytes', null, 'must be an integer from 1 to 9007199254740991 (bytes), got null'],
    ['maxPendingRequestBytes', 0, 'must be an integer from 1 to 9007199254740991 (bytes per connection), got 0 (a number)'],
    ['maxPendingRequestBytes', 1024, 'must be at least maxMessageBytes (8388608 bytes), got 1024 (a number)'],
    ['maxQueuedReplyBytes', 0.5, 'must be an integer from 1 to 9007199254740991 (bytes per connection), got 0.5 (a number)'],
    ['replyStallTimeout', 0, 'must be an integer from 1 to 2147483647 (ms), got 0 (a number)'],
    ['requestTimeout', -1, 'must be an integer from 1 to 2147483647 (ms), got -1 (a number)'],
    ['evictIdleAfter', -1, 'must be an integer from 0 to 2147483647 (ms; 0 = never evict), got -1 (a number)'],
    ['maxConnectionsPerAddress', 0, 'must be an integer from 1 to 2147483647 (connections), got 0 (a number)'],
  ])('ServerSmux option %s = %j is refused', (name, value, message) => {
    expect(refusal(server({ [name]: value })).message).toContain(`ServerSmux option ${name} ${message}`);
  });

  test("the transport's windows: 256 KiB, growing to 512 KiB, 128 KiB while other streams receive; within the user's own window options", () => {
    for (const resolve of [() => resolveClientOptions({ port: 1 }), () => resolveServerOptions({ port: 0 })]) {
      expect(resolve().smux).toMatchObject({ maxStreamBuffer: 262_144, maxStreamWindow: 524_288, contendedStreamWindow: 131_072 });
    }
    // Go's window without growth: the contended limit follows it down, so the options stay valid.
    expect(resolveClientOptions({ port: 1, smux: { maxStreamBuffer: 65_536, maxStreamWindow: 0 } }).smux.contendedStreamWindow).toBe(
      65_536,
    );
    expect(resolveServerOptions({ port: 0, smux: { maxReceiveBuffer: 100_000 } }).smux.contendedStreamWindow).toBe(100_000);
    expect(resolveClientOptions({ port: 1, smux: { contendedStreamWindow: 0 } }).smux.contendedStreamWindow).toBe(0);
    // A value the user's maxReceiveBuffer leaves no room for: the message names it, since it bounds the windows.
    expect(() => resolveClientOptions({ port: 1, smux: { maxReceiveBuffer: 65_536, contendedStreamWindow: 131_072 } })).toThrow(
      'both at most maxReceiveBuffer, 65536',
    );
    // Windows below the core's 16 KiB minimum are small already: no limit, and the options stay valid.
    expect(resolveClientOptions({ port: 1, smux: { maxReceiveBuffer: 10_000 } }).smux.contendedStreamWindow).toBe(0);
  });

  test('window growth and the contended window are refused on a side pinned to version 1, where they do nothing', () => {
    expect(() => resolveClientOptions({ port: 1, smux: { version: 1, contendedStreamWindow: 65_536 } })).toThrow(
      'ClientSmux option smux.contendedStreamWindow does nothing in smux protocol version 1 (smux.version is 1): leave it out, got 65536',
    );
    expect(() => resolveServerOptions({ port: 0, smux: { version: 1, maxStreamWindow: 1_048_576 } })).toThrow(
      'ServerSmux option smux.maxStreamWindow does nothing in smux protocol version 1',
    );
    // 0 (off) is what v1 has; the transport's own v2 defaults and a server taking either version ('auto') are fine.
    expect(resolveClientOptions({ port: 1, smux: { version: 1, maxStreamWindow: 0, contendedStreamWindow: 0 } }).smux.version).toBe(1);
    expect(resolveServerOptions({ port: 0, smux: { version: 1 } }).pinnedVersion).toBe(1);
    expect(resolveServerOptions({ port: 0, smux: { version: 'auto', contendedStreamWindow: 65_536 } }).pinnedVersion).toBeNull();
  });

  test('reconnect options are checked too, and maxDelay may not be below initialDelay', () => {
    expect(refusal(client({ reconnect: { factor: 0.5 } })).message).toBe(
      'ClientSmux option reconnect.factor must be a number from 1 to 1000 (growth per failed attempt), got 0.5 (a number)',
    );
    expect(refusal(client({ reconnect: { initialDelay: 500, maxDelay: 100 } })).message).toBe(
      'ClientSmux option reconnect.maxDelay must be at least reconnect.initialDelay (500 ms), got 100 (a number)',
    );
    expect(refusal(client({ reconnect: { intialDelay: 5 } })).message).toMatch(
      /^ClientSmux has no option reconnect\.intialDelay \(did you mean reconnect\.initialDelay\?\)/,
    );
  });

  test('unknown option names are refused with the nearest known name', () => {
    expect(refusal(client({ hots: '127.0.0.1', port: 4000 })).message).toMatch(
      /^ClientSmux has no option hots \(did you mean host\?\); its options are host, port, /,
    );
    expect(refusal(client({ host: '127.0.0.1', prot: 4000 })).message).toMatch(/^ClientSmux has no option prot \(did you mean port\?\)/);
    expect(refusal(server({ maxConnection: 5 })).message).toMatch(
      /^ServerSmux has no option maxConnection \(did you mean maxConnections\?\)/,
    );
    expect(refusal(server({ zzzzzz: 1 })).message).toMatch(/^ServerSmux has no option zzzzzz; its options are/); // no near name: no guess
  });

  test('a host with a port in it is refused (it would dial "127.0.0.1:4000:3000")', () => {
    expect(refusal(client({ host: '127.0.0.1:4000' })).message).toBe(
      'ClientSmux option host must be a host name or address without a port (give the port as the port option), got "127.0.0.1:4000" (a string)',
    );
    expect(() => trackClient(new ClientSmux({ host: '::1', port: 1 }))).not.toThrow(); // an IPv6 address is fine
  });

  test('a client cannot detect the version, a path cannot go with a port, options must be an object', () => {
    expect(refusal(client({ smux: { version: 3 } })).message).toBe(
      "ClientSmux option smux.version must be 1 or 2 ('auto' is for servers), got 3 (a number)",
    );
    expect(refusal(client({ smux: { version: 'auto' } })).message).toContain(
      "ClientSmux option smux.version must be 1 or 2 ('auto' is for servers)",
    );
    expect(refusal(server({ path: '/tmp/x.sock', port: 1 })).message).toContain(
      'ServerSmux option path cannot be combined with host or port',
    );
    expect(refusal(client('localhost:4000')).message).toBe('ClientSmux options must be an object, got "localhost:4000" (a string)');
  });

  test('valid options, zero where zero means something, and no options at all are accepted', () => {
    for (const options of [undefined, {}, { timeout: 0, maxQueuedCalls: 0, waitForReady: true }, { timeout: 2 ** 32 - 1 }]) {
      expect(() => trackClient(new ClientSmux(options))).not.toThrow();
    }
    for (const options of [undefined, { closeTimeout: 0, port: 0 }, { smux: { version: 1 as const } }, { path: '/tmp/nestjs-smux.sock' }]) {
      expect(() => new ServerSmux(options)).not.toThrow();
    }
  });

  test('a server with a bad smux option never listens (before the fix it logged "started" and crashed on the first client)', async () => {
    await expect(startApp({ server: { smux: { keepAliveInterval: 40_000 } } })).rejects.toMatchObject({ code: 'ERR_SMUX_INVALID_CONFIG' });
  });
});

@Controller()
class EchoController {
  @MessagePattern('echo')
  echo(data: unknown): unknown {
    return data;
  }
}

@Injectable()
class Caller {
  constructor(@Inject('ECHO') readonly client: ClientProxy) {}
}

describe('registering the client in ClientsModule', () => {
  test('smuxClient() gives ClientsModule a provider definition; the client it makes works', async () => {
    const handle = await startApp({ controllers: [EchoController] });
    const definition = smuxClient({ name: 'ECHO', options: { host: '127.0.0.1', port: handle.port, timeout: 2_000 } });
    expect(definition).toEqual({
      name: 'ECHO',
      customClass: ClientSmux,
      options: { host: '127.0.0.1', port: handle.port, timeout: 2_000 },
    });
    const moduleRef = await Test.createTestingModule({ imports: [ClientsModule.register([definition])], providers: [Caller] }).compile();
    const caller = moduleRef.get(Caller);
    expect(caller.client).toBeInstanceOf(ClientSmux);
    expect(await firstValueFrom(caller.client.send('echo', 'hi'))).toBe('hi');
    await moduleRef.close();
  });

  test('smuxClientAsync() takes the options from a factory with injected providers', async () => {
    const handle = await startApp({ controllers: [EchoController] });
    @Injectable()
    class Settings {
      readonly port = handle.port;
    }
    @Module({ providers: [Settings], exports: [Settings] })
    class SettingsModule {}
    const moduleRef = await Test.createTestingModule({
      imports: [
        ClientsModule.registerAsync([
          smuxClientAsync({
            name: 'ECHO',
            imports: [SettingsModule],
            inject: [Settings],
            useFactory: (s: Settings) => ({ host: '127.0.0.1', port: s.port }),
          }),
        ]),
      ],
      providers: [Caller],
    }).compile();
    expect(await firstValueFrom(moduleRef.get(Caller).client.send('echo', 7))).toBe(7);
    await moduleRef.close();
  });

  test("tsc catches a misspelt option in smuxClient(); at run time a misspelt option in Nest's untyped form fails the module", async () => {
    // @ts-expect-error -- `hots` is not an option (Nest types custom client options as Record<string, any>).
    const typed = () => smuxClient({ name: 'ECHO', options: { hots: '127.0.0.1' } });
    expect(typed).not.toThrow(); // tsc's job; the constructor catches it when the module is built:
    // (Nest builds the client when the module is registered or compiled, depending on its version.)
    const build = async () =>
      Test.createTestingModule({
        imports: [ClientsModule.register([{ name: 'ECHO', customClass: ClientSmux, options: { hots: '127.0.0.1', prot: 4000 } }])],
        providers: [Caller],
      }).compile();
    await expect(build()).rejects.toMatchObject({
      code: 'ERR_SMUX_INVALID_CONFIG',
      message: expect.stringContaining('did you mean host?'),
    });
  });
});
