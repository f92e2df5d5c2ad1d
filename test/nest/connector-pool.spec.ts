/**
 * A ClientSmux over several servers (`hosts`) and several connections per address: calls spread by the power of
 * two choices, a lost server costs only the calls that were in flight on it, the others go on, and the lost one is
 * redialled in the background. Real servers on 127.0.0.1, 127.0.0.2 and 127.0.0.3.
 */
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, type SmuxError } from '../../lib/index.js';
import {
  connectionsTo,
  delays,
  kill,
  releaseAll,
  resetServers,
  running,
  runWindow,
  spread,
  startServer,
  startServers,
  type NamedServer,
} from '../helpers/many-hosts.js';
import { closeAll, closedPort, codeOf, rejection, smuxError, trackClient, until, within } from './helpers.js';

const LOOPBACKS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];

beforeEach(resetServers);
afterEach(async () => {
  releaseAll();
  await closeAll();
});

const hostsOf = (servers: readonly NamedServer[]) => servers.map(({ host, port }) => ({ host, port }));

/** A client of `servers`, once every connection is ready. */
async function readyClient(servers: readonly NamedServer[], options: Partial<ConstructorParameters<typeof ClientSmux>[0]> = {}) {
  const client = trackClient(new ClientSmux({ hosts: hostsOf(servers), ...options }));
  await client.connect();
  await until(() => client.connections.every((c) => c.state === 'ready'), 5_000, 'every connection ready');
  return client;
}

const who = (client: ClientSmux, i: number) => firstValueFrom(client.send<string>('who', i));
const runningCalls = () => [...running.values()].reduce((a, b) => a + b, 0);

