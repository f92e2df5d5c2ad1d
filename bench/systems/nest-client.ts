import type { ClientProxy } from '@nestjs/microservices';
import { firstValueFrom, type Observer } from 'rxjs';
import type { Done, Driver } from '../cases/spec.js';

/** One echo call as an Observer (no closures per call beyond the harness's own). */
class EchoObserver implements Observer<unknown> {
  #reply: unknown;
  constructor(
    readonly payload: string,
    readonly done: Done,
  ) {}
  next(value: unknown): void {
    this.#reply = value;
  }
  error(error: unknown): void {
    this.done(error);
  }
  complete(): void {
    if (this.#reply === this.payload) this.done();
    else this.done(new Error(`echo reply differs: sent a ${this.payload.length}-char string, got ${describeValue(this.#reply)}`));
  }
}

/** Completion-only Observer: an emit, a held call. */
class DoneObserver implements Observer<unknown> {
  constructor(readonly done: Done) {}
  next(): void {}
  error(error: unknown): void {
    this.done(error);
  }
  complete(): void {
    this.done();
  }
}

/**
 * The client side of a Nest message transport (nestjs-smux's ClientSmux, Nest's ClientTCP), driven the way an
 * application uses a `ClientProxy`: `send()` / `emit()` and subscribing to the Observable they return.
 */
export class NestClientDriver implements Driver {
  /**
   * @param client - the transport's ClientProxy (from ClientProxyFactory.create)
   * @param itemBytes - bytes of one value of the big reply as it arrives on this transport
   */
  constructor(
    readonly client: ClientProxy,
    readonly itemBytes: (item: unknown) => number,
  ) {}

  async connect(): Promise<void> {
    await this.client.connect();
    await firstValueFrom(this.client.send('echo', 'hello'));
  }

  echo(payload: string, done: Done): void {
    this.client.send('echo', payload).subscribe(new EchoObserver(payload, done));
  }

  emit(payload: string, done: Done): void {
    this.client.emit('event', payload).subscribe(new DoneObserver(done));
  }

  eventsReceived(atLeast: number): Promise<number> {
    return firstValueFrom(this.client.send<number>('events.count', atLeast));
  }

  big(items: number, itemBytes: number, onItem: (bytes: number) => void, done: Done): void {
    this.client.send('big', { items, itemBytes }).subscribe({
      next: (item) => onItem(this.itemBytes(item)),
      error: (error: unknown) => done(error),
      complete: () => done(),
    });
  }

  async holdBegin(calls: number): Promise<void> {
    await firstValueFrom(this.client.send('hold.begin', calls));
  }

  hold(done: Done): void {
    this.client.send('hold', 1).subscribe(new DoneObserver(done));
  }

  holdReport(): Promise<Record<string, number>> {
    return firstValueFrom(this.client.send<Record<string, number>>('hold.report', 1));
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return `a ${value.length}-char string`;
  return `${typeof value} ${JSON.stringify(value)?.slice(0, 80)}`;
}
