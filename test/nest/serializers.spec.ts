import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, type Deserializer, EventPattern, MessagePattern, Payload, RpcException, type Serializer } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, range, toArray } from 'rxjs';
import { type ClientSmux, SmuxContext, SmuxRecordBuilder } from '../../lib/index.js';
import { closeAll, startApp, until } from './helpers.js';

/** Everything the custom (de)serializers saw, by side. */
const log = { clientOut: [] as unknown[], serverIn: [] as unknown[], serverOut: [] as unknown[], clientIn: [] as unknown[] };
const events: unknown[] = [];

/** JSON in a Buffer with a magic prefix: nobody but these (de)serializers can read it. */
const MAGIC = 'SER1:';
const toWire = (value: unknown): Buffer => Buffer.from(MAGIC + JSON.stringify(value));
function fromWire(value: unknown): unknown {
  const text = Buffer.isBuffer(value) ? value.toString() : String(value);
  if (!text.startsWith(MAGIC)) throw new Error(`not ours: ${text.slice(0, 20)}`);
  return JSON.parse(text.slice(MAGIC.length));
}

const clientSerializer: Serializer = { serialize: (packet: unknown) => (log.clientOut.push(packet), toWire(packet)) };
const serverDeserializer: Deserializer = { deserialize: (value: unknown) => (log.serverIn.push(value), fromWire(value)) };
const serverSerializer: Serializer = { serialize: (packet: unknown) => (log.serverOut.push(packet), toWire(packet)) };
let delays = [3, 0, 1, 0];
/** Async, with uneven delays: replies must still reach the caller in order. */
const clientDeserializer: Deserializer = {
  deserialize: async (value: unknown) => {
    log.clientIn.push(value);
    const turns = delays[log.clientIn.length % delays.length];
    for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
    return fromWire(value);
  },
};

@Controller()
class SerializedController {
  @MessagePattern('sum')
  sum(@Payload() data: number[]) {
    return data.reduce((a, b) => a + b, 0);
  }

  @MessagePattern({ cmd: 'range' })
  range(@Payload() n: number) {
    return range(0, n);
  }

  @MessagePattern('fail')
  fail() {
    throw new RpcException({ code: 'E_SER' });
  }

  @MessagePattern('headers')
  headers(@Ctx() ctx: SmuxContext) {
    return ctx.getHeaders();
  }

  @EventPattern('event')
  event(@Payload() data: unknown) {
    events.push(data);
  }
}

describe('custom serializers and deserializers', () => {
  let client: ClientSmux;

  beforeAll(async () => {
    const handle = await startApp({
      controllers: [SerializedController],
      server: { serializer: serverSerializer, deserializer: serverDeserializer },
    });
    client = handle.client({ serializer: clientSerializer, deserializer: clientDeserializer });
  });
  afterAll(closeAll);

  test('a call goes through all four, and the serializers see Nest packets', async () => {
    expect(await firstValueFrom(client.send('sum', [1, 2, 3]))).toBe(6);
    expect(log.clientOut.at(-1)).toMatchObject({ pattern: 'sum', data: [1, 2, 3], id: expect.any(String) });
    expect(Buffer.isBuffer(log.serverIn.at(-1))).toBe(true);
    expect(log.serverOut.at(-1)).toMatchObject({ response: 6, isDisposed: true, id: (log.clientOut.at(-1) as { id: string }).id });
    expect(Buffer.isBuffer(log.clientIn.at(-1))).toBe(true);
  });

  test('object patterns and multi-value replies keep their order through an async deserializer', async () => {
    delays = [3, 0, 1, 0, 2];
    expect(await lastValueFrom(client.send({ cmd: 'range' }, 25).pipe(toArray()))).toEqual(Array.from({ length: 25 }, (_, i) => i));
  });

  test('errors and the "no handler" reply pass through the serializers', async () => {
    await expect(firstValueFrom(client.send('fail', {}))).rejects.toEqual({ code: 'E_SER' });
    await expect(firstValueFrom(client.send('nobody', {}))).rejects.toBe(
      'There is no matching message handler defined in the remote service.',
    );
  });

  test('record headers and events travel through them too', async () => {
    expect(await firstValueFrom(client.send('headers', new SmuxRecordBuilder({}).setHeaders({ h: 'v' }).build()))).toEqual({ h: 'v' });
    await lastValueFrom(client.emit('event', { e: 1 }), { defaultValue: undefined });
    await until(() => events.length === 1, 5_000, 'the event');
    expect(events).toEqual([{ e: 1 }]);
    expect(log.clientOut.at(-1)).toEqual({ pattern: 'event', data: { e: 1 } }); // an event's packet has no id
  });

  test('concurrent calls each get their own reply; each request packet its own id, which its replies carry', async () => {
    const before = { out: log.clientOut.length, replies: log.serverOut.length };
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => firstValueFrom(client.send('sum', [i, i]))));
    expect(results).toEqual(Array.from({ length: 100 }, (_, i) => 2 * i));
    const ids = log.clientOut.slice(before.out).map((packet) => (packet as { id?: unknown }).id);
    expect(ids.every((id) => typeof id === 'string' && id !== '')).toBe(true);
    expect(new Set(ids).size).toBe(100);
    const replyIds = log.serverOut.slice(before.replies).map((packet) => (packet as { id?: unknown }).id);
    expect(new Set(replyIds)).toEqual(new Set(ids));
  });
});

/** Serializers that make text (JSON strings), as many applications write them: large ASCII text travels as is. */
describe('serializers that return text', () => {
  let client: ClientSmux;
  const textSerializer: Serializer = { serialize: (packet: unknown) => JSON.stringify(packet) };
  const textDeserializer: Deserializer = {
    deserialize: (value: unknown) => JSON.parse(Buffer.isBuffer(value) ? value.toString() : String(value)) as unknown,
  };

  beforeAll(async () => {
    events.length = 0;
    const handle = await startApp({
      controllers: [SerializedController],
      server: { serializer: textSerializer, deserializer: textDeserializer },
    });
    client = handle.client({ serializer: textSerializer, deserializer: textDeserializer });
  });
  afterAll(closeAll);

  test('large ASCII and other text, calls and events, there and back', async () => {
    const big = Array.from({ length: 3_000 }, (_, i) => i); // ≈ 14 KB of ASCII JSON
    expect(await firstValueFrom(client.send('sum', big))).toBe((2_999 * 3_000) / 2);
    expect(await firstValueFrom(client.send('headers', new SmuxRecordBuilder({}).setHeaders({ h: 'é'.repeat(3_000) }).build()))).toEqual({
      h: 'é'.repeat(3_000),
    });
    await lastValueFrom(client.emit('event', { text: 'e'.repeat(10_000) }), { defaultValue: undefined });
    await lastValueFrom(client.emit('event', { text: 'ü'.repeat(10_000) }), { defaultValue: undefined });
    await until(() => events.length === 2, 5_000, 'the events');
    expect(events).toEqual([{ text: 'e'.repeat(10_000) }, { text: 'ü'.repeat(10_000) }]);
  });
});
