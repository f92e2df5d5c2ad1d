/**
 * Child of test/nest/tracing-startup.spec.ts, run with slow-otel-lookup.mjs: `@opentelemetry/api` is found 400 ms
 * after the package loads. A client's first call, made at once, and a ServerSmux started at once must both be traced:
 * before, everything in those first moments went untraced. Prints the finished spans as `name kind` lines.
 */
import 'reflect-metadata';
import * as net from 'node:net';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, MessagePattern } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { installOtel } from '../../../helpers/otel.js';
import { ClientSmux, ServerSmux, type SmuxContext, type SmuxError } from '../../../../lib/index.js';

const sdk = installOtel();

@Controller()
class EchoController {
  @MessagePattern('first')
  first(n: number): number {
    return n;
  }

  @MessagePattern('bytes')
  async bytes(_data: unknown, @Ctx() ctx: SmuxContext): Promise<void> {
    const duplex = ctx.getDuplex();
    for await (const chunk of duplex) duplex.write(chunk); // echoes until the caller ends
    duplex.end();
  }
}

@Module({ controllers: [EchoController] })
class EchoModule {}

/** A port free on 127.0.0.1: the client's call starts before the server listens on it. */
const port = await new Promise<number>((resolve) => {
  const probe = net.createServer().listen(0, '127.0.0.1', () => {
    const { port } = probe.address() as net.AddressInfo;
    probe.close(() => resolve(port));
  });
});
if (process.argv[2] === 'close') {
  // A call and a byte stream made at once, and the client closed at once, while the lookup is still pending: they
  // fail as the calls queued at the close do, and nothing dials (nothing listens on the port: a dial would fail with
  // ERR_SMUX_UNAVAILABLE instead).
  const closing = new ClientSmux({ host: '127.0.0.1', port });
  const call = firstValueFrom(closing.send<number>('first', 1)).then(
    () => 'answered',
    (error: SmuxError) => `${error.code} ${error.message}`,
  );
  const stream = closing.openDuplex('bytes', {});
  const streamed = new Promise<string>((resolve) => stream.once('error', (error: SmuxError) => resolve(`${error.code} ${error.message}`)));
  await closing.close();
  console.log(`send: ${await call}`);
  console.log(`openDuplex: ${await streamed}`);
  process.exit(0);
}
const client = new ClientSmux({ host: '127.0.0.1', port, waitForReady: true });
const reply = firstValueFrom(client.send<number>('first', 1)); // at once: the lookup has 400 ms to go
const duplex = client.openDuplex('bytes', {}); // at once too
duplex.end('echo');
const echoed = (async () => {
  let bytes = '';
  for await (const chunk of duplex) bytes += String(chunk);
  return bytes;
})();
const server = new ServerSmux({ host: '127.0.0.1', port });
const app = await NestFactory.createMicroservice(EchoModule, { strategy: server, logger: false });
await app.listen();
await reply;
if ((await echoed) !== 'echo') throw new Error('the byte stream did not echo');
await client.close();
await app.close();
for (const span of sdk.spans()) console.log(`${span.name} ${span.kind}`);
