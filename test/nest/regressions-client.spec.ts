import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { type Deserializer, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { ClientSmux } from '../../lib/index.js';
import { encodeMessage, Flag, Kind } from '../../lib/nest/call-codec.js';
import { Session, type SmuxChannel } from '../../lib/smux/index.js';
import { settle } from '../helpers/sessions.js';
import {
  closeAll,
  codeOf,
  type Deferred,
  deferred,
  rawCall,
  rawServer,
  rawSession,
  response,
  startApp,
  trackClient,
  until,
  within,
} from './helpers.js';

/*
 * Regression tests for the review's client-side and deadline findings (ClientSmux / ClientCall): each one is
 * named after the failure it prevents, and failed before the fix.
 */

let gate: Deferred<void>;
let running = 0;
const events: unknown[] = [];

@Controller()
class ClientRegressionsController {
  @MessagePattern('slow')
  async slow(@Payload() n: number) {
    running++;
    await gate.promise;
    return n;
  }

  @MessagePattern('echo')
  echo(@Payload() data: unknown) {
    return data;
  }

  @EventPattern('evt')
  evt(@Payload() data: unknown) {
    events.push(data);
  }
}

const servers = new Set<Awaited<ReturnType<typeof rawServer>>>();
/** A raw server closed after each test. */
async function trackedRawServer(...args: Parameters<typeof rawServer>): ReturnType<typeof rawServer> {
  const server = await rawServer(...args);
  servers.add(server);
  return server;
}

/** Subscribes to a call and records its values and how it ended. */
function observe(client: ClientSmux, pattern: string, data: unknown) {
  const values: unknown[] = [];
  const outcome = { done: false, error: undefined as unknown, completed: false };
  client.send(pattern, data).subscribe({
    next: (value) => void values.push(value),
    error: (error: unknown) => Object.assign(outcome, { done: true, error }),
    complete: () => Object.assign(outcome, { done: true, completed: true }),
  });
  return { values, outcome };
}

describe('regressions: ClientSmux', () => {
  beforeEach(() => {
    gate = deferred();
    running = 0;
    events.length = 0;
  });
  afterEach(async () => {
    await closeAll();
    for (const server of servers) await server.close();
    servers.clear();
  });

  // ── (4) an async deserializer and a server that goes away ─────────────────────────────────────────────

  test.each([
    ['the server FINs without LAST', 'ERR_SMUX_STREAM_CLOSED'],
    ['the connection drops', 'ERR_SMUX_SESSION_CLOSED'],
  ])('a call with an async deserializer fails, not hangs, when %s', async (how, code) => {
    let held: { channel: SmuxChannel; session: Session } | null = null;
    const server = await trackedRawServer((channel, _request, session) => {
      channel.write(response(1)); // a value, no LAST
      held = { channel, session };
    });
    const asyncDeserializer: Deserializer = { deserialize: async (value: unknown) => value };
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port, deserializer: asyncDeserializer }));
    const call = observe(client, 'x', {});
    await until(() => call.values.length === 1, 5_000, 'the first value');
    if (how === 'the server FINs without LAST') held!.channel.end();
    else held!.session.destroy();
    await until(() => call.outcome.done, 5_000, 'the call to fail');
    expect(call.values).toEqual([1]);
    expect({ completed: call.outcome.completed, code: codeOf(call.outcome.error) }).toEqual({ completed: false, code });
  });

  // ── (8) emit-only clients and stream ids ──────────────────────────────────────────────────────────────

  test('an emit-only client moves to a fresh session when stream ids run out: every event is delivered', async () => {
    const handle = await startApp({ controllers: [ClientRegressionsController] });
    const client = handle.client({ smux: { firstStreamId: 0xffff_fff1 } }); // 8 ids per session
    for (let i = 0; i < 20; i++) await within(lastValueFrom(client.emit('evt', i), { defaultValue: undefined }), `emit ${i}`);
    await until(() => events.length === 20, 5_000, 'all 20 events');
    expect([...events].sort((a, b) => (a as number) - (b as number))).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(handle.sessions.length).toBeGreaterThanOrEqual(3);
  });

  // ── (9) a server that opens streams ───────────────────────────────────────────────────────────────────

  test('a server that opens 1100 streams does not stall the client: its calls still succeed and the streams are refused', async () => {
    const server = await trackedRawServer((channel, request) => {
      channel.write(response(request.body, Flag.LAST));
      channel.end();
    });
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port }));
    expect(await within(firstValueFrom(client.send('echo', 1)), 'the first call')).toBe(1);
    const session = server.sessions[0];
    let refused = 0;
    for (let i = 0; i < 1100; i++) {
      session.openChannel({ onData: () => undefined, onEnd: () => void refused++, onClose: () => undefined }).write(Buffer.from('x'));
    }
    expect(await within(firstValueFrom(client.send('echo', 2)), 'a call after the server opened 1100 streams')).toBe(2);
    await until(() => refused === 1100, 5_000, 'every server-opened stream refused (FIN)');
    expect(await within(firstValueFrom(client.send('echo', 3)), 'another call')).toBe(3);
  });

  // ── (10) deadlines of 2^31 ms and more ────────────────────────────────────────────────────────────────

  test('a client timeout of 3e9 ms (beyond 2^31 - 1) does not fail the call at once', async () => {
    const handle = await startApp({ controllers: [ClientRegressionsController] });
    const client = handle.client({ timeout: 3e9 });
    const call = observe(client, 'slow', 1);
    await until(() => running === 1, 5_000, 'the handler running');
    await settle(50); // a timer Node overflowed fires after 1 ms
    expect(call.outcome).toEqual({ done: false, error: undefined, completed: false });
    gate.resolve();
    await until(() => call.outcome.done, 5_000, 'the call');
    expect({ values: call.values, ...call.outcome }).toEqual({ values: [1], done: true, error: undefined, completed: true });
  });

  test('a raw TIMEOUT field of 0xFFFFFFFF ms does not fail the call at once on the server', async () => {
    const handle = await startApp({ controllers: [ClientRegressionsController] });
    const session = await rawSession(handle.port);
    const call = rawCall(session, encodeMessage(Kind.REQUEST, 0, 2, { id: '1', pattern: 'slow', timeout: 0xffff_ffff }));
    await until(() => running === 1, 5_000, 'the handler running');
    await settle(50);
    expect(call.messages).toEqual([]);
    gate.resolve();
    expect(await within(call.last, 'the reply')).toMatchObject({ flags: Flag.LAST, body: 2 });
  });

  test('new ClientSmux({ timeout }) refuses Infinity, NaN, fractions and negative values with ERR_SMUX_INVALID_CONFIG', () => {
    for (const timeout of [Infinity, Number.NaN, -1, 0.5, 2 ** 32]) {
      expect(() => new ClientSmux({ timeout })).toThrow(expect.objectContaining({ code: 'ERR_SMUX_INVALID_CONFIG' }));
    }
    for (const timeout of [0, 1, 3e9]) expect(() => trackClient(new ClientSmux({ timeout }))).not.toThrow();
  });
});
