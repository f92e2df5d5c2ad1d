import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import {
  type CallHandler,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Injectable,
  type NestInterceptor,
  Inject,
  ParseIntPipe,
  Scope,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { REQUEST } from '@nestjs/core';
import { Ctx, MessagePattern, Payload, type RequestContext } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom, map, type Observable, of, toArray } from 'rxjs';
import { type ClientSmux, Session, SmuxChannel, SmuxContext, SmuxRecordBuilder } from '../../lib/index.js';
import { type AppHandle, closeAll, startApp } from './helpers.js';

/** Contexts the handlers saw, for identity checks. */
const contexts: SmuxContext[] = [];

@Injectable()
class ApiKeyGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    expect(context.getType()).toBe('rpc');
    return context.switchToRpc().getContext<SmuxContext>().getHeaders()['x-api-key'] === 'secret';
  }
}

@Injectable()
class WrapInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const pattern = context.switchToRpc().getContext<SmuxContext>().getPattern();
    return next.handle().pipe(map((value: unknown) => ({ pattern, value })));
  }
}

@Controller()
class ContextController {
  @MessagePattern('whoami')
  whoami(@Ctx() ctx: SmuxContext) {
    contexts.push(ctx);
    const stream = ctx.getStream();
    return {
      pattern: ctx.getPattern(),
      headers: ctx.getHeaders(),
      metadata: ctx.getMetadata(),
      streamIsChannel: stream instanceof SmuxChannel,
      streamId: stream.id,
      openedByPeer: stream.openedByPeer,
      sessionRole: ctx.getSession().role,
      sessionIsSession: ctx.getSession() instanceof Session,
      sameSession: stream.session === ctx.getSession(),
    };
  }

  @MessagePattern({ service: 'ctx', op: 'pattern' })
  objectPattern(@Ctx() ctx: SmuxContext) {
    return ctx.getPattern();
  }

  @MessagePattern('guarded')
  @UseGuards(ApiKeyGuard)
  guarded(@Payload() data: string) {
    return `welcome ${data}`;
  }

  @MessagePattern('parse-int')
  parseInt(@Payload(ParseIntPipe) n: number) {
    return { n, type: typeof n };
  }

  @MessagePattern('parse-field')
  parseField(@Payload('count', ParseIntPipe) count: number) {
    return count * 2;
  }

  @MessagePattern('intercepted')
  @UseInterceptors(WrapInterceptor)
  intercepted(@Payload() n: number) {
    return n + 1;
  }

  @MessagePattern('intercepted-stream')
  @UseInterceptors(WrapInterceptor)
  interceptedStream() {
    return of('a', 'b');
  }
}

@Controller({ scope: Scope.REQUEST })
class ScopedController {
  static instances = 0;

  constructor(@Inject(REQUEST) private readonly request: RequestContext<unknown, SmuxContext>) {
    ScopedController.instances++;
  }

  @MessagePattern('scoped')
  scoped() {
    const ctx = this.request.getContext();
    return {
      pattern: this.request.getPattern(),
      data: this.request.getData(),
      isSmux: ctx instanceof SmuxContext,
      headers: ctx.getHeaders(),
    };
  }
}

