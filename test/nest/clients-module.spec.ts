import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller, Inject, Injectable, Module, type ModuleMetadata } from '@nestjs/common';
import { type ClientProxy, ClientsModule, Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { Test, type TestingModule } from '@nestjs/testing';
import { firstValueFrom, lastValueFrom, range, toArray } from 'rxjs';
import { ClientSmux, type ClientSmuxOptions, type Session, SmuxContext } from '../../lib/index.js';
import { type AppHandle, closeAll, startApp, until } from './helpers.js';

@Controller()
class MathController {
  @MessagePattern('sum')
  sum(@Payload() data: number[]) {
    return data.reduce((a, b) => a + b, 0);
  }

  @MessagePattern('remaining')
  remaining(@Ctx() ctx: SmuxContext) {
    return ctx.getRemainingTime() ?? 'none';
  }

  @MessagePattern({ cmd: 'count' })
  count(@Payload() n: number) {
    return range(1, n);
  }
}

@Injectable()
class MathService {
  constructor(@Inject('MATH') readonly client: ClientProxy) {}

  sum(values: number[]): Promise<number> {
    return firstValueFrom(this.client.send<number>('sum', values));
  }

  count(n: number): Promise<number[]> {
    return lastValueFrom(this.client.send<number>({ cmd: 'count' }, n).pipe(toArray()));
  }
}

class SmuxConfig {
  constructor(readonly options: ClientSmuxOptions) {}
}

describe('ClientsModule with ClientSmux', () => {
  const modules: TestingModule[] = [];
  afterEach(async () => {
    await Promise.all(modules.splice(0).map((m) => m.close()));
    await closeAll();
  });

  async function clientApp(imports: NonNullable<ModuleMetadata['imports']>): Promise<TestingModule> {
    const moduleRef = await Test.createTestingModule({ imports, providers: [MathService] }).compile();
    modules.push(moduleRef);
    await moduleRef.init();
    return moduleRef;
  }

  async function server(): Promise<AppHandle> {
    return startApp({ controllers: [MathController] });
  }

  test('register([{ name, customClass: ClientSmux, options }]): calls work, and closing the app closes the client', async () => {
    const handle = await server();
    const moduleRef = await clientApp([
      ClientsModule.register([{ name: 'MATH', customClass: ClientSmux, options: { host: '127.0.0.1', port: handle.port } }]),
    ]);
    const service = moduleRef.get(MathService);
    expect(service.client).toBeInstanceOf(ClientSmux);
    expect(await service.sum([1, 2, 3, 4])).toBe(10);
    expect(await service.count(4)).toEqual([1, 2, 3, 4]);
    const session = (service.client as ClientSmux).unwrap<Session>();
    expect(handle.sessions).toHaveLength(1);

    await moduleRef.close();
    modules.length = 0;
    expect(session.isClosed).toBe(true);
    expect(() => service.client.unwrap()).toThrow();
    await until(() => handle.sessions[0].isClosed, 5_000, 'the server to see the connection closed');
  });

  test('registerAsync with a factory: the options reach ClientSmux', async () => {
    const handle = await server();
    @Module({
      providers: [{ provide: SmuxConfig, useValue: new SmuxConfig({ host: '127.0.0.1', port: handle.port, timeout: 5_000 }) }],
      exports: [SmuxConfig],
    })
    class ConfigModule {}
    const moduleRef = await clientApp([
      ClientsModule.registerAsync([
        {
          name: 'MATH',
          imports: [ConfigModule],
          inject: [SmuxConfig],
          useFactory: (config: SmuxConfig) => ({ customClass: ClientSmux, options: config.options }),
        },
      ]),
    ]);
    const service = moduleRef.get(MathService);
    expect(await service.sum([5, 5])).toBe(10);
    const remaining = await firstValueFrom(service.client.send<unknown>('remaining', {}));
    expect(typeof remaining).toBe('number'); // the factory's timeout travels with the call
    expect(remaining).toBeLessThanOrEqual(5_000);
    await moduleRef.close();
    modules.length = 0;
    await until(() => handle.sessions[0].isClosed, 5_000, 'the server to see the connection closed');
  });

  test('a client app that never called does not connect, and closes cleanly', async () => {
    const handle = await server();
    const moduleRef = await clientApp([
      ClientsModule.register([{ name: 'MATH', customClass: ClientSmux, options: { host: '127.0.0.1', port: handle.port } }]),
    ]);
    const service = moduleRef.get(MathService);
    expect(() => service.client.unwrap()).toThrow();
    await moduleRef.close();
    modules.length = 0;
    expect(handle.sessions).toHaveLength(0);
  });
});