describe('ClientSmux over several servers (hosts)', () => {
  test('3 000 calls, 48 in flight, over three servers: each gets its third within ±20 %', async () => {
    const servers = await startServers(LOOPBACKS);
    const client = await readyClient(servers);
    expect(client.connections.map((c) => c.address)).toEqual(servers.map((s) => `${s.host}:${s.port}`));
    const counts = new Map<string, number>();
    await within(
      runWindow(3_000, 48, async (i) => {
        const name = await who(client, i);
        counts.set(name, (counts.get(name) ?? 0) + 1);
      }),
      'the 3 000 calls',
      20_000,
    );
    const perServer = servers.map((s) => counts.get(s.name) ?? 0);
    expect(perServer.reduce((a, b) => a + b, 0)).toBe(3_000);
    for (const off of spread(perServer)) expect(Math.abs(off)).toBeLessThanOrEqual(0.2);
    expect(client.connections.map((c) => c.callsInFlight)).toEqual([0, 0, 0]);
  });

  test('one call at a time also spreads (ties are broken at random, not towards the first server)', async () => {
    const servers = await startServers(LOOPBACKS);
    const client = await readyClient(servers);
    const counts = new Map<string, number>();
    for (let i = 0; i < 600; i++) {
      const name = await who(client, i);
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    for (const off of spread(servers.map((s) => counts.get(s.name) ?? 0))) expect(Math.abs(off)).toBeLessThanOrEqual(0.25);
  });

  test('a slow server gets fewer calls: each goes to the one with fewer calls in flight of two', async () => {
    const servers = await startServers(LOOPBACKS);
    delays.set('b', 100); // b takes 100 ms a call, a and c a turn of the event loop (far apart, also on a loaded machine)
    const client = await readyClient(servers);
    const counts = new Map<string, number>();
    await runWindow(600, 24, async (i) => {
      const name = await who(client, i);
      counts.set(name, (counts.get(name) ?? 0) + 1);
    });
    // At random it would get a third (200), and 8 calls would wait on it at any time.
    expect(counts.get('b') ?? 0).toBeLessThan(60);
  });

  test('a server killed mid-run loses only the calls in flight on it, which fail at once; the others keep flowing, none hangs', async () => {
    const servers = await startServers(LOOPBACKS);
    const [, victim] = servers;
    const client = await readyClient(servers, { reconnect: { initialDelay: 50, maxDelay: 200 } });
    const answered = new Map<string, number>();
    const failures: unknown[] = [];
    let killedAt = 0;
    let lastFailureAt = 0;
    let onVictimAtKill = -1;
    let sentAfterLoss = 0; // calls started once the client saw the victim's connection gone
    let victimAfterLoss = 0; // … of which the victim answered (must be none)
    let victimAfterKill = 0; // calls in flight at the kill whose reply had already left the victim
    await within(
      runWindow(3_000, 48, async (i) => {
        if (i === 1_000) {
          onVictimAtKill = connectionsTo(client, victim)[0].callsInFlight;
          killedAt = performance.now();
          kill(victim);
        }
        const afterLoss = killedAt > 0 && connectionsTo(client, victim)[0].state !== 'ready';
        if (afterLoss) sentAfterLoss++;
        try {
          const name = await who(client, i);
          answered.set(name, (answered.get(name) ?? 0) + 1);
          if (afterLoss && name === victim.name) victimAfterLoss++;
          if (killedAt > 0 && name === victim.name) victimAfterKill++;
        } catch (error) {
          failures.push(error);
          lastFailureAt = performance.now();
        }
      }),
      'the 3 000 calls (none may hang)',
      20_000,
    );
    // Only calls that were on the victim's connection failed: those in flight at the kill — but for any whose
    // reply the victim had written before it (on loopback a write lands in the client's socket at once, and the
    // client reads it before it sees the reset) — plus any sent to it before the client saw the connection drop.
    expect(onVictimAtKill).toBeGreaterThan(0);
    expect(failures.length + victimAfterKill).toBeGreaterThanOrEqual(onVictimAtKill);
    expect(victimAfterKill).toBeLessThan(onVictimAtKill);
    expect(failures.length).toBeLessThanOrEqual(onVictimAtKill + 48);
    for (const error of failures) {
      // The request may have run on the server before it died: not "retryable" in SmuxError's sense (certainly
      // not run), exactly as a lost connection fails its calls without pools.
      expect(error).toEqual(smuxError('ERR_SMUX_SESSION_CLOSED'));
    }
    expect(lastFailureAt - killedAt).toBeLessThan(1_000); // failed at the loss, not after a timeout (a bound)
    const total = [...answered.values()].reduce((a, b) => a + b, 0);
    expect(total + failures.length).toBe(3_000);
    expect(sentAfterLoss).toBeGreaterThan(1_500);
    expect(victimAfterLoss).toBe(0);
    const survivors = servers.filter((s) => s !== victim).map((s) => answered.get(s.name) ?? 0);
    for (const count of survivors) expect(count).toBeGreaterThan(1_000); // the rest went to them, about evenly
    // The victim's connection backs off and retries in the background; the client stays connected.
    await until(() => codeOf(connectionsTo(client, victim)[0].lastError) === 'ECONNREFUSED', 5_000, 'a refused redial');
    expect(await who(client, 0)).not.toBe(victim.name);
  });

  test('a lost server that comes back is redialled in the background and gets calls again, without a call asking', async () => {
    const servers = await startServers(LOOPBACKS);
    const [, victim] = servers;
    const client = await readyClient(servers, { reconnect: { initialDelay: 20, maxDelay: 50 } });
    const statuses: string[] = [];
    client.status.subscribe((s) => void statuses.push(s));
    kill(victim);
    await until(() => connectionsTo(client, victim)[0].state !== 'ready', 5_000, 'the loss to be seen');
    await victim.handle.close();
    const revived = await startServer('b2', victim.host, victim.port);
    await until(() => connectionsTo(client, revived)[0].state === 'ready', 5_000, 'the background redial');
    expect(revived.handle.sessions).toHaveLength(1);
    const names = new Set<string>();
    for (let i = 0; i < 300 && !names.has('b2'); i++) names.add(await who(client, i));
    expect(names.has('b2')).toBe(true);
    expect(statuses).toEqual(['connected']); // one server down is not the client down
  });

  test('client.status: connected while one connection is ready, disconnected once all are lost; connections shows each', async () => {
    const servers = await startServers(LOOPBACKS);
    const client = await readyClient(servers, { reconnect: { initialDelay: 5_000, maxDelay: 5_000 } });
    const statuses: string[] = [];
    client.status.subscribe((s) => void statuses.push(s));
    kill(servers[0]);
    kill(servers[1]);
    await until(() => client.connections.filter((c) => c.state === 'ready').length === 1, 5_000, 'two losses');
    expect(statuses).toEqual(['connected']);
    kill(servers[2]);
    await until(() => statuses.at(-1) === 'disconnected', 5_000, 'the last loss');
    expect(client.connections.map(({ state, callsInFlight }) => ({ state, callsInFlight }))).not.toContainEqual(
      expect.objectContaining({ state: 'ready' }),
    );
    // The next call dials all three at once (no backoff wait: the losses were not failed attempts), all refuse.
    const error = await rejection(who(client, 0));
    expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ECONNREFUSED'));
    expect((error as SmuxError).retryable).toBe(true);
    expect(client.connections.every((c) => codeOf(c.lastError) === 'ECONNREFUSED')).toBe(true);
  });

  test('while no server answers, calls fail fast once every address has failed, not at the first refusal', async () => {
    const [alive] = await startServers(['127.0.0.1']);
    const client = trackClient(
      new ClientSmux({
        hosts: [
          { host: '127.0.0.2', port: await closedPort() },
          { host: alive.host, port: alive.port },
        ],
      }),
    );
    // The first address refuses at once; the call waits for the second one's first attempt and goes there.
    expect(await who(client, 0)).toBe('a');
    kill(alive);
    await until(() => client.connections.every((c) => c.state !== 'ready'), 5_000, 'the loss');
    const error = await rejection(who(client, 1));
    expect(error).toEqual(smuxError('ERR_SMUX_UNAVAILABLE'));
    expect(client.connections.every((c) => c.lastError !== null)).toBe(true);
  });

  test("each server's maxCallsPerConnection bounds its connection; maxConcurrentCalls stays client-wide", async () => {
    // Limits 1, 2 and 3: the calls beyond the 6 the three allow wait in the client's queue, none is refused.
    const servers = await startServers(LOOPBACKS, { server: (i) => ({ maxCallsPerConnection: i + 1 }) });
    const client = await readyClient(servers);
    const calls = Array.from({ length: 10 }, (_, i) => firstValueFrom(client.send<string>('held', i)));
    await until(() => runningCalls() === 6, 5_000, 'six calls running');
    expect(servers.map((s) => running.get(s.name))).toEqual([1, 2, 3]);
    expect(client.connections.map((c) => c.callsInFlight)).toEqual([1, 2, 3]);
    releaseAll();
    await until(() => runningCalls() === 4, 5_000, 'the four queued calls');
    releaseAll();
    expect((await within(Promise.all(calls), 'the ten calls')).length).toBe(10);

    // A client-wide limit below what the servers allow: 4 at once over the three connections, 4 + 4 + 1.
    const limited = await readyClient(servers, { maxConcurrentCalls: 4 });
    let answered = 0;
    const more = Array.from({ length: 9 }, (_, i) => firstValueFrom(limited.send<string>('held', i)).then(() => void answered++));
    for (const expected of [4, 4, 1]) {
      await until(() => runningCalls() === expected, 5_000, `${expected} calls running`);
      expect(limited.connections.reduce((n, c) => n + c.callsInFlight, 0)).toBe(expected);
      const before = answered;
      releaseAll();
      await until(() => answered === before + expected, 5_000, `${expected} answers`);
    }
    await within(Promise.all(more), 'the nine calls');
  });
});

describe('connectionsPerAddress', () => {
  test('3 connections to one address, each a session on the server, calls spread over them', async () => {
    const [server] = await startServers(['127.0.0.1']);
    const client = trackClient(new ClientSmux({ host: server.host, port: server.port, connectionsPerAddress: 3 }));
    await client.connect();
    await until(() => client.connections.filter((c) => c.state === 'ready').length === 3, 5_000, 'three connections');
    expect(client.connections.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(server.handle.sessions).toHaveLength(3);
    await runWindow(1_500, 24, async (i) => void (await who(client, i)));
    // Each server session accepted its control stream and about a third of the calls.
    const perConnection = server.handle.sessions.map((s) => s.stats.streamsAccepted - 1);
    expect(perConnection.reduce((a, b) => a + b, 0)).toBe(1_500);
    for (const off of spread(perConnection)) expect(Math.abs(off)).toBeLessThanOrEqual(0.2);
  });

  test('with hosts: every address gets that many connections', async () => {
    const servers = await startServers(LOOPBACKS.slice(0, 2));
    const client = await readyClient(servers, { connectionsPerAddress: 2 });
    expect(client.connections.map((c) => `${c.address}#${c.index}`)).toEqual(
      servers.flatMap((s) => [`${s.host}:${s.port}#0`, `${s.host}:${s.port}#1`]),
    );
    expect(servers.map((s) => s.handle.sessions.length)).toEqual([2, 2]);
  });
});