describe('context, metadata, guards, pipes and interceptors', () => {
  let handle: AppHandle;
  let client: ClientSmux;

  beforeAll(async () => {
    handle = await startApp({ controllers: [ContextController, ScopedController], providers: [ApiKeyGuard, WrapInterceptor] });
    client = handle.client();
  });
  afterAll(closeAll);

  test('SmuxRecordBuilder headers reach ctx.getHeaders() and ctx.getMetadata()', async () => {
    const record = new SmuxRecordBuilder({ q: 1 }).setHeaders({ 'x-trace': 't-1' }).setHeaders({ lang: 'fr' }).build();
    const seen = await firstValueFrom(client.send('whoami', record));
    expect(seen).toMatchObject({
      pattern: 'whoami',
      headers: { 'x-trace': 't-1', lang: 'fr' },
      metadata: { 'x-trace': 't-1', lang: 'fr' },
    });
  });

  test('a call without headers sees an empty object', async () => {
    expect(await firstValueFrom(client.send('whoami', {}))).toMatchObject({ headers: {}, metadata: {} });
  });

  test("Nest 12's dispatch hook metadata reaches the handler, merged with record headers (record wins)", async () => {
    const hooked = handle.client();
    let dispatched = 0;
    hooked.setOnDispatchHook((packet) => {
      dispatched++;
      (packet as { metadata?: Record<string, string> }).metadata = { traceparent: '00-abc-def-01', lang: 'en' };
    });
    expect(await firstValueFrom(hooked.send('whoami', {}))).toMatchObject({ metadata: { traceparent: '00-abc-def-01', lang: 'en' } });
    const merged = await firstValueFrom(hooked.send('whoami', new SmuxRecordBuilder({}).setHeaders({ lang: 'de' }).build()));
    expect(merged).toMatchObject({ headers: { traceparent: '00-abc-def-01', lang: 'de' } });
    expect(dispatched).toBe(2);
  });

  test("getStream() and getSession() are the call's smux stream and the server end of its connection", async () => {
    contexts.length = 0;
    const first = await firstValueFrom(client.send<Record<string, unknown>>('whoami', {}));
    const second = await firstValueFrom(client.send<Record<string, unknown>>('whoami', {}));
    expect(first).toMatchObject({
      streamIsChannel: true,
      openedByPeer: true,
      sessionRole: 'server',
      sessionIsSession: true,
      sameSession: true,
    });
    expect((first.streamId as number) % 2).toBe(1); // opened by the client
    expect(second.streamId).not.toBe(first.streamId); // one stream per call
    expect(contexts[0].getSession()).toBe(contexts[1].getSession()); // one connection
    expect(handle.sessions).toContain(contexts[0].getSession());
  });

  test("getArgs() holds the call's readings, not the transport's call object (its methods and connection are internal)", async () => {
    contexts.length = 0;
    await firstValueFrom(client.send('whoami', {}));
    const args = contexts[0].getArgs();
    expect(args).toHaveLength(4);
    const control = args[3] as object;
    // Only the three readings CallControl names, all getters on the prototype: no own state, no methods.
    expect(Object.keys(control)).toEqual([]);
    expect(Object.getOwnPropertyNames(Object.getPrototypeOf(control)).sort()).toEqual(['constructor', 'duplex', 'remainingMs', 'signal']);
    for (const internal of ['cancel', 'end', 'refuse', 'fail', 'connection', 'channel', 'run', 'answered'])
      expect((control as Record<string, unknown>)[internal]).toBeUndefined();
    expect(contexts[0].signal).toBeInstanceOf(AbortSignal);
    expect(contexts[0].getRemainingTime()).toBeUndefined(); // no deadline on this call
  });

  test('getPattern() gives an object pattern as JSON text', async () => {
    expect(JSON.parse(await firstValueFrom(client.send<string>({ service: 'ctx', op: 'pattern' }, {})))).toEqual({
      service: 'ctx',
      op: 'pattern',
    });
  });

  test('a guard reading a header lets the call through or rejects it as Nest does', async () => {
    const ok = new SmuxRecordBuilder('ada').setHeaders({ 'x-api-key': 'secret' }).build();
    expect(await firstValueFrom(client.send('guarded', ok))).toBe('welcome ada');
    await expect(firstValueFrom(client.send('guarded', 'eve'))).rejects.toEqual({ status: 'error', message: 'Forbidden resource' });
    const wrong = new SmuxRecordBuilder('mallory').setHeaders({ 'x-api-key': 'guess' }).build();
    await expect(firstValueFrom(client.send('guarded', wrong))).rejects.toEqual({ status: 'error', message: 'Forbidden resource' });
  });

  test('ParseIntPipe on @Payload() converts a string payload, and rejects a bad one', async () => {
    expect(await firstValueFrom(client.send('parse-int', '42'))).toEqual({ n: 42, type: 'number' });
    expect(await firstValueFrom(client.send('parse-field', { count: '21' }))).toBe(42);
    // BadRequestException is not an RpcException: Nest's RPC filter answers with its generic error.
    await expect(firstValueFrom(client.send('parse-int', 'forty-two'))).rejects.toEqual({
      status: 'error',
      message: 'Internal server error',
    });
  });

  test('an interceptor maps the result, for single and streamed replies', async () => {
    expect(await firstValueFrom(client.send('intercepted', 1))).toEqual({ pattern: 'intercepted', value: 2 });
    expect(await lastValueFrom(client.send('intercepted-stream', {}).pipe(toArray()))).toEqual([
      { pattern: 'intercepted-stream', value: 'a' },
      { pattern: 'intercepted-stream', value: 'b' },
    ]);
  });

  test('a request-scoped controller gets the call through REQUEST, one instance per call', async () => {
    const before = ScopedController.instances;
    const record = new SmuxRecordBuilder({ q: 1 }).setHeaders({ who: 'me' }).build();
    expect(await firstValueFrom(client.send('scoped', record))).toEqual({
      pattern: 'scoped',
      data: { q: 1 },
      isSmux: true,
      headers: { who: 'me' },
    });
    await firstValueFrom(client.send('scoped', 2));
    expect(ScopedController.instances - before).toBe(2);
  });
});
