import { type DynamicModule, Module } from '@nestjs/common';
import { ClientsModule } from '@nestjs/microservices';
import { smuxClient } from '../../lib/index.js';
import { MATH_SERVICE, MathClient } from './math.client.js';

@Module({})
export class ClientModule {
  static forPort(port: number): DynamicModule {
    return {
      module: ClientModule,
      // smuxClient() types the options: tsc catches a misspelt one (Nest types custom client options loosely).
      imports: [ClientsModule.register([smuxClient({ name: MATH_SERVICE, options: { host: '127.0.0.1', port, timeout: 5_000 } })])],
      providers: [MathClient],
      exports: [MathClient],
    };
  }
}
