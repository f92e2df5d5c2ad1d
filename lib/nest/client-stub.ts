import type { ClientProxy } from '@nestjs/microservices';
import type { Observable } from 'rxjs';
import type { SmuxSource } from './sources.js';
import type { SmuxRecord } from './smux.record-builder.js';

/*
 * Typed stubs over a ClientProxy: the contract is a plain TypeScript type, so there is no code generation and
 * nothing of it exists at run time. The stub is a Proxy that turns a property name into a pattern on first use.
 */

/**
 * What a caller receives for a handler that returns `R`: the handler's promise is awaited and an Observable or an
 * AsyncIterable (an async generator, a Readable) is streamed item by item, as the server does.
 * `SmuxReplyOf<Promise<Observable<{ tick: number }>>>` is `{ tick: number }`; a Readable's items are `unknown`.
 */
export type SmuxReplyOf<R> = StreamedItem<Awaited<R>>;

type StreamedItem<R> = R extends Observable<infer T> ? T : R extends AsyncIterable<infer T> ? AnyToUnknown<T> : R;
// A Readable iterates `any`: the stub says `unknown` rather than let `any` leak into the caller's code.
type AnyToUnknown<T> = 0 extends 1 & T ? unknown : T;

/** A pattern as `@MessagePattern()` / `@EventPattern()` take it: a string, or an object such as `{ cmd: 'sum' }`. */
export type SmuxStubPattern = string | Readonly<Record<string, string | number>>;

/**
 * Options of {@link smuxStub}. The pattern of member `m` is `patterns[m]` if given, else `prefix + m`.
 *
 * ```ts
 * { prefix: 'math.', patterns: { legacy: { cmd: 'sum' } } } // math.sum → 'math.sum', math.legacy → { cmd: 'sum' }
 * ```
 */
export interface SmuxStubOptions<C, E = Record<never, never>> {
  /** Prepended to a member's name to make its pattern (default `''`). */
  prefix?: string;
  /** Patterns of single members or events, overriding `prefix + name` (a name shared by both maps both). */
  patterns?: { [K in MethodNames<C> | (keyof E & string)]?: SmuxStubPattern };
}

/** The names of the contract's function members (string keys only: a pattern is made from the name). */
type MethodNames<C> = { [K in keyof C]-?: K extends string ? (NonNullable<C[K]> extends AnyFunction ? K : never) : never }[keyof C];
// `never[]` accepts any parameter list, so a controller method with a trailing `@Ctx()` still fits.
type AnyFunction = (...args: never[]) => unknown;

/**
 * One stub method: `(data) => Observable<reply>` for a contract member `(data: P) => R`. The request data is the
 * member's first parameter (later ones, such as a controller's `@Ctx()`, are ignored); a {@link SmuxRecord} of it
 * carries headers and a deadline. A client stream is a member whose parameter is a `SmuxSource<T>` — or, in a
 * controller class, the `SmuxStreamedPayload<T>` or `AsyncIterable<T>` the handler receives: the stub takes any
 * `SmuxSource<T>` for it. A real-time feed's member returns `Observable<SmuxFeedItem<T>>` (what the caller
 * receives), not the handler's `Observable<T>`.
 */
export type SmuxStubMethod<F> = F extends (data: infer P, ...rest: never[]) => infer R
  ? (data: RequestOf<P> | SmuxRecord<RequestOf<P>>) => Observable<SmuxReplyOf<R>>
  : never;

// Whatever is async-iterable is sent as a stream (so is an Observable): a parameter typed as the handler receives its
// stream takes any source of the same items, which lets a controller class serve as a contract.
type RequestOf<P> = P extends AsyncIterable<infer T> ? SmuxSource<AnyToUnknown<T>> : P;

/** `stub.emit`: one method per event, `(data) => Observable<unknown>` (hot, as `ClientProxy.emit()`). */
export type SmuxStubEvents<E> = {
  readonly [K in keyof E as K extends string ? K : never]-?: (data: E[K] | SmuxRecord<E[K]>) => Observable<unknown>;
};

