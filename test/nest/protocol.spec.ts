import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, type SmuxChannel } from '../../lib/index.js';
import { type CallMessage, encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
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

@Controller()
class EchoController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
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
