// The e2e spec of a project made the `nest new` way (CommonJS, ts-jest, the default "jest" block of its
// package.json, nothing added): a Nest 11 microservice on ServerSmux and a ClientsModule client over TCP on
// 127.0.0.1. Jest runs it as CommonJS, so it gets the package's CommonJS build.
import { Controller, Module } from '@nestjs/common';
import { type ClientProxy, ClientsModule, MessagePattern, Payload } from '@nestjs/microservices';
import { Test, type TestingModule } from '@nestjs/testing';
import type { AddressInfo, Server } from 'net';
import { firstValueFrom } from 'rxjs';
import { ServerSmux, smuxClient } from 'nestjs-smux';

@Controller()
class MathController {
  @MessagePattern('math.sum')
  sum(@Payload() numbers: number[]): number {
    return numbers.reduce((a, b) => a + b, 0);
  }
}

@Module({ controllers: [MathController] })
class MathModule {}

describe('nestjs-smux in a nest new project', () => {
  it('loads the CommonJS build', () => {
    expect(require.resolve('nestjs-smux')).toMatch(/[\\/]nestjs-smux[\\/]dist[\\/]cjs[\\/]index\.js$/);
  });

  it('answers a @MessagePattern through a ClientsModule client', async () => {
    const server = new ServerSmux({ host: '127.0.0.1', port: 0 });
    const serverRef = await Test.createTestingModule({ imports: [MathModule] }).compile();
    const microservice = serverRef.createNestMicroservice({ strategy: server, logger: false });
    let clientRef: TestingModule | undefined;
    try {
      await microservice.listen();
      const { port } = server.unwrap<Server>().address() as AddressInfo;
      clientRef = await Test.createTestingModule({
        imports: [ClientsModule.register([smuxClient({ name: 'MATH', options: { host: '127.0.0.1', port } })])],
      }).compile();
      const client = clientRef.get<ClientProxy>('MATH');
      expect(await firstValueFrom(client.send<number>('math.sum', [1, 2, 3, 4]))).toBe(10);
    } finally {
      await clientRef?.close();
      await microservice.close();
    }
  });
});
