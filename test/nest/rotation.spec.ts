import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { defer, firstValueFrom } from 'rxjs';
import type { Session } from '../../lib/index.js';
import { SmuxContext } from '../../lib/index.js';
import { closeAll, type Deferred, deferred, startApp, until } from './helpers.js';

let gate: Deferred<void>;
let running = 0;

@Controller()
class RotationController {
  @MessagePattern('id')
  id(@Payload() n: number, @Ctx() ctx: SmuxContext) {
    return { n, streamId: ctx.getStream().id };
  }

  @MessagePattern('gated')
  gated(@Payload() n: number) {
    return defer(async () => {
      running++;
      await gate.promise;
      return n;
    });
  }
}

/** The client's first stream id: 0xfffffff1 … 0xffffffff leaves 8 ids per session, the first for the hello. */
const FIRST_ID = 0xfffffff1;
const CALLS_PER_SESSION = 7;

describe('stream-id rotation', () => {
  beforeEach(() => {
    gate = deferred();
    running = 0;
  });
  afterEach(closeAll);

  test('30 sequential calls all succeed across several sessions; spent sessions are closed', async () => {
    const handle = await startApp({ controllers: [RotationController] });
    const client = handle.client({ smux: { firstStreamId: FIRST_ID } });
    for (let i = 0; i < 30; i++) {
      const reply = await firstValueFrom(client.send<{ n: number; streamId: number }>('id', i));
      expect(reply.n).toBe(i);
      expect(reply.streamId).toBeGreaterThanOrEqual(FIRST_ID);
    }
    expect(handle.sessions).toHaveLength(Math.ceil(30 / CALLS_PER_SESSION)); // 7 + 7 + 7 + 7 + 2
    const current = client.unwrap<Session>();
    await until(() => handle.sessions.slice(0, -1).every((s) => s.isClosed), 5_000, 'the spent server sessions to close');
    expect(handle.sessions.at(-1)!.isClosed).toBe(false);
    expect(current.isClosed).toBe(false);
  });

  test('20 concurrent calls all succeed across sessions', async () => {
    const handle = await startApp({ controllers: [RotationController] });
    const client = handle.client({ smux: { firstStreamId: FIRST_ID } });
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => firstValueFrom(client.send<{ n: number }>('id', i))));
    expect(replies.map((r) => r.n)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(handle.sessions.length).toBeGreaterThanOrEqual(Math.ceil(20 / CALLS_PER_SESSION));
    await until(() => handle.sessions.filter((s) => !s.isClosed).length <= 1, 5_000, 'spent sessions to close');
    // The client still works after all that.
    expect((await firstValueFrom(client.send<{ n: number }>('id', 99))).n).toBe(99);
  });

  test('a spent session stays open while its calls run, and closes once they are done', async () => {
    const handle = await startApp({ controllers: [RotationController] });
    const client = handle.client({ smux: { firstStreamId: FIRST_ID } });
    const held = Array.from({ length: CALLS_PER_SESSION }, (_, i) => firstValueFrom(client.send<number>('gated', i)));
    await until(() => running === CALLS_PER_SESSION, 5_000, 'every id of the first session in use');
    expect(handle.sessions).toHaveLength(1);
    const spent = handle.sessions[0];

    // The next call goes to a fresh session and completes while the spent one still has calls running.
    expect((await firstValueFrom(client.send<{ n: number }>('id', 100))).n).toBe(100);
    expect(handle.sessions).toHaveLength(2);
    expect(spent.isClosed).toBe(false);
    await until(() => spent.numStreams === CALLS_PER_SESSION, 5_000, 'the spent control stream to go; the calls stay');

    gate.resolve();
    expect(await Promise.all(held)).toEqual(Array.from({ length: CALLS_PER_SESSION }, (_, i) => i));
    await until(() => spent.isClosed, 5_000, 'the spent session to close after draining');
    expect(handle.sessions[1].isClosed).toBe(false);
  });
});
