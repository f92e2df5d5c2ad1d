/**
 * `version: 'auto'`: a server session speaks whichever protocol version the client's first frame has, and sends
 * nothing before it knows. And what a session says when the very first bytes are not smux, or not its version.
 */
import { Duplex } from 'node:stream';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Cmd, Session, SmuxError } from '../../lib/smux/index.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { closeError, cleanup, collect, echo, pair, rawClientOf, rawServerOf, settle } from '../helpers/sessions.js';
import { until } from '../helpers/net.js';

afterEach(cleanup);

describe("version: 'auto' on a server", () => {
  test.each([1, 2] as const)('a version %i client is answered in its version; streams work both ways', async (version) => {
    const { client, server } = await pair({ version }, { version: 'auto' });
    expect(server.version).toBeNull();
    server.on('stream', echo);
    const stream = await client.openStream();
    const got = collect(stream);
    stream.end(Buffer.alloc(300_000, 7)); // beyond the initial v2 window: needs the server's UPDs in v2
    await until(() => got.ended, 10_000, 'the echo');
    expect(Buffer.concat(got.chunks).equals(Buffer.alloc(300_000, 7))).toBe(true);
    expect(server.version).toBe(version);
    expect(client.version).toBe(version);
  });

  test('nothing is sent before the first frame, not even keep-alive NOPs; they follow in the detected version', async () => {
    const clock = new FakeClock();
    const { raw, server } = await rawClientOf({ version: 'auto', keepAliveInterval: 1_000, keepAliveTimeout: 60_000, clock });
    clock.advance(3_500); // three NOP ticks
    await settle();
    expect(raw.frames).toEqual([]);
    raw.sendRaw(Buffer.from([2, Cmd.SYN, 0, 0, 3, 0, 0, 0])); // a v2 SYN
    await until(() => raw.frames.length > 0, 5_000, 'the held NOP');
    expect(server.version).toBe(2);
    expect(raw.frames.map((f) => [f.version, f.cmd])).toEqual([[2, Cmd.NOP]]);
  });

  test('a client must choose a version', () => {
    const error = (() => {
      try {
        Session.client(new Duplex(), { version: 'auto' });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(SmuxError);
    expect(error).toMatchObject({ code: 'ERR_SMUX_INVALID_CONFIG' });
    expect((error as Error).message).toContain("'auto'");
  });
});

describe('first bytes that are not smux', () => {
  test('an HTTP request to a detecting server: ERR_SMUX_PROTOCOL naming what arrived', async () => {
    const { raw, server } = await rawClientOf({ version: 'auto' });
    raw.sendRaw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    const error = await closeError(server);
    expect(error?.code).toBe('ERR_SMUX_PROTOCOL');
    expect(error?.message).toContain('does not speak smux');
    expect(error?.message).toContain('GET / HTTP/1.1');
  });

  test('zero bytes to a detecting server are not smux either (version 0 is no version)', async () => {
    const { raw, server } = await rawClientOf({ version: 'auto' });
    raw.sendRaw(Buffer.alloc(100));
    const error = await closeError(server);
    expect(error?.message).toMatch(/^the peer does not speak smux: its first bytes are 00 00 00 00/);
  });

  test('an HTTP answer to a client: the message shows it', async () => {
    const { raw, client } = await rawServerOf({ version: 2 });
    raw.sendRaw(Buffer.from('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'));
    const error = await closeError(client);
    expect(error?.code).toBe('ERR_SMUX_PROTOCOL');
    expect(error?.message).toMatch(/does not speak smux: its first bytes are 48 54 54 50 .*HTTP\/1\.1 400 Bad/);
  });

  test('a first frame of the right version that breaks a rule (a NOP with a payload) is an invalid frame, not another protocol', async () => {
    const { raw, server } = await rawClientOf({ version: 2 });
    raw.sendRaw(Buffer.from([2, 3, 0xff, 0xff, 0, 0, 0, 0])); // NOP, length 65 535
    const error = await closeError(server);
    expect(error?.code).toBe('ERR_SMUX_PROTOCOL');
    expect(error?.message).toMatch(/^invalid first frame: .* \(stream 0\); its first bytes are 02 03 ff ff 00 00 00 00/);
  });

  test('a v1 client against a v2 server: "protocol version mismatch"', async () => {
    const { raw, server } = await rawClientOf({ version: 2 });
    raw.sendRaw(Buffer.from([1, Cmd.SYN, 0, 0, 3, 0, 0, 0])); // a v1 SYN
    const error = await closeError(server);
    expect(error?.code).toBe('ERR_SMUX_PROTOCOL');
    expect(error?.message).toBe('smux protocol version mismatch: the peer sent a version 1 frame, this session speaks version 2');
  });

  test('a bad frame later in a session keeps the plain message', async () => {
    const { raw, server } = await rawClientOf({ version: 1 });
    raw.send(Cmd.NOP, 0);
    raw.sendRaw(Buffer.from([7, Cmd.NOP, 0, 0, 0, 0, 0, 0]));
    const error = await closeError(server);
    expect(error?.message).toBe("invalid frame: frame version 7 does not match the session's version 1 (stream 0)");
  });
});
