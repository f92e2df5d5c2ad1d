import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload, Transport } from '@nestjs/microservices';
import { EmptyError, firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { type ClientSmux, SMUX_TRANSPORT } from '../../lib/index.js';
import { type AppHandle, closeAll, startApp } from './helpers.js';

@Controller()
class CallsController {
  @MessagePattern('double')
  double(@Payload() n: number): number {
    return n * 2;
  }

  @MessagePattern({ cmd: 'greet', v: 1 })
  greet(@Payload() data: { name: string }): string {
    return `hello ${data.name}`;
  }

  @MessagePattern('echo')
  echo(@Payload() data: unknown): unknown {
    return data;
  }

  @MessagePattern('describe')
  describe(@Payload() data: unknown): { type: string; isBuffer: boolean; length?: number; hex?: string } {
    if (Buffer.isBuffer(data)) return { type: 'buffer', isBuffer: true, length: data.length, hex: data.subarray(0, 8).toString('hex') };
    return { type: Array.isArray(data) ? 'array' : typeof data, isBuffer: false };
  }

  @MessagePattern('bytes-out')
  bytesOut(@Payload() kind: string): Uint8Array {
    return kind === 'uint8array' ? new Uint8Array([1, 2, 3, 250]) : Buffer.from([9, 8, 7]);
  }

  @MessagePattern('nothing')
  nothing(): void {
    return undefined;
  }

  @MessagePattern('async')
  async asyncHandler(@Payload() n: number): Promise<{ n: number }> {
    await new Promise((resolve) => setImmediate(resolve));
    return { n: n + 1 };
  }

  @MessagePattern('generator')
  async *generator(@Payload() n: number): AsyncGenerator<number> {
    for (let i = 0; i < n; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      yield i * i;
    }
  }

  @MessagePattern('smux-only', SMUX_TRANSPORT)
  smuxOnly(): string {
    return 'smux';
  }

  @MessagePattern('tcp-only', Transport.TCP)
  tcpOnly(): string {
    return 'tcp';
  }

  @MessagePattern('readable-strings')
  readableStrings(): Readable {
    return Readable.from(['alpha', 'beta', 'gamma']);
  }

  @MessagePattern('readable-bytes')
  readableBytes(): Readable {
    return Readable.from([Buffer.from('one'), Buffer.from('two')]);
  }
}

describe('request/response calls', () => {
  let handle: AppHandle;
  let client: ClientSmux;

  beforeAll(async () => {
    handle = await startApp({ controllers: [CallsController] });
    client = handle.client();
  });
  afterAll(closeAll);

  test('a string pattern answers', async () => {
    expect(await firstValueFrom(client.send('double', 21))).toBe(42);
  });

  test('an object pattern answers, whatever the key order the caller used', async () => {
    expect(await firstValueFrom(client.send({ cmd: 'greet', v: 1 }, { name: 'ada' }))).toBe('hello ada');
    expect(await firstValueFrom(client.send({ v: 1, cmd: 'greet' }, { name: 'bob' }))).toBe('hello bob');
  });

  test('1000 concurrent calls on one connection are each answered with their own result', async () => {
    const fresh = handle.client();
    const sessionsBefore = handle.sessions.length;
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => firstValueFrom(fresh.send<number>('double', i))));
    expect(results).toEqual(Array.from({ length: 1000 }, (_, i) => i * 2));
    expect(handle.sessions.length - sessionsBefore).toBe(1);
    expect(handle.sessions.at(-1)!.stats.streamsAccepted).toBe(1001); // and the hello
  });

  test('a Buffer payload arrives as a Buffer and comes back as one (raw bytes, not a JSON array)', async () => {
    const payload = Buffer.from([0, 1, 2, 255, 128]);
    expect(await firstValueFrom(client.send('describe', payload))).toEqual({
      type: 'buffer',
      isBuffer: true,
      length: 5,
      hex: '000102ff80',
    });
    const back = await firstValueFrom(client.send<Buffer>('echo', payload));
    expect(Buffer.isBuffer(back)).toBe(true);
    expect(back.equals(payload)).toBe(true);
  });

  test('a Uint8Array payload arrives as a Buffer; Buffer and Uint8Array replies arrive as Buffers', async () => {
    expect(await firstValueFrom(client.send('describe', new Uint8Array([7, 7, 7])))).toEqual({
      type: 'buffer',
      isBuffer: true,
      length: 3,
      hex: '070707',
    });
    const fromUint8 = await firstValueFrom(client.send<Buffer>('bytes-out', 'uint8array'));
    expect(Buffer.isBuffer(fromUint8)).toBe(true);
    expect([...fromUint8]).toEqual([1, 2, 3, 250]);
    const fromBuffer = await firstValueFrom(client.send<Buffer>('bytes-out', 'buffer'));
    expect(Buffer.isBuffer(fromBuffer)).toBe(true);
    expect([...fromBuffer]).toEqual([9, 8, 7]);
  });

  test('a 5 MiB Buffer goes there and back intact', async () => {
    const big = randomBytes(5 * 1024 * 1024);
    const back = await firstValueFrom(client.send<Buffer>('echo', big));
    expect(Buffer.isBuffer(back)).toBe(true);
    expect(back.length).toBe(big.length);
    expect(back.equals(big)).toBe(true);
  });

  test('strings arrive as strings, also ones that look like JSON', async () => {
    for (const text of ['héllo wörld ✓', '42', '{"a":1}', '', 'null']) {
      expect(await firstValueFrom(client.send('describe', text))).toEqual({ type: 'string', isBuffer: false });
      const back = await firstValueFrom(client.send('echo', text));
      expect(back).toBe(text);
    }
  });

  test('large text there and back: ASCII strings and JSON (sent without encoding them first), other text, many at once', async () => {
    const ascii = 'nestjs-smux '.repeat(7_000); // 84 000 characters: cut across three 32 KiB frames
    const json = { items: Array.from({ length: 500 }, (_, i) => ({ i, name: `item ${i}` })) };
    const other = 'héllo wörld ✓ '.repeat(2_000);
    const values: unknown[] = [ascii, json, other, 'x'.repeat(4_097), ascii.slice(1)];
    const sent = values.flatMap((v) => [v, v, v]);
    const backs = await Promise.all(sent.map((v) => firstValueFrom(client.send('echo', v))));
    // Which replies differ (a diff of 84 000-character strings would bury the answer).
    expect(backs.flatMap((back, i) => (isDeepStrictEqual(back, sent[i]) ? [] : [i]))).toEqual([]);
    expect(await firstValueFrom(client.send('describe', ascii))).toEqual({ type: 'string', isBuffer: false });
  });

  test('JSON values keep their types', async () => {
    const value = { n: 1.5, b: false, s: 'x', list: [1, 'two', null], nested: { deep: [{}] } };
    expect(await firstValueFrom(client.send('echo', value))).toEqual(value);
    expect(await firstValueFrom(client.send('echo', 0))).toBe(0);
    expect(await firstValueFrom(client.send('echo', false))).toBe(false);
    expect(await firstValueFrom(client.send('describe', [1, 2]))).toEqual({ type: 'array', isBuffer: false });
  });

  test('a handler returning undefined completes without a value', async () => {
    await expect(firstValueFrom(client.send('nothing', {}))).rejects.toBeInstanceOf(EmptyError);
    expect(await lastValueFrom(client.send('nothing', {}), { defaultValue: 'default' })).toBe('default');
    expect(await lastValueFrom(client.send('nothing', {}).pipe(toArray()))).toEqual([]);
  });

  test('an async handler answers with its resolved value', async () => {
    expect(await firstValueFrom(client.send('async', 1))).toEqual({ n: 2 });
  });

  test('an async generator streams each value in order, then completes', async () => {
    expect(await lastValueFrom(client.send('generator', 6).pipe(toArray()))).toEqual([0, 1, 4, 9, 16, 25]);
    expect(await lastValueFrom(client.send('generator', 0).pipe(toArray()))).toEqual([]);
  });

  test('a Readable streams its chunks in order', async () => {
    expect(await lastValueFrom(client.send('readable-strings', {}).pipe(toArray()))).toEqual(['alpha', 'beta', 'gamma']);
    const chunks = await lastValueFrom(client.send<Buffer>('readable-bytes', {}).pipe(toArray()));
    expect(chunks.every((c) => Buffer.isBuffer(c))).toBe(true);
    expect(chunks.map((c) => c.toString())).toEqual(['one', 'two']);
  });

  test('a null or undefined payload is refused by the client as Nest does', async () => {
    await expect(firstValueFrom(client.send('echo', undefined))).rejects.toBeInstanceOf(Error);
  });

  test('handlers bound to SMUX_TRANSPORT answer; handlers bound to another transport are not registered here', async () => {
    expect(await firstValueFrom(client.send('smux-only', {}))).toBe('smux');
    await expect(firstValueFrom(client.send('tcp-only', {}))).rejects.toBe(
      'There is no matching message handler defined in the remote service.',
    );
  });
});
