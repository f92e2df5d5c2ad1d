import { type DynamicModule, Module } from '@nestjs/common';
import { ClientsModule } from '@nestjs/microservices';
import { ClientSmux } from '../../lib/index.js';
import { MATH_SERVICE, MathClient } from './math.client.js';

@Module({})
export class ClientModule {
  static forPort(port: number): DynamicModule {
    return {
      module: ClientModule,
      imports: [
        ClientsModule.register([{ name: MATH_SERVICE, customClass: ClientSmux, options: { host: '127.0.0.1', port, timeout: 5_000 } }]),
      ],
      providers: [MathClient],
      exports: [MathClient],
    };
  }
}
