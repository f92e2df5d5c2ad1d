import { ClientProxy, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import type { Observable } from 'rxjs';
import { CallLauncher, type LaunchDefaults, type LaunchTarget } from './call-launcher.js';
import type { ClientCallHost } from './client-call.js';
import type { SmuxDuplexOptions } from './interfaces.js';
import type { SmuxDuplex } from './raw-duplex.js';

// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type -- ClientProxy's own constraint
type EventsMapOf = Record<never, Function>;

let attach: (proxy: SmuxProxy<EventsMapOf>, host: ClientCallHost, target: LaunchTarget, defaults: LaunchDefaults) => void;

/**
 * The calling side every `ClientProxy` of this transport shares — a {@link ClientSmux} (its own connections) and a
 * `SmuxConnection` (a server calling the peer of one of its connections): `send()`, `emit()`, `openDuplex()` and
 * Nest's `publish` / `dispatchEvent` contract, each call on its own smux stream. Where the calls go is the
 * subclass's (its connections, its limits); it hands that over once, in its constructor, with {@link attachLauncher}.
 */
export abstract class SmuxProxy<EventsMap extends EventsMapOf = EventsMapOf, Status extends string = string> extends ClientProxy<
  EventsMap,
  Status
> {
  #launcher: CallLauncher | null = null;

  static {
    attach = (proxy, host, target, defaults) => {
      const face = {
        createObserver: <T>(observer: Parameters<ClientProxy['createObserver']>[0]) =>
          proxy.createObserver(observer) as (packet: WritePacket<T>) => void,
        // Nest 12's packet carries its dispatch-hook metadata; Nest 11 has no createPacket.
        createPacket:
          typeof proxy.createPacket === 'function'
            ? (pattern: unknown, data: unknown) => proxy.createPacket(pattern, data) as ReadPacket & { metadata?: Record<string, string> }
            : undefined,
      };
      proxy.#launcher = new CallLauncher(host, target, face, defaults);
    };
  }

  /**
   * A request/response call, a streamed request (`data` an Observable, AsyncIterable or Readable) or a call with a
   * streamed reply. It skips `ClientProxy.send()`'s per-call `defer(connect)` + `mergeMap`; what the subscriber sees
   * is the same (values, then completion or the error). Unsubscribing before the last reply cancels the call.
   * A failure before any I/O (no connection: `ERR_SMUX_UNAVAILABLE`) is delivered on a later turn of the event loop,
   * never inside `subscribe()`, so a retry loop lets reconnection run; a null or undefined pattern or data is
   * refused at once, as Nest does.
   */
  override send<TResult = unknown, TInput = unknown>(pattern: unknown, data: TInput): Observable<TResult> {
    return this.#calls().send<TResult>(pattern, data);
  }

  /**
   * An event, hot as Nest's `emit()` (it is sent whether or not the result is subscribed), without its implicit
   * `connect()`: while there is no connection the event fails fast like a call, instead of cutting a reconnect
   * backoff short every time (its error comes on a later turn, as a call's does). At most once.
   */
  override emit<TResult = unknown, TInput = unknown>(pattern: unknown, data: TInput): Observable<TResult> {
    return this.#calls().emit<TResult>(pattern, data, (packet) => this.dispatchEvent<TResult>(packet));
  }

  /**
   * Opens a byte stream to a `@MessagePattern` handler, which reads and writes it through `ctx.getDuplex()`:
   * returns a Node `Duplex` at once (failures arrive as `'error'` with a `SmuxError`, or with the handler's error as
   * Nest delivers it). The stream's window is the backpressure and `stream.pipeline()` works end to end; each side
   * ends its writable side with `end()`, and the call is complete once both did. `destroy()` before that cancels the
   * call (the handler's Duplex errors with `ERR_SMUX_CANCELLED`).
   *
   * @param pattern - the handler's pattern
   * @param data - the request data (`@Payload()`), null when absent
   * @param options - headers, a deadline for the whole transfer, waiting for a connection
   */
  openDuplex(pattern: unknown, data: unknown = null, options: SmuxDuplexOptions = {}): SmuxDuplex {
    return this.#calls().openDuplex(pattern, data, options);
  }

  /** Nest's publish contract, for code that goes through `ClientProxy`'s own paths; `send()` does not. */
  protected publish(packet: ReadPacket, callback: (packet: WritePacket) => void): () => void {
    const call = this.#calls().start(callback, packet.pattern, packet.data, packet);
    return () => call.unsubscribe();
  }

  /**
   * An event: EVENT then FIN on a new stream. At most once: resolves when the event and its FIN have been handed to
   * the socket; rejects with `ERR_SMUX_UNAVAILABLE` when there is no connection (unless it waits for ready), or when
   * the connection is lost before that.
   */
  protected dispatchEvent<T = unknown>(packet: ReadPacket): Promise<T> {
    return this.#calls().event<T>(packet);
  }

  #calls(): CallLauncher {
    return this.#launcher!; // attached by every subclass's constructor
  }
}

/** Sets where `proxy`'s calls go (its subclass's constructor calls this once). */
export function attachLauncher(proxy: SmuxProxy<EventsMapOf>, host: ClientCallHost, target: LaunchTarget, defaults: LaunchDefaults): void {
  attach(proxy, host, target, defaults);
}
