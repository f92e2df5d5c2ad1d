import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, type SmuxChannel } from '../../lib/index.js';
import { type CallMessage, encodeMessage, Flag, Kind, TRANSPORT_ERROR } from '../../lib/nest/call-codec.js';
import {
  type AppHandle,
  closeAll,
  codeOf,
  rawCall,
  rawServer,
  rawSession,
  rejection,
  response,
  startApp,
  trackClient,
  until,
  within,
} from './helpers.js';

describe('ClientSmux against a server that breaks the rules', () => {
  let server: Awaited<ReturnType<typeof rawServer>> | null = null;
  afterEach(async () => {
    await closeAll();
    await server?.close();
    server = null;
  });

  async function clientOf(answer: (channel: SmuxChannel, request: CallMessage) => void): Promise<ClientSmux> {
    server = await rawServer(answer);
    return trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port }));
  }

  function collect(client: ClientSmux) {
    const values: unknown[] = [];
    const done = new Promise<unknown>((resolve) =>
      client.send('x', {}).subscribe({ next: (v) => void values.push(v), error: resolve, complete: () => resolve('complete') }),
    );
    return { values, done: within(done, 'the call to end') };
  }

  test('FIN without a reply fails the call (never an empty success)', async () => {
    const client = await clientOf((channel) => channel.end());
    expect(codeOf(await rejection(firstValueFrom(client.send('x', {}))))).toBe('ERR_SMUX_STREAM_CLOSED');
  });

  test('values without LAST, then FIN: the values arrive, then the call fails', async () => {
    const client = await clientOf((channel) => {
      channel.write(response(1));
      channel.write(response(2));
      channel.end();
    });
    const call = collect(client);
    expect(codeOf(await call.done)).toBe('ERR_SMUX_STREAM_CLOSED');
    expect(call.values).toEqual([1, 2]);
  });

  test('a truncated last message then FIN fails the call', async () => {
    const client = await clientOf((channel) => {
      channel.write(response('complete value', Flag.LAST).subarray(0, 12));
      channel.end();
    });
    const call = collect(client);
    expect(codeOf(await call.done)).toBe('ERR_SMUX_STREAM_CLOSED');
    expect(call.values).toEqual([]);
  });

  test('a malformed message or a wrong kind fails the call with ERR_SMUX_PROTOCOL', async () => {
    let reply: Buffer = Buffer.from([99, 0, 0, 0, 0, 0, 0, 0]);
    const client = await clientOf((channel) => channel.write(reply));
    expect(codeOf(await rejection(firstValueFrom(client.send('x', {}))))).toBe('ERR_SMUX_PROTOCOL');
    reply = Buffer.concat(encodeMessage(Kind.REQUEST, 0, {}, { id: '1', pattern: 'x' }));
    expect(codeOf(await rejection(firstValueFrom(client.send('x', {}))))).toBe('ERR_SMUX_PROTOCOL');
  });

  test('a reply written one byte at a time is put back together', async () => {
    const client = await clientOf((channel) => {
      for (const byte of response({ long: 'value'.repeat(20) }, Flag.LAST)) channel.write(Buffer.from([byte]));
      channel.end();
    });
    expect(await firstValueFrom(client.send('x', {}))).toEqual({ long: 'value'.repeat(20) });
  });

  test('anything after LAST is ignored', async () => {
    const client = await clientOf((channel) => {
      channel.write(Buffer.concat([response('only', Flag.LAST), response('extra', Flag.LAST)]));
      channel.end();
    });
    const call = collect(client);
    expect(await call.done).toBe('complete');
    expect(call.values).toEqual(['only']);
  });
});

/** Events the app ran (a refused EVENT must not be one of them). */
const noted: unknown[] = [];

@Controller()
class EchoController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
  }

  @EventPattern('note')
  note(@Payload() data: unknown) {
    noted.push(data);
  }
}

