/**
 * The server's end of the control stream (lib/nest/server-control.ts): a HELLO is answered with the server's own,
 * once per connection; a malformed one, a second one, and one from a server this server dialled are refused with
 * ERR_SMUX_PROTOCOL on their stream, and the connection goes on serving calls.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern } from '@nestjs/microservices';
import { encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { CALL_PROTOCOL } from '../../lib/nest/hello.js';
import { helloRefusal } from '../../lib/nest/server-control.js';
import { closeAll, rawCall, rawSession, startApp, until, within } from './helpers.js';

@Controller()
class EchoController {
  @MessagePattern('echo')
  echo(data: unknown): unknown {
    return data;
  }
}

afterEach(closeAll);

const hello = (body: unknown): Buffer[] => encodeMessage(Kind.HELLO, 0, body);

describe('helloRefusal', () => {
  test('a HELLO naming its protocol is answered', () => {
    expect(helloRefusal({ protocol: 1 }, false, false)).toBeNull();
    expect(helloRefusal({ protocol: 1, features: ['control'] }, false, false)).toBeNull();
  });

  test.each([
    ['no body', undefined],
    ['null', null],
    ['a string', 'hello'],
    ['no protocol', { features: [] }],
    ['a protocol that is not a number', { protocol: '1' }],
  ])('a malformed HELLO (%s) is refused', (_what, body) => {
    expect(helloRefusal(body, false, false)).toMatchObject({ code: 'ERR_SMUX_PROTOCOL', message: 'a malformed HELLO' });
  });

  test('a second HELLO on one connection is refused, however well formed', () => {
    expect(helloRefusal({ protocol: 1 }, false, true)).toMatchObject({
      code: 'ERR_SMUX_PROTOCOL',
      message: 'a second HELLO on one connection',
    });
  });

  test('a server this server dialled never says hello to it', () => {
    expect(helloRefusal({ protocol: 1 }, true, false)).toMatchObject({
      code: 'ERR_SMUX_PROTOCOL',
      message: 'a HELLO from the server we dialled',
    });
  });
});

describe('the control stream of a real server', () => {
  test('the first HELLO gets the server HELLO; a second and a malformed one are refused; calls go on', async () => {
    const app = await startApp({ controllers: [EchoController] });
    const session = await rawSession(app.port);

    const first = rawCall(session, hello({ protocol: CALL_PROTOCOL }));
    await until(() => first.messages.length > 0, 5_000, 'the server HELLO');
    expect(first.messages[0]).toMatchObject({ kind: Kind.HELLO, body: { protocol: CALL_PROTOCOL } });

    const second = rawCall(session, hello({ protocol: CALL_PROTOCOL }));
    const refused = await within(second.last, 'the refusal of a second HELLO');
    expect(refused.flags & Flag.ERROR).toBe(Flag.ERROR);
    expect(refused.body).toMatchObject({ code: 'ERR_SMUX_PROTOCOL', message: 'a second HELLO on one connection' });

    const other = await rawSession(app.port);
    const malformed = rawCall(other, hello({ features: [] }));
    expect((await within(malformed.last, 'the refusal of a malformed HELLO')).body).toMatchObject({
      code: 'ERR_SMUX_PROTOCOL',
      message: 'a malformed HELLO',
    });

    const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, 'still served', { id: '1', pattern: 'echo' }));
    expect((await within(call.last, 'a call after the refusals')).body).toBe('still served');
  });
});
