/**
 * Type tests of smuxStub, compiled by `tsc --noEmit -p .` (lint, CI) and never run: a positive assertion that
 * goes wrong fails compilation, and so does a `@ts-expect-error` whose line compiles (an unused directive).
 */
import { Readable } from 'node:stream';
import type { ClientProxy } from '@nestjs/microservices';
import { from, type Observable } from 'rxjs';
import {
  type ClientSmux,
  type SmuxContext,
  type SmuxReplyOf,
  type SmuxSource,
  type SmuxStreamedPayload,
  SmuxRecordBuilder,
  smuxStub,
} from '../../lib/index.js';

/** True when `A` and `B` are the same type (`any` equals only `any`). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compiles only when `T` is exactly `Expected`: `expectType<number>()(value)`. */
const expectType =
  <Expected>() =>
  <T>(_value: T & ([Equal<T, Expected>] extends [true] ? unknown : never)): void =>
    undefined;
/** Compiles only when `A` is `true`: `assert<Equal<X, Y>>()`. */
const assert = <A extends true>(): A | void => undefined;

declare const client: ClientSmux;
declare const anyClient: ClientProxy;

interface MathContract {
  sum(numbers: number[]): number;
  ticks(count: number): Observable<{ tick: number }>;
  total(numbers: SmuxSource<number>): number;
  later(n: number): Promise<string>;
  generated(n: number): AsyncGenerator<{ i: number }>;
  lines(): Readable;
  deferredStream(n: number): Promise<Observable<boolean>>;
  withContext(data: { id: string }, ctx: { getHeaders(): Record<string, string> }): void;
  optionalMember?(n: number): number;
  readonly version: string; // not a function: not on the stub
}
interface MathEvents {
  computed: { result: number };
}

const math = smuxStub<MathContract, MathEvents>(client, { prefix: 'math.', patterns: { sum: { cmd: 'sum' }, computed: 'done' } });

// ── replies ────────────────────────────────────────────────────────────────────────────────────────────────
expectType<Observable<number>>()(math.sum([1, 2]));
expectType<Observable<{ tick: number }>>()(math.ticks(3));
expectType<Observable<number>>()(math.total(from([1, 2, 3])));
expectType<Observable<string>>()(math.later(1));
expectType<Observable<{ i: number }>>()(math.generated(1));
expectType<Observable<unknown>>()(math.lines({})); // a Readable's items are `any`: the stub says unknown
expectType<Observable<boolean>>()(math.deferredStream(1));
expectType<Observable<void>>()(math.withContext({ id: 'a' }));
expectType<Observable<number>>()(math.optionalMember(1));
expectType<Observable<unknown>>()(math.emit.computed({ result: 3 }));
assert<Equal<SmuxReplyOf<Promise<AsyncIterable<Buffer>>>, Buffer>>();
assert<Equal<SmuxReplyOf<number[]>, number[]>>(); // an array is a value, not a stream
assert<
  Equal<
    keyof typeof math,
    'sum' | 'ticks' | 'total' | 'later' | 'generated' | 'lines' | 'deferredStream' | 'withContext' | 'optionalMember' | 'emit'
  >
>();
assert<Equal<keyof typeof math.emit, 'computed'>>();

// ── requests ───────────────────────────────────────────────────────────────────────────────────────────────
math.sum(new SmuxRecordBuilder([1, 2]).setTimeout(500).build());
math.total(
  (async function* () {
    yield 1;
  })(),
);
math.total(Readable.from([1, 2]));
math.emit.computed(new SmuxRecordBuilder({ result: 3 }).setHeaders({ 'x-user': 'ada' }).build());

// @ts-expect-error a wrong payload type
math.sum('1, 2');
// @ts-expect-error a wrong payload type: a stream of strings where numbers are due
math.total(from(['1']));
// @ts-expect-error a SmuxRecord of the wrong data type
math.sum(new SmuxRecordBuilder('1, 2').build());
// @ts-expect-error a wrong reply type
const _wrongReply: Observable<string> = math.sum([1]);
// @ts-expect-error an unknown member
void math.summ;
// @ts-expect-error a non-function member is not on the stub
void math.version;
// @ts-expect-error an unknown event
void math.emit.computd;
// @ts-expect-error a wrong event payload
math.emit.computed({ result: '3' });
// @ts-expect-error an event SmuxRecord of the wrong data type
math.emit.computed(new SmuxRecordBuilder({ total: 3 }).build());
// @ts-expect-error an unknown pattern key
smuxStub<MathContract, MathEvents>(client, { patterns: { summ: 'x' } });
// @ts-expect-error a non-function member has no pattern
smuxStub<MathContract>(client, { patterns: { version: 'v' } });
// @ts-expect-error a pattern is a string or an object of strings and numbers
smuxStub<MathContract>(client, { patterns: { sum: 42 } });

// ── reserved names ─────────────────────────────────────────────────────────────────────────────────────────
interface EmitContract {
  emit(data: string): void;
}
interface ThenContract {
  then(data: string): void;
}
// @ts-expect-error a contract member named `emit` (stub.emit holds the events)
smuxStub<EmitContract>(client);
// @ts-expect-error a contract member named `then` (it reads undefined, so that `await stub` is harmless)
smuxStub<ThenContract>(client);
// @ts-expect-error an event named `then`
smuxStub<MathContract, { then: number }>(client);
smuxStub<MathContract, { emit: number }>(client).emit.emit(1); // an event may be named `emit`

// ── any ClientProxy, and no contract at all ────────────────────────────────────────────────────────────────
expectType<Observable<number>>()(smuxStub<MathContract>(anyClient).sum([1]));
assert<Equal<keyof ReturnType<typeof smuxStub>, 'emit'>>();

// ── a controller class as the contract (found by a new-user trial) ─────────────────────────────────────────
// A handler's streamed parameter is typed as it receives it (SmuxStreamedPayload<T>, or AsyncIterable<T> under a
// transforming ValidationPipe): its stub method takes what a caller sends, any SmuxSource<T>.
declare class SumController {
  csSum(items: SmuxStreamedPayload<number>, ctx: SmuxContext): Promise<number>;
  iterSum(items: AsyncIterable<number>): Promise<number>;
  double(n: number, ctx: SmuxContext): number;
}
const controller = smuxStub<SumController>(client);
expectType<Observable<number>>()(controller.csSum(from([1, 2])));
controller.csSum(
  (async function* () {
    yield 1;
  })(),
);
controller.csSum(Readable.from([1, 2]));
controller.csSum(new SmuxRecordBuilder(from([1, 2])).setTimeout(500).build());
expectType<Observable<number>>()(controller.iterSum(from([1, 2])));
expectType<Observable<number>>()(controller.double(2));
// @ts-expect-error a stream of strings where numbers are due
controller.csSum(from(['1']));
// @ts-expect-error a single value where a stream is due
controller.csSum(1);