describe('ServerSmux against a caller that breaks the rules', () => {
  let handle: AppHandle;
  beforeAll(async () => {
    handle = await startApp({ controllers: [EchoController] });
  });
  afterAll(closeAll);

  test('a first message of an unknown kind, or DATA instead of REQUEST, is answered with ERR_SMUX_PROTOCOL', async () => {
    const session = await rawSession(handle.port);
    for (const bytes of [Buffer.from([42, 0, 0, 0, 0, 0, 0, 0]), Buffer.concat(encodeMessage(Kind.DATA, 0, 'x'))]) {
      const call = rawCall(session, [bytes]);
      const last = await within(call.last, 'the answer');
      expect(last.flags & (Flag.LAST | Flag.ERROR)).toBe(Flag.LAST | Flag.ERROR);
      expect(last.body).toEqual({ code: 'ERR_SMUX_PROTOCOL', message: expect.any(String) });
      await within(call.ended, "the server's FIN");
      call.channel.end();
    }
    const ok = rawCall(session, encodeMessage(Kind.REQUEST, 0, 'still fine', { id: '1', pattern: 'echo' }));
    expect((await within(ok.last, 'the answer')).body).toBe('still fine');
  });

  test('a FIN in the middle of a request gets no answer and leaves no stream behind', async () => {
    const session = await rawSession(handle.port);
    const request = Buffer.concat(encodeMessage(Kind.REQUEST, 0, { a: 1 }, { id: '1', pattern: 'echo' }));
    const call = rawCall(session, [request.subarray(0, request.length - 3)]);
    call.channel.end();
    await within(call.closed, 'the stream to close');
    expect(call.messages).toEqual([]);
    const serverSession = handle.sessions.at(-1)!;
    await until(() => serverSession.numStreams === 0, 5_000, 'the server to release the stream');
  });

  /** Expects `call` to be refused with ERR_SMUX_PROTOCOL whose message contains `text`, then the server's FIN. */
  async function expectRefused(call: ReturnType<typeof rawCall>, text: string): Promise<void> {
    const last = await within(call.last, 'the answer');
    expect(last.kind).toBe(Kind.RESPONSE);
    expect(last.flags).toBe(TRANSPORT_ERROR);
    expect(last.body).toEqual({ code: 'ERR_SMUX_PROTOCOL', message: expect.stringContaining(text) });
    await within(call.ended, "the server's FIN");
    call.channel.end();
  }

  /** A control stream whose hello was answered. */
  async function controlStream(session: Awaited<ReturnType<typeof rawSession>>): Promise<ReturnType<typeof rawCall>> {
    const control = rawCall(session, encodeMessage(Kind.HELLO, 0, { protocol: 1, features: ['control'] }));
    await until(() => control.messages.length > 0, 5_000, "the server's HELLO");
    expect(control.messages[0].kind).toBe(Kind.HELLO);
    return control;
  }

  test('a second HELLO on the control stream itself is refused there with ERR_SMUX_PROTOCOL; calls go on', async () => {
    const session = await rawSession(handle.port);
    const control = await controlStream(session);
    for (const buffer of encodeMessage(Kind.HELLO, 0, { protocol: 1 })) control.channel.write(buffer);
    await expectRefused(control, 'a second HELLO on one connection');
    const ok = rawCall(session, encodeMessage(Kind.REQUEST, 0, 'still fine', { pattern: 'echo' }));
    expect((await within(ok.last, 'the answer')).body).toBe('still fine');
  });

  test('a REQUEST (or an EVENT, a DRAIN) on the control stream is refused there with ERR_SMUX_PROTOCOL, not run', async () => {
    for (const message of [
      encodeMessage(Kind.REQUEST, 0, 'on control', { pattern: 'echo' }),
      encodeMessage(Kind.EVENT, 0, 'on control', { pattern: 'note' }),
      encodeMessage(Kind.DRAIN, 0, { reason: 'a client has none to give' }),
    ]) {
      const session = await rawSession(handle.port);
      const control = await controlStream(session);
      for (const buffer of message) control.channel.write(buffer);
      await expectRefused(control, 'on the control stream (only PING and PONG are read there)');
      expect(control.messages.map((m) => m.kind)).toEqual([Kind.HELLO, Kind.RESPONSE]); // no echo of the request
    }
    expect(noted).toEqual([]);
  });

  test('FEED on a REQUEST is refused (it ate 16 body bytes as its fields)', async () => {
    const session = await rawSession(handle.port);
    await expectRefused(
      rawCall(session, encodeMessage(Kind.REQUEST, Flag.FEED, 'twenty characters!!!', { pattern: 'echo' })),
      'flag FEED not valid on REQUEST',
    );
  });

  test('LAST, ERROR, TRANSPORT (or STATUS) on a REQUEST are refused', async () => {
    const session = await rawSession(handle.port);
    for (const [flags, names] of [
      [Flag.LAST, 'LAST'],
      [Flag.ERROR, 'ERROR'],
      [Flag.LAST | Flag.ERROR | Flag.TRANSPORT, 'LAST|ERROR|TRANSPORT'],
    ] as const) {
      await expectRefused(rawCall(session, encodeMessage(Kind.REQUEST, flags, 'x', { pattern: 'echo' })), `${names} not valid on REQUEST`);
    }
    await expectRefused(rawCall(session, encodeMessage(Kind.REQUEST, 0, 'x', { pattern: 'echo', status: 'error' })), 'flag STATUS');
  });

  test('a STREAM request with a body is refused (its data follows as DATA)', async () => {
    const session = await rawSession(handle.port);
    const request = encodeMessage(Kind.REQUEST, Flag.STREAM, 'a body', { pattern: 'echo' });
    await expectRefused(rawCall(session, [...request, ...encodeMessage(Kind.END, 0, undefined)]), 'a STREAM request with a body');
  });

  test('STREAM and RAW together on a REQUEST are refused', async () => {
    const session = await rawSession(handle.port);
    const request = encodeMessage(Kind.REQUEST, Flag.STREAM | Flag.RAW, undefined, { pattern: 'echo' });
    await expectRefused(rawCall(session, [...request, ...encodeMessage(Kind.END, 0, undefined)]), 'STREAM and RAW together');
  });

  test('an EVENT with STREAM (or another flag an EVENT does not take) is refused and not run', async () => {
    const session = await rawSession(handle.port);
    for (const [flags, name] of [
      [Flag.STREAM, 'STREAM'],
      [Flag.RAW, 'RAW'],
      [Flag.LAST, 'LAST'],
      [Flag.TIMEOUT, 'TIMEOUT'],
    ] as const) {
      const event = encodeMessage(Kind.EVENT, flags, `bad ${name}`, { pattern: 'note' });
      await expectRefused(rawCall(session, [...event, ...encodeMessage(Kind.DATA, 0, 'item')]), `flag ${name} not valid on EVENT`);
    }
    rawCall(session, encodeMessage(Kind.EVENT, 0, 'good', { pattern: 'note' })).channel.end();
    await until(() => noted.length > 0, 5_000, 'the valid event to run');
    expect(noted).toEqual(['good']);
  });

  test('a request written one byte at a time is answered', async () => {
    const session = await rawSession(handle.port);
    const request = Buffer.concat(encodeMessage(Kind.REQUEST, 0, { bytes: 'by'.repeat(50) }, { id: '7', pattern: 'echo' }));
    const call = rawCall(
      session,
      [...request].map((b) => Buffer.from([b])),
    );
    expect((await within(call.last, 'the answer')).body).toEqual({ bytes: 'by'.repeat(50) });
  });
});
