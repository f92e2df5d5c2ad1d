import type { AddressInfo, Server as NetServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller, Module } from '@nestjs/common';
import { Ctx, EventPattern, MessagePattern, Payload, RpcException } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import type { INestMicroservice } from '@nestjs/common';
import { firstValueFrom, interval, lastValueFrom, map, take, toArray } from 'rxjs';
import { ClientSmux, ServerSmux, SmuxContext, SmuxRecordBuilder } from '../../lib/index.js';

const events: unknown[] = [];

@Controller()
class MathController {
  @MessagePattern('sum')
  sum(@Payload() data: number[]): number {
    return data.reduce((a, b) => a + b, 0);
  }

  @MessagePattern({ cmd: 'ticks' })
  ticks(@Payload() n: number) {
    return interval(1).pipe(
      take(n),
      map((i) => i * 10),
    );
  }

  @MessagePattern('bytes')
  bytes(@Payload() data: Buffer): Buffer {
    return Buffer.concat([data, data]);
  }

  @MessagePattern('fail')
  fail(): never {
    throw new RpcException({ code: 'E_BAD', message: 'bad thing' });
  }

  @MessagePattern('headers')
  headers(@Ctx() ctx: SmuxContext) {
    return { pattern: ctx.getPattern(), headers: ctx.getHeaders() };
  }

  @EventPattern('evt')
  onEvent(@Payload() data: unknown) {
    events.push(data);
  }
}

@Module({ controllers: [MathController] })
class AppModule {}

describe('smoke: ServerSmux + ClientSmux', () => {
  let app: INestMicroservice;
  let server: ServerSmux;
  let client: ClientSmux;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    server = new ServerSmux({ host: '127.0.0.1', port: 0 });
    app = moduleRef.createNestMicroservice({ strategy: server });
    await app.listen();
    const port = (server.unwrap<NetServer>().address() as AddressInfo).port;
    client = new ClientSmux({ host: '127.0.0.1', port });
  });

  afterAll(async () => {
    await client.close();
    await app.close();
  });

  test('request/response, observable, bytes, errors, headers, events', async () => {
    expect(await firstValueFrom(client.send('sum', [1, 2, 3]))).toBe(6);
    expect(await lastValueFrom(client.send({ cmd: 'ticks' }, 3).pipe(toArray()))).toEqual([0, 10, 20]);
    const back = await firstValueFrom(client.send<Buffer>('bytes', Buffer.from('ab')));
    expect(Buffer.isBuffer(back) && back.toString()).toBe('abab');
    await expect(firstValueFrom(client.send('fail', {}))).rejects.toEqual({ code: 'E_BAD', message: 'bad thing' });
    await expect(firstValueFrom(client.send('nope', {}))).rejects.toBe(
      'There is no matching message handler defined in the remote service.',
    );
    expect(await firstValueFrom(client.send('headers', new SmuxRecordBuilder({}).setHeaders({ a: '1' }).build()))).toEqual({
      pattern: 'headers',
      headers: { a: '1' },
    });
    await lastValueFrom(client.emit('evt', { x: 1 }), { defaultValue: undefined });
    for (let i = 0; i < 100 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(events).toEqual([{ x: 1 }]);
  });
});
