import net from 'node:net';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, Observable, range, timeout, toArray } from 'rxjs';
import { ClientSmux, type Session, SmuxRecordBuilder } from '../../lib/index.js';
import { activeResources, closeAll, rejection, startApp, trackClient, until } from './helpers.js';

let events = 0;

@Controller()
class ResourcesController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
  }

  @MessagePattern('range')
  range(@Payload() n: number) {
    return range(0, n);
  }

  @MessagePattern('never')
  never() {
    return new Observable<never>(() => undefined);
  }

  @EventPattern<string>('event')
  event() {
    events++;
  }
}

/** Waits a little for handles to go (sockets close on a later turn), then checks none is left beyond `before`. */
async function expectResourcesBackTo(before: Record<string, number>): Promise<void> {
  const released = (): boolean => Object.entries(activeResources()).every(([kind, n]) => n <= before[kind]);
  await until(released, 2_000, 'handles to be released').catch(() => undefined);
  const after = activeResources();
  // Fewer is fine (a timer Jest had running may be gone); more is a leak.
  const leaked = Object.fromEntries(
    Object.entries(after)
      .filter(([kind, n]) => n > before[kind])
      .map(([kind, n]) => [kind, `${n} now, ${before[kind]} before`]),
  );
  expect(leaked).toEqual({});
}

/** Traffic of every kind: calls, streams, bytes, an event, a cancelled call, a client and a server deadline. */
async function exercise(client: ReturnType<Awaited<ReturnType<typeof startApp>>['client']>): Promise<void> {
  expect(await firstValueFrom(client.send('echo', 'x'))).toBe('x');
  expect(await lastValueFrom(client.send('range', 10).pipe(toArray()))).toHaveLength(10);
  expect((await firstValueFrom(client.send<Buffer>('echo', Buffer.alloc(200_000)))).length).toBe(200_000);
  await lastValueFrom(client.emit('event', {}), { defaultValue: undefined });
  await rejection(firstValueFrom(client.send('never', {}).pipe(timeout(20))));
  await rejection(firstValueFrom(client.send('never', new SmuxRecordBuilder({}).setTimeout(20).build())));
  await until(() => events > 0, 5_000, 'the event');
}

describe('closing releases everything', () => {
  afterEach(closeAll);

  test('client.close() then app.close(): sessions closed, and no sockets, servers or timers left behind', async () => {
    const before = activeResources();
    const handle = await startApp({ controllers: [ResourcesController], server: { finTimeout: 50 } });
    const client = handle.client({ timeout: 5_000 });
    await exercise(client);
    const clientSession = client.unwrap<Session>();
    const serverSessions = [...handle.sessions];
    expect(serverSessions).toHaveLength(1);

    await client.close();
    await handle.app.close();
    for (const session of [clientSession, ...serverSessions]) {
      expect(session.isClosed).toBe(true);
      expect(session.numStreams).toBe(0);
    }
    await expectResourcesBackTo(before);
  });

  test('app.close() alone closes the connection under a client; the client lets go of its socket too', async () => {
    const before = activeResources();
    const handle = await startApp({ controllers: [ResourcesController] });
    const client = handle.client();
    await exercise(client);
    const clientSession = client.unwrap<Session>();
    await handle.app.close();
    await until(() => clientSession.isClosed, 5_000, 'the client session to close');
    expect(clientSession.numStreams).toBe(0);
    await expectResourcesBackTo(before);
    await client.close();
  });

  test('a client that only failed to connect leaves nothing behind', async () => {
    const before = activeResources();
    const listener = net.createServer();
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const { port } = listener.address() as net.AddressInfo;
    await new Promise((resolve) => listener.close(resolve));
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port, connectTimeout: 1_000 }));
    await rejection(firstValueFrom(client.send('echo', 1)));
    await client.close();
    await expectResourcesBackTo(before);
  });
});
