/**
 * A caller that ignores the window of a stream whose handler does not read (the hostile-peer trial of 2026-12-05,
 * left item 6): a raw TCP client speaking smux v2 by hand sends a byte-stream call 16 MiB of RAW messages while the
 * handler never reads its input. Before, the server's session spent its receive budget on them, stopped reading the
 * socket and the connection hung, silently, until something wrote to it; now the server closes it at once with
 * ERR_SMUX_PROTOCOL, says why in one warning, and another client of the same server is not disturbed.
 */
import { afterAll, beforeAll, beforeEach, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import type { SmuxContext } from '../../lib/index.js';
import { encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { AttackPeer, request } from '../helpers/attack-peer.js';
import { type AppHandle, closeAll, type Deferred, deferred, logLines, startApp, until } from './helpers.js';

let entered: Deferred<void>;
let handlerSignal: AbortSignal | null = null;

@Controller()
class UnreadController {
  /** A byte-stream call whose handler never reads what the caller sends; it ends when the call is aborted. */
  @MessagePattern('wo.hold')
  async hold(@Ctx() ctx: SmuxContext): Promise<void> {
    handlerSignal = ctx.signal;
    entered.resolve();
    await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
  }

  @MessagePattern('wo.echo')
  echo(@Payload() value: unknown): unknown {
    return value;
  }
}

let handle: AppHandle;
beforeAll(async () => {
  handle = await startApp({ controllers: [UnreadController] });
});
afterAll(closeAll);
beforeEach(() => {
  entered = deferred();
  handlerSignal = null;
  logLines.length = 0;
});

test('a raw v2 caller that sends past an unread stream’s window is closed promptly with the reason logged once; another client keeps working', async () => {
  const client = handle.client();
  expect(await firstValueFrom(client.send('wo.echo', 'before'))).toBe('before');

  const peer = await AttackPeer.connect(handle.port);
  const { id, frames } = peer.open(request('wo.hold', null, Flag.RAW));
  await peer.write(frames);
  await entered.promise;
  // 16 MiB of RAW messages at once, with no regard for the window (256 KiB) nor for a UPD that never comes.
  const item = Buffer.concat(encodeMessage(Kind.RAW, 0, Buffer.alloc(256 * 1024, 7)));
  const flood = peer.dataFrames(id, Buffer.concat(Array.from({ length: 64 }, () => item)));
  void peer.write(flood);
  const sentAt = Date.now();

  expect(await peer.whenClosed(5_000)).toBe(true); // before: never (the session paused its reading for good)
  const closedAfterMs = Date.now() - sentAt;
  expect(closedAfterMs).toBeLessThan(5_000);
  await until(() => handlerSignal?.aborted === true, 5_000, "the handler's call to end");

  const session = handle.sessions.find((s) => s.error?.code === 'ERR_SMUX_PROTOCOL');
  expect(session?.error?.message).toMatch(/^the peer ignored the window of stream \d+: it sent \d+ bytes, \d+ past the \d+ granted/);
  const warnings = logLines.filter((l) => l.level === 'warn' && l.message.includes('ignored the window'));
  expect(warnings.map((l) => l.message)).toEqual([
    expect.stringMatching(/^Closed the connection from 127\.0\.0\.1:\d+: the peer ignored the window of stream \d+/),
  ]);

  // The other connection was never held up, and still works.
  expect(await firstValueFrom(client.send('wo.echo', 'after'))).toBe('after');
});