/**
 * The stub of contract `C` with events `E` (see {@link smuxStub}): each function member of `C` becomes a
 * {@link SmuxStubMethod}, non-function members are left out, and `emit` holds the events.
 */
export type SmuxStub<C, E = Record<never, never>> = {
  readonly [K in Exclude<MethodNames<C>, ReservedName>]-?: SmuxStubMethod<NonNullable<C[K]>>;
} & { readonly emit: SmuxStubEvents<E> };

/** Names a stub cannot serve, and why (tsc shows the reason where `smuxStub` is called). */
interface Reserved {
  emit: 'stub.emit holds the events';
  then: 'stub.then is undefined, so that `await` does not take the stub for a promise';
}
type ReservedName = keyof Reserved;
type MemberClash<C> = Extract<keyof C, ReservedName>;
/** The type of `client`: a ClientProxy, or for a contract using a reserved name, a message naming it. */
type ClientFor<C, E> = [MemberClash<C>] extends [never]
  ? [Extract<keyof E, 'then'>] extends [never]
    ? Pick<ClientProxy, 'send' | 'emit'>
    : `smuxStub: an event cannot be named "then" (stub.emit.then is undefined, as stub.then is)`
  : `smuxStub: a contract member cannot be named "${MemberClash<C>}": ${Reserved[MemberClash<C>]}`;

/**
 * A typed stub over a ClientProxy: `math.sum([1, 2])` instead of `client.send('math.sum', [1, 2])`, with tsc
 * checking the pattern, the request and the reply against contract `C` (and events `E`). Works with any Nest
 * ClientProxy: it only calls `send()` and `emit()`, with the data as given (a missing argument sends `undefined`,
 * which the client refuses as it always does). A contract member named `emit` or `then`, or an event named `then`,
 * does not compile.
 *
 * ```ts
 * interface MathContract {
 *   sum(numbers: number[]): number; // unary
 *   ticks(count: number): Observable<{ tick: number }>; // a streamed reply
 *   total(numbers: SmuxSource<number>): number; // a client stream
 * }
 * const math = smuxStub<MathContract, { computed: { result: number } }>(client, { prefix: 'math.' });
 * await firstValueFrom(math.sum([1, 2])); // 3, from client.send('math.sum', [1, 2])
 * math.sum(new SmuxRecordBuilder([1, 2]).setTimeout(500).build()); // a 500 ms deadline
 * await lastValueFrom(math.emit.computed({ result: 3 }), { defaultValue: undefined }); // client.emit('math.computed', …)
 * ```
 *
 * @param client - the ClientProxy calls go through (a `ClientSmux`, or any other Nest client)
 * @param options - `prefix` of every pattern, `patterns` of single members
 */
export function smuxStub<C, E = Record<never, never>>(client: ClientFor<C, E>, options: SmuxStubOptions<C, E> = {}): SmuxStub<C, E> {
  const proxy = client as Pick<ClientProxy, 'send' | 'emit'>;
  const prefix = options.prefix ?? '';
  const patterns: Partial<Record<string, SmuxStubPattern>> = { ...options.patterns };
  // Own keys only: a member named `toString` must not pick up Object.prototype's.
  const patternOf = (name: string): SmuxStubPattern => (Object.hasOwn(patterns, name) ? patterns[name] : undefined) ?? prefix + name;
  const events = members((name) => (data?: unknown) => proxy.emit<unknown>(patternOf(name), data));
  const stub = members((name) => (name === 'emit' ? events : (data?: unknown) => proxy.send<unknown>(patternOf(name), data)));
  return stub as SmuxStub<C, E>;
}

/**
 * An object whose property `name` is `make(name)`, made on first read and kept (so `stub.sum === stub.sum`).
 * `then` and symbol keys read undefined: `await stub` and `Promise.resolve(stub)` must not take it for a
 * thenable, and `util.inspect`, iteration and coercion probe symbols.
 */
function members(make: (name: string) => unknown): object {
  const made = new Map<string, unknown>();
  return new Proxy(Object.create(null) as object, {
    get(_target, key) {
      if (typeof key !== 'string' || key === 'then') return undefined;
      if (!made.has(key)) made.set(key, make(key));
      return made.get(key);
    },
  });
}
