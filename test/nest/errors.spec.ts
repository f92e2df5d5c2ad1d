import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { type ArgumentsHost, Catch, Controller, UseFilters } from '@nestjs/common';
import { BaseRpcExceptionFilter, MessagePattern, Payload, RpcException } from '@nestjs/microservices';
import { firstValueFrom, type Observable, of, throwError, toArray } from 'rxjs';
import { ClientSmux, isSmuxError, SmuxContext, SmuxError, SmuxRecord, SmuxRecordBuilder } from '../../lib/index.js';
import { encodeTransportError } from '../../lib/nest/call-codec.js';
import { closeAll, loggedErrors, rawServer, smuxError, startApp, trackClient } from './helpers.js';

class TeapotError extends Error {}

/** Maps TeapotError to a structured RPC error; everything else goes to Nest's default handling. */
@Catch(TeapotError)
class TeapotFilter extends BaseRpcExceptionFilter {
  override catch(exception: TeapotError, host: ArgumentsHost): Observable<unknown> {
    const ctx = host.switchToRpc().getContext<SmuxContext>();
    return throwError(() => ({ code: 'E_TEAPOT', message: exception.message, pattern: ctx.getPattern() }));
  }
}

@Controller()
class ErrorsController {
  @MessagePattern('rpc-object')
  rpcObject(): never {
    throw new RpcException({ code: 'E_BAD', details: { field: 'x' } });
  }

  @MessagePattern('rpc-string')
  rpcString(): never {
    throw new RpcException('not allowed here');
  }

  @MessagePattern('plain-error')
  plainError(): never {
    throw new Error('database password is hunter2');
  }

  @MessagePattern('async-rejection')
  async asyncRejection(): Promise<never> {
    await new Promise((resolve) => setImmediate(resolve));
    throw new RpcException({ code: 'E_ASYNC' });
  }

  @MessagePattern('fake-transport-error')
  fakeTransportError(): never {
    throw new RpcException({ code: 'ERR_SMUX_TIMEOUT', message: 'thrown by the handler' });
  }

  @MessagePattern('unencodable')
  unencodable(@Payload() how: string): unknown {
    const cycle: Record<string, unknown> = { name: 'loop' };
    cycle.self = cycle;
    if (how === 'value') return { n: 1n };
    if (how === 'second') return of('first', cycle, 'never sent');
    return { returned: cycle };
  }

  @MessagePattern('unencodable-error')
  unencodableError(): never {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    throw new RpcException({ code: 'E_CYCLE', cycle });
  }

  @MessagePattern('teapot')
  @UseFilters(new TeapotFilter())
  teapot(@Payload() how: string): unknown {
    if (how === 'teapot') throw new TeapotError('short and stout');
    if (how === 'other') throw new RpcException({ code: 'E_OTHER' });
    return 'brewed';
  }
}

describe('errors', () => {
  let client: ClientSmux;

  beforeAll(async () => {
    const handle = await startApp({ controllers: [ErrorsController] });
    client = handle.client();
  });
  beforeEach(() => void (loggedErrors.length = 0));
  afterAll(closeAll);

  test('RpcException(object) reaches the caller as that object', async () => {
    await expect(firstValueFrom(client.send('rpc-object', {}))).rejects.toEqual({ code: 'E_BAD', details: { field: 'x' } });
  });

  test("RpcException('msg') reaches the caller as Nest gives it", async () => {
    await expect(firstValueFrom(client.send('rpc-string', {}))).rejects.toEqual({ status: 'error', message: 'not allowed here' });
  });

  test("any other error reaches the caller as Nest's TCP transport delivers it, and is logged on the server", async () => {
    const error = await firstValueFrom(client.send('plain-error', {})).catch((e: unknown) => e);
    expect(error).toEqual({ status: 'error', message: 'Internal server error' });
    expect(JSON.stringify(error)).not.toContain('hunter2');
    expect(loggedErrors.some((args) => args.some((a) => String((a as Error)?.message ?? a).includes('hunter2')))).toBe(true);
  });

  test('a rejected async handler reaches the caller with its RpcException', async () => {
    await expect(firstValueFrom(client.send('async-rejection', {}))).rejects.toEqual({ code: 'E_ASYNC' });
  });

  test('an unknown pattern gets Nest\'s "no matching message handler" reply', async () => {
    await expect(firstValueFrom(client.send('no-such-pattern', {}))).rejects.toBe(
      'There is no matching message handler defined in the remote service.',
    );
    await expect(firstValueFrom(client.send({ cmd: 'no-such' }, {}))).rejects.toBe(
      'There is no matching message handler defined in the remote service.',
    );
    // The connection is fine afterwards.
    await expect(firstValueFrom(client.send('teapot', 'tea'))).resolves.toBe('brewed');
  });

  test('an exception filter maps the errors it catches and leaves the others to Nest', async () => {
    await expect(firstValueFrom(client.send('teapot', 'teapot'))).rejects.toEqual({
      code: 'E_TEAPOT',
      message: 'short and stout',
      pattern: 'teapot',
    });
    await expect(firstValueFrom(client.send('teapot', 'other'))).rejects.toEqual({ code: 'E_OTHER' });
  });

  test("RpcException values are the handler's, not the transport's: an object shaped like a transport error stays a plain object", async () => {
    const error = await firstValueFrom(client.send('fake-transport-error', {})).catch((e: unknown) => e);
    expect(error).toEqual({ code: 'ERR_SMUX_TIMEOUT', message: 'thrown by the handler' });
    expect(error).not.toBeInstanceOf(SmuxError);
  });

  test('errors are per call: a failing call among succeeding ones fails alone', async () => {
    const results = await Promise.allSettled(
      ['tea', 'teapot', 'tea', 'other', 'tea'].map((how) => firstValueFrom(client.send('teapot', how))),
    );
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled']);
  });
});

