import { Inject, Injectable } from '@nestjs/common';
import type { ClientProxy } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { SmuxRecordBuilder } from '../../lib/index.js';
import { SAMPLE_SERVICE } from './sample-service.js';

/** A client app's view of the math microservice. */
@Injectable()
export class MathClient {
  constructor(@Inject(SAMPLE_SERVICE) private readonly client: ClientProxy) {}

  sum(numbers: number[]): Promise<number> {
    return firstValueFrom(this.client.send<number>('math.sum', numbers));
  }

  ticks(count: number): Promise<Array<{ tick: number }>> {
    return lastValueFrom(this.client.send<{ tick: number }>('math.ticks', count).pipe(toArray()));
  }

  notify(result: number): Promise<void> {
    return lastValueFrom(this.client.emit('math.computed', { result }), { defaultValue: undefined });
  }

  /** Per-call headers and deadline travel with the call. */
  whoami(apiKey: string): Promise<unknown> {
    const record = new SmuxRecordBuilder({}).setHeaders({ 'x-api-key': apiKey, 'x-user': 'ada' }).setTimeout(2_000).build();
    return firstValueFrom(this.client.send('math.whoami', record));
  }
}
