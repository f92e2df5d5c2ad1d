import { type DynamicModule, Module } from '@nestjs/common';
import { ClientsModule } from '@nestjs/microservices';
import { smuxClient } from '../../lib/index.js';
import { ChatClient } from './chat.client.js';
import { FilesClient } from './files.client.js';
import { FramesClient } from './frames.client.js';
import { MathClient } from './math.client.js';
import { SAMPLE_SERVICE } from './sample-service.js';

@Module({})
export class ClientModule {
  static forPort(port: number): DynamicModule {
    return {
      module: ClientModule,
      // smuxClient() types the options: tsc catches a misspelt one (Nest types custom client options loosely).
      imports: [ClientsModule.register([smuxClient({ name: SAMPLE_SERVICE, options: { host: '127.0.0.1', port, timeout: 5_000 } })])],
      providers: [MathClient, FilesClient, ChatClient, FramesClient],
      exports: [MathClient, FilesClient, ChatClient, FramesClient],
    };
  }
}
