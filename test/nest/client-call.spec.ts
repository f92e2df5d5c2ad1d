/**
 * ClientCall on an in-memory session pair with a fake clock and a stub client: what the subscriber gets for each
 * thing a server may send, and what the server sees when the caller lets go.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import type { WritePacket } from '@nestjs/microservices';
import { type SmuxChannel, SmuxError } from '../../lib/smux/index.js';
import { encodeMessage, encodeTransportError, Flag, Kind } from '../../lib/nest/call-codec.js';
import { CallLauncher, type LaunchTarget } from '../../lib/nest/call-launcher.js';
import { ClientCall, type ClientCallHost, openCall, type PendingCall } from '../../lib/nest/client-call.js';
import { createPacketCodec } from '../../lib/nest/packet-codec.js';
import { flush, memorySessions } from '../helpers/memory-pair.js';

let pair: ReturnType<typeof memorySessions>;
afterEach(() => pair?.close());

/** A call opened on the client session; the server end of its stream and what the server received. */
async function open(timeout = 0) {
  pair = memorySessions();
  const packets: WritePacket[] = [];
  const settled: string[] = [];
  const server = { channel: null as SmuxChannel | null, received: Buffer.alloc(0), fin: false };
  pair.server.on('channel', (channel) => {
    server.channel = channel;
    channel.setHandler({
      onData: (data) => (server.received = Buffer.concat([server.received, data])),
      onEnd: () => (server.fin = true),
      onClose: () => undefined,
    });
  });
  const host: ClientCallHost = {
    clock: pair.clock,
    maxMessageBytes: 1 << 20,
    maxSourceBufferBytes: 1 << 20,
    codec: createPacketCodec(false, {
      serializer: { serialize: (v: unknown) => v },
      deserializer: { deserialize: (v: unknown) => v },
      normalizePattern: (p) => JSON.stringify(p),
      patternAsString: (p) => String(p),
    }),
    launch: () => undefined,
    settled: () => void settled.push('settled'),
    cutOff: () => undefined,
    connectError: () => null,
    closing: () => false,
    closes: () => 0,
  };
  const request = encodeMessage(Kind.REQUEST, 0, 'data', { id: '1', pattern: 'p' });
  const call = new ClientCall(host, (packet) => void packets.push(packet), request, timeout, false);
  openCall(call, pair.client.openChannel());
  await flush();
  const reply = (value: unknown, flags: number) => server.channel!.write(Buffer.concat(encodeMessage(Kind.RESPONSE, flags, value)));
  return { call, packets, settled, server, reply, host };
}

/** Every property an app can reach on `value` — its own and its prototypes' (short of Object's), but `constructor`. */
function reachable(value: object): string[] {
  const names: string[] = [];
  for (let at: object | null = value; at !== null && at !== Object.prototype; at = Object.getPrototypeOf(at) as object | null) {
    for (const key of Reflect.ownKeys(at)) if (key !== 'constructor') names.push(String(key));
  }
  return names;
}

describe('ClientCall', () => {
  test('the REQUEST is written first; values arrive in order, LAST completes the call and our FIN follows', async () => {
    const { packets, settled, server, reply } = await open();
    expect(server.received.equals(Buffer.concat(encodeMessage(Kind.REQUEST, 0, 'data', { id: '1', pattern: 'p' })))).toBe(true);
    reply(1, 0);
    reply(2, Flag.LAST);
    await flush();
    expect(packets).toEqual([
      { response: 1, isDisposed: false },
      { response: 2, isDisposed: true },
    ]);
    expect(settled).toEqual(['settled']);
    expect(server.fin).toBe(true);
  });

  test('a TRANSPORT error is a SmuxError; a handler error shaped like one stays what the handler threw', async () => {
    const first = await open();
    first.server.channel!.write(Buffer.concat(encodeTransportError(new SmuxError('ERR_SMUX_SHUTTING_DOWN', 'bye'))));
    await flush();
    expect(first.packets[0].err).toBeInstanceOf(SmuxError);
    expect(first.packets[0].err).toMatchObject({ code: 'ERR_SMUX_SHUTTING_DOWN', message: 'bye', retryable: true });
    pair.close();
    const second = await open();
    second.reply({ code: 'ERR_SMUX_SHUTTING_DOWN', message: 'bye' }, Flag.LAST | Flag.ERROR);
    await flush();
    expect(second.packets[0]).toEqual({ err: { code: 'ERR_SMUX_SHUTTING_DOWN', message: 'bye' }, isDisposed: true });
  });

  test("the server's FIN before LAST fails the call (never an empty success)", async () => {
    const { packets, server, reply } = await open();
    reply('partial', 0);
    server.channel!.end();
    await flush();
    expect(packets[0]).toEqual({ response: 'partial', isDisposed: false });
    expect(packets[1].err).toMatchObject({ code: 'ERR_SMUX_STREAM_CLOSED' });
  });

  test('unsubscribing before LAST cancels: the server sees our FIN, the subscriber gets nothing more', async () => {
    const { call, packets, server, reply } = await open();
    call.unsubscribe();
    await flush();
    expect(server.fin).toBe(true);
    reply('late', Flag.LAST);
    await flush();
    expect(packets).toEqual([]);
  });

  test('the deadline (on the fake clock) fails the call with ERR_SMUX_TIMEOUT and cancels it on the server', async () => {
    const { packets, server } = await open(500);
    pair.clock.advance(499);
    expect(packets).toEqual([]);
    pair.clock.advance(1);
    await flush();
    expect(packets[0].err).toMatchObject({ code: 'ERR_SMUX_TIMEOUT' });
    expect(server.fin).toBe(true);
  });

  test("send()'s subscription holds the call as its teardown: nothing of it is reachable but unsubscribe()", async () => {
    const { host, server } = await open();
    let scheduled: PendingCall | null = null;
    const target: LaunchTarget = {
      schedule: (call) => void (scheduled = call),
      sessionFor: () => Promise.reject(new Error('no events here')),
      checkSize: () => undefined,
    };
    const defaults = { timeout: 0, waitForReady: false, streamHighWaterMark: 64 * 1024 };
    const launcher = new CallLauncher(host, target, { createObserver: () => () => undefined }, defaults);
    const subscription = launcher.send('p', 'data').subscribe();
    const teardown = (subscription as unknown as { _finalizers: object[] })._finalizers[0];
    expect(teardown).toBeInstanceOf(ClientCall);
    expect(teardown).toBe(scheduled);
    // No admission state to reset (a slot never freed), no launch/open/fail, no handlers to feed fake responses to.
    expect(reachable(teardown)).toEqual(['unsubscribe']);
    expect(Object.getOwnPropertyNames(ClientCall).sort()).toEqual(['length', 'name', 'prototype']);
    openCall(scheduled!, pair.client.openChannel()); // the transport still drives it
    await flush();
    subscription.unsubscribe(); // and the teardown still cancels it
    await flush();
    expect(server.fin).toBe(true);
  });
});
