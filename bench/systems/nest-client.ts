import type { ClientProxy } from '@nestjs/microservices';
import { firstValueFrom, type Observer } from 'rxjs';
import type { Done, Driver, HeldCall } from '../cases/spec.js';

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
export class DoneObserver implements Observer<unknown> {
  constructor(readonly done: Done) {}
  next(): void {}
  error(error: unknown): void {
    this.done(error);
  }
  complete(): void {
    this.done();
  }
}

/** The memory case's hold on this client: its calls pulled so far, and the release of the streamed ones. */
export class Hold {
  /** Held calls seen open from this side (a streamed call: its source handed out its first item). */
  opened = 0;
  /** Resolves when the server has measured: the streamed calls' sources then end. */
  readonly released: Promise<void>;
  release!: () => void;

  constructor() {
    this.released = new Promise<void>((resolve) => (this.release = resolve));
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

  /** Nest's transports hold unary calls only; nestjs-smux adds the streamed kinds (smux.ts). */
  readonly heldCalls: readonly HeldCall[] = ['unary'];
  protected held = new Hold();

  /**
   * Arms the server; resolves on its `armed`. The call stays open until the server has measured (`measured`), so
   * that this side can then release what it holds open itself (the streamed kinds).
   */
  holdBegin(calls: number, call: HeldCall): Promise<void> {
    const held = (this.held = new Hold());
    return new Promise((resolve, reject) => {
      this.client.send<string>('hold.begin', { calls, call }).subscribe({
        next: (value) => (value === 'armed' ? resolve() : held.release()),
        error: (error: unknown) => {
          held.release();
          reject(error instanceof Error ? error : new Error(describeValue(error)));
        },
      });
    });
  }

  hold(call: HeldCall, done: Done): void {
    if (call !== 'unary') throw new Error(`${call} calls cannot be held on this transport`);
    this.client.send('hold', 1).subscribe(new DoneObserver(done));
  }

  holdProgress(): number {
    return this.held.opened;
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
