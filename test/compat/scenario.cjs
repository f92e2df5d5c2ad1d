// One Nest microservice on ServerSmux and one ClientsModule client on ClientSmux, in whatever Nest version is
// installed next to this file. Exits non-zero on any mismatch.
const assert = require('node:assert/strict');
const { Controller, Module, Inject, Injectable } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { ClientsModule, Ctx, EventPattern, MessagePattern, Payload, RpcException } = require('@nestjs/microservices');
const { firstValueFrom, from, interval, lastValueFrom, map, take, toArray } = require('rxjs');

function method(decorator, target, name) {
  decorator(target.prototype, name, Object.getOwnPropertyDescriptor(target.prototype, name));
}

async function run(smux, core, flavour) {
  const { ServerSmux, ClientSmux, SmuxRecordBuilder } = smux;
  assert.equal(typeof core.Session, 'function', 'nestjs-smux/smux exports Session');
  const events = [];

  class MathController {
    sum(data) {
      return data.reduce((a, b) => a + b, 0);
    }
    ticks(n) {
      return interval(1).pipe(
        take(n),
        map((i) => i * 10),
      );
    }
    headers(_data, ctx) {
      return ctx.getHeaders();
    }
    fail() {
      throw new RpcException({ code: 'E_BAD' });
    }
    evt(data) {
      events.push(data);
    }
    async total(items) {
      let sum = 0;
      for await (const item of items) sum += item;
      return sum;
    }
    doubled(items) {
      return items.pipe(map((item) => item * 2));
    }
    echoBytes(_data, ctx) {
      const duplex = ctx.getDuplex();
      duplex.pipe(duplex);
    }
    frames() {
      return interval(1).pipe(take(3));
    }
  }
  Controller()(MathController);
  method(MessagePattern('sum'), MathController, 'sum');
  method(MessagePattern({ cmd: 'ticks' }), MathController, 'ticks');
  method(MessagePattern('headers'), MathController, 'headers');
  Payload()(MathController.prototype, 'headers', 0);
  Ctx()(MathController.prototype, 'headers', 1);
  method(MessagePattern('fail'), MathController, 'fail');
  method(EventPattern('evt'), MathController, 'evt');
  method(MessagePattern('total'), MathController, 'total');
  method(MessagePattern('doubled'), MathController, 'doubled');
  method(MessagePattern('echo-bytes'), MathController, 'echoBytes');
  Payload()(MathController.prototype, 'echoBytes', 0);
  Ctx()(MathController.prototype, 'echoBytes', 1);
  method(MessagePattern('frames', smux.smuxFeed({ bufferSize: 4 })), MathController, 'frames');
  class ServerModule {}
  Module({ controllers: [MathController] })(ServerModule);

  // Nest's own error lines (its exception filter logs through a static Logger: both apps share this logger).
  const errorLines = [];
  const logger = { log() {}, warn() {}, debug() {}, verbose() {}, error: (...args) => errorLines.push(args.map(String).join(' ')) };
  const server = new ServerSmux({ host: '127.0.0.1', port: 0 });
  const microservice = await NestFactory.createMicroservice(ServerModule, { strategy: server, logger });
  await microservice.listen();
  const { port } = server.unwrap().address();

  class Caller {
    constructor(client) {
      this.client = client;
    }
  }
  Injectable()(Caller);
  Inject('MATH')(Caller, undefined, 0);
  class ClientModule {}
  Module({
    imports: [ClientsModule.register([{ name: 'MATH', customClass: ClientSmux, options: { host: '127.0.0.1', port } }])],
    providers: [Caller],
  })(ClientModule);
  const clientApp = await NestFactory.createApplicationContext(ClientModule, { logger });
  const { client } = clientApp.get(Caller);

  assert.equal(await firstValueFrom(client.send('sum', [1, 2, 3])), 6);
  assert.deepEqual(await lastValueFrom(client.send({ cmd: 'ticks' }, 3).pipe(toArray())), [0, 10, 20]);
  assert.deepEqual(await firstValueFrom(client.send('headers', new SmuxRecordBuilder({}).setHeaders({ a: '1' }).build())), { a: '1' });
  await assert.rejects(firstValueFrom(client.send('fail', {})), (err) => err.code === 'E_BAD');
  await lastValueFrom(client.emit('evt', { x: 1 }), { defaultValue: undefined });
  for (let i = 0; i < 100 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(events, [{ x: 1 }]);

  // Streaming: a client stream from an async generator, a bidirectional stream, a byte stream, a feed.
  async function* numbers() {
    for (let i = 1; i <= 100; i++) yield i;
  }
  assert.equal(await firstValueFrom(client.send('total', numbers())), 5050);
  // A cancelled client stream: its `for await` throws the transport's SmuxError, which Nest must not log as an error.
  const before = server.metrics.snapshot();
  const cancelled = client.send('total', interval(1)).subscribe({ error: () => undefined });
  for (let i = 0; i < 500 && server.metrics.snapshot().bytes.received < before.bytes.received + 100; i++)
    await new Promise((r) => setTimeout(r, 10));
  cancelled.unsubscribe();
  const cancels = () => server.metrics.snapshot().calls.failed.ERR_SMUX_CANCELLED ?? 0;
  for (let i = 0; i < 500 && cancels() === (before.calls.failed.ERR_SMUX_CANCELLED ?? 0); i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(errorLines, [], 'a cancelled client stream logs no error');
  assert.deepEqual(await lastValueFrom(client.send('doubled', from([1, 2, 3])).pipe(toArray())), [2, 4, 6]);
  const duplex = client.openDuplex('echo-bytes');
  const received = [];
  duplex.on('data', (chunk) => received.push(chunk));
  const echoed = new Promise((resolve, reject) => duplex.on('end', resolve).on('error', reject));
  const bytes = require('node:crypto').randomBytes(1 << 20);
  duplex.end(bytes);
  await echoed;
  assert.ok(Buffer.concat(received).equals(bytes), 'the byte stream echoes 1 MiB');
  const frames = await lastValueFrom(client.send('frames', 0).pipe(toArray()));
  assert.deepEqual(
    frames.map((f) => [f.value, f.seq]),
    [
      [0, 1],
      [1, 2],
      [2, 3],
    ],
  );
  const stub = smux.smuxStub(client);
  assert.equal(await firstValueFrom(stub.sum([4, 5])), 9);

  // Connections: a worker dials the server and serves its calls over the same connection; ping; metrics.
  class WorkerController {
    double(n) {
      return n * 2;
    }
  }
  Controller()(WorkerController);
  method(MessagePattern('double'), WorkerController, 'double');
  class WorkerModule {}
  Module({ controllers: [WorkerController] })(WorkerModule);
  const dialled = new Promise((resolve) => server.on('connection', resolve));
  const worker = new ServerSmux({ connectTo: { host: '127.0.0.1', port } });
  const workerApp = await NestFactory.createMicroservice(WorkerModule, { strategy: worker, logger: false });
  await workerApp.listen();
  const connection = await dialled;
  for (let i = 0; i < 100 && !connection.servesCalls; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(await firstValueFrom(connection.send('double', 21)), 42, 'the server calls the worker that dialled it');
  assert.equal(await firstValueFrom(worker.client.send('sum', [2, 3])), 5, 'the worker calls the server on the same connection');
  assert.ok((await client.ping()) >= 0, 'client.ping() measures a round trip');
  assert.ok(client.metrics.snapshot().calls.completed > 0 && server.metrics.snapshot().calls.completed > 0, 'metrics count calls');
  await workerApp.close();

  await clientApp.close();
  await microservice.close();
  // v12's exports map hides package.json from require(); read it from disk.
  const pkg = require('node:path').join(require('node:path').dirname(require.resolve('@nestjs/microservices')), 'package.json');
  const version = JSON.parse(require('node:fs').readFileSync(pkg, 'utf8')).version;
  console.log(`ok: ${flavour} app, @nestjs/microservices ${version}, node ${process.version}`);
}

module.exports = { run };
