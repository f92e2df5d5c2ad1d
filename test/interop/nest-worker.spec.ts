/**
 * Calls in both directions with Go (docs/PROTOCOL.md §11): the peer's `nestworker` sub-command — xtaci/smux 1.5.16
 * as the dialling side, the call protocol written by hand in Go — dials a Nest ServerSmux, says hello naming the
 * `calls` feature, registers itself with a call of its own, and serves the calls the gateway makes back over the
 * same session through its `SmuxConnection`.
 */
import type { AddressInfo, Server as NetServer } from 'node:net';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { Controller, type INestMicroservice, type LoggerService } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { firstValueFrom } from 'rxjs';
import { ServerSmux, type SmuxConnection, type SmuxContext } from '../../lib/index.js';
import { describeWithGo } from './describe-with-go.js';
import { runGo } from './go-peer.js';

const registered = new Map<string, SmuxConnection>();

@Controller()
class GatewayController {
  @MessagePattern('register')
  register(@Payload() id: string, @Ctx() ctx: SmuxContext): string {
    registered.set(id, ctx.getConnection());
    return ctx.getConnection().id;
  }
}

const quiet: LoggerService = { log: () => undefined, error: () => undefined, warn: () => undefined };

async function until(what: string, condition: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describeWithGo('Go dials a Nest ServerSmux and serves its calls (§11)', () => {
  let app: INestMicroservice;
  let addr: string;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({ controllers: [GatewayController] }).compile();
    const server = new ServerSmux({ host: '127.0.0.1', port: 0 });
    app = moduleRef.createNestMicroservice({ strategy: server, logger: quiet });
    await app.listen();
    addr = `127.0.0.1:${(server.unwrap<NetServer>().address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await app?.close();
  });

  test.each(['1', '2'])('smux v%s: the gateway calls the Go worker 100 times at once over the session it dialled', async (v) => {
    const id = `go-v${v}`;
    const run = runGo(['nestworker', '-v', v, '-addr', addr, '-id', id, '-serve', '101', '-wait', '20000'], 30_000);
    await until('the Go worker to register', () => registered.has(id));
    const worker = registered.get(id)!;
    expect(worker.servesCalls).toBe(true);
    const doubled = await Promise.all(Array.from({ length: 100 }, (_, i) => firstValueFrom(worker.send<number>('go.double', i))));
    expect(doubled).toEqual(Array.from({ length: 100 }, (_, i) => i * 2));
    await expect(firstValueFrom(worker.send('go.other', 1))).rejects.toEqual({ code: 'NO_SUCH_PATTERN', pattern: 'go.other' });
    const { code, results, stderr } = await run;
    expect({ code, stderr: code === 0 ? '' : stderr }).toEqual({ code: 0, stderr: '' });
    expect(results).toEqual([expect.objectContaining({ ok: true, registered: worker.id, served: 100, errors: 1 })]);
  });
});