describe("transport errors are SmuxError instances, with the code, the server's message and whether a retry is safe", () => {
  afterAll(closeAll);

  test.each([
    ['ERR_SMUX_TIMEOUT', false],
    ['ERR_SMUX_LIMIT', false],
    ['ERR_SMUX_SHUTTING_DOWN', true],
    ['ERR_SMUX_PROTOCOL', false],
  ] as const)('%s written by a server reaches the caller as a SmuxError (retryable: %s)', async (code, retryable) => {
    // A raw server answers with exactly that transport error (TRANSPORT flag), as ServerSmux does.
    const server = await rawServer((channel) => {
      for (const buffer of encodeTransportError(new SmuxError(code, `the server says ${code}`))) channel.write(buffer);
      channel.end();
    });
    try {
      const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port }));
      const error = await firstValueFrom(client.send('x', {})).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SmuxError);
      expect(error).toMatchObject({ code, message: `the server says ${code}`, retryable });
      expect(isSmuxError(error, code)).toBe(true);
    } finally {
      await server.close();
    }
  });

  test('a reply the server cannot encode (a BigInt, a cycle) fails the call with ERR_SMUX_ENCODING, logged on the server', async () => {
    const handle = await startApp({ controllers: [ErrorsController] });
    const client = handle.client();
    loggedErrors.length = 0;
    const value = await firstValueFrom(client.send('unencodable', 'value')).catch((e: unknown) => e);
    expect(value).toEqual(smuxError('ERR_SMUX_ENCODING', 'the server could not encode the reply'));
    expect((value as SmuxError).retryable).toBe(false); // the handler ran
    const values: unknown[] = [];
    const second = await new Promise((resolve) =>
      client.send('unencodable', 'second').subscribe({ next: (v) => values.push(v), error: resolve, complete: () => resolve('completed') }),
    );
    expect(values).toEqual(['first']); // the values before it arrived; nothing after it is sent
    expect(second).toEqual(smuxError('ERR_SMUX_ENCODING'));
    const error = await firstValueFrom(client.send('unencodable-error', 'x')).catch((e: unknown) => e);
    expect(error).toEqual(smuxError('ERR_SMUX_ENCODING')); // the handler's error value itself cannot be encoded
    // Each is a handler's mistake: an error line each, naming the caller, with the cause's stack.
    const lines = loggedErrors.map((args) => args.map(String).join(' '));
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(line).toMatch(/A reply to 127\.0\.0\.1:\d+ could not be encoded .*(BigInt|circular)/s);
    expect(await firstValueFrom(client.send('unencodable', 'ok?').pipe(toArray())).catch((e: unknown) => e)).toEqual(
      smuxError('ERR_SMUX_ENCODING'),
    );
  });

  test('a local failure is a SmuxError too: an unencodable request (ERR_SMUX_ENCODING), a bad header (ERR_SMUX_INVALID_ARGUMENT)', async () => {
    const handle = await startApp({ controllers: [ErrorsController] });
    const client = handle.client();
    const encoding = await firstValueFrom(client.send('teapot', { n: 1n })).catch((e: unknown) => e);
    expect(encoding).toEqual(smuxError('ERR_SMUX_ENCODING', 'BigInt'));
    expect((encoding as Error).cause).toBeInstanceOf(TypeError);
    const header = await firstValueFrom(client.send('teapot', new SmuxRecord('tea', { headers: { n: 1 as unknown as string } }))).catch(
      (e: unknown) => e,
    );
    expect(header).toEqual(smuxError('ERR_SMUX_INVALID_ARGUMENT', 'call header "n" must be a string, got 1 (a number)'));
    expect(() => new SmuxRecordBuilder('tea').setTimeout(-1)).toThrow(SmuxError);
    expect(() => new SmuxRecordBuilder('tea').setHeaders({ n: 2 as unknown as string })).toThrow(SmuxError);
    const missing = await firstValueFrom(client.send('teapot', undefined)).catch((e: unknown) => e);
    expect(missing).toEqual(smuxError('ERR_SMUX_INVALID_ARGUMENT'));
    expect(() => trackClient(new ClientSmux({ port: 1 })).unwrap()).toThrow(SmuxError);
  });
});
