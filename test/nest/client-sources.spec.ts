import { Readable } from 'node:stream';
import { afterEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, Observable } from 'rxjs';
import { ClientSmux, SmuxRecordBuilder, type SmuxStreamedPayload } from '../../lib/index.js';
import { closeAll, closedPort, codeOf, rejection, startApp, trackClient, until } from './helpers.js';

/*
 * A streamed request's source is released (a Readable destroyed, an iterator return()ed) however the call ends —
 * also when it ends before its stream opened: it failed fast with ERR_SMUX_UNAVAILABLE, its deadline passed while
 * it waited for a connection, the caller unsubscribed while it was queued. (Before, only a source the client had
 * started pulling was released: a `fs.createReadStream()` source left a file open per failed call.)
 */

@Controller()
class SourcesController {
  @MessagePattern('never')
  never() {
    return new Observable<never>(() => undefined);
  }

  @MessagePattern('sum')
  async sum(@Payload() items: SmuxStreamedPayload<number>): Promise<number> {
    let sum = 0;
    for await (const item of items) sum += item;
    return sum;
  }
}

/** A Readable of a few numbers that records whether it was destroyed. */
function numbers(): Readable {
  return Readable.from([1, 2, 3]);
}

describe('a streamed request whose call ends before its stream opens releases its source (pending)', () => {
  afterEach(closeAll);

  test('the call fails fast (no connection): its Readable is destroyed', async () => {
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: await closedPort() }));
    await rejection(firstValueFrom(client.send('sum', numbers()))); // the first attempt fails
    const source = numbers();
    const error = await rejection(firstValueFrom(client.send('sum', source)));
    expect(codeOf(error)).toBe('ERR_SMUX_UNAVAILABLE');
    await until(() => source.destroyed, 1_000, 'the source to be destroyed');
  });

  test('the deadline passes while the call waits for a connection: its Readable is destroyed', async () => {
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: await closedPort() }));
    const source = numbers();
    const record = new SmuxRecordBuilder(source).setWaitForReady().setTimeout(100).build();
    const error = await rejection(firstValueFrom(client.send('sum', record)));
    expect(codeOf(error)).toBe('ERR_SMUX_TIMEOUT');
    await until(() => source.destroyed, 1_000, 'the source to be destroyed');
  });

  test('the caller unsubscribes while the call is queued behind maxConcurrentCalls: its Readable is destroyed', async () => {
    const handle = await startApp({ controllers: [SourcesController] });
    const client = handle.client({ maxConcurrentCalls: 1 });
    const blocker = client.send('never', {}).subscribe({ error: () => undefined });
    await client.connect();
    const source = numbers();
    const queued = client.send('sum', source).subscribe({ error: () => undefined });
    await new Promise((resolve) => setTimeout(resolve, 50));
    queued.unsubscribe();
    blocker.unsubscribe();
    await until(() => source.destroyed, 1_000, 'the source to be destroyed');
  });
});
