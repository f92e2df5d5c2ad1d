/**
 * `dns`: the client resolves its host name to all its addresses and connects to each; it resolves again every
 * `refreshInterval` and when a connection is lost. The resolver is a test function here (and the clock a fake
 * one, moved by hand), the servers real ones on 127.0.0.1, 127.0.0.2 and 127.0.0.3 sharing one port.
 */
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { firstValueFrom } from 'rxjs';
import { ClientSmux, type ClientSmuxOptions, type SmuxError } from '../../lib/index.js';
import { MIN_RESOLVE_GAP } from '../../lib/nest/address-resolver.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { connectionsTo, kill, releaseAll, resetServers, runWindow, startServers } from '../helpers/many-hosts.js';
import { makeCertificate } from '../helpers/tls.js';
import { closeAll, codeOf, logLines, rejection, smuxError, startApp, trackClient, until, within } from './helpers.js';

beforeEach(resetServers);
afterEach(async () => {
  releaseAll();
  await closeAll();
});

/** A resolver whose answer the test sets, counting its calls. */
function testResolver(answer: string[] | Error) {
  const resolver = {
    answer,
    calls: [] as string[],
    resolve: (name: string): Promise<readonly string[]> => {
      resolver.calls.push(name);
      return resolver.answer instanceof Error ? Promise.reject(resolver.answer) : Promise.resolve([...resolver.answer]);
    },
  };
  return resolver;
}

/** A client of `svc.test:port` resolved by `resolve`, on a fake clock (keep-alive off: only the resolver's timers move). */
function dnsClient(
  port: number,
  resolve: (name: string) => Promise<readonly string[]>,
  clock: FakeClock,
  extra: Partial<ClientSmuxOptions> = {},
) {
  return trackClient(
    new ClientSmux({
      host: 'svc.test',
      port,
      dns: { refreshInterval: 5_000, resolve },
      smux: { clock, keepAliveDisabled: true },
      ...extra,
    }),
  );
}

/** One turn of the event loop: what the resolver answered is taken in. */
const turn = () => new Promise((resolve) => setImmediate(resolve));
const who = (client: ClientSmux, i: number) => firstValueFrom(client.send<string>('who', i));
const ready = (client: ClientSmux) => client.connections.filter((c) => c.state === 'ready').map((c) => c.address);

describe('dns: every address of a name', () => {
  test('a server added to the answer gets calls after the next resolution (not before)', async () => {
    const servers = await startServers(['127.0.0.1', '127.0.0.2', '127.0.0.3'], { samePort: true });
    const { port } = servers[0];
    const resolver = testResolver(['127.0.0.1', '127.0.0.2']);
    const clock = new FakeClock();
    const client = dnsClient(port, resolver.resolve, clock);
    await client.connect();
    await until(() => ready(client).length === 2, 5_000, 'two connections');
    expect(resolver.calls).toEqual(['svc.test']);
    expect(client.connections.map((c) => c.address)).toEqual([`127.0.0.1:${port}`, `127.0.0.2:${port}`]);

    resolver.answer = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
    const before = new Set<string>();
    for (let i = 0; i < 300; i++) before.add(await who(client, i));
    expect([...before].sort()).toEqual(['a', 'b']); // the new answer is not asked for yet

    clock.advance(4_999);
    expect(resolver.calls).toHaveLength(1);
    clock.advance(1); // refreshInterval
    expect(resolver.calls).toHaveLength(2);
    await until(() => ready(client).length === 3, 5_000, 'the third connection');
    const counts = new Map<string, number>();
    await runWindow(900, 24, async (i) => {
      const name = await who(client, i);
      counts.set(name, (counts.get(name) ?? 0) + 1);
    });
    expect(counts.get('c') ?? 0).toBeGreaterThan(900 * 0.2); // its share (a third) within the usual spread
  });

  test('an address gone from the answer takes no new call, finishes its calls, then closes', async () => {
    const servers = await startServers(['127.0.0.1', '127.0.0.2'], { samePort: true });
    const [, leaving] = servers;
    const resolver = testResolver(['127.0.0.1', '127.0.0.2']);
    const clock = new FakeClock();
    const client = dnsClient(servers[0].port, resolver.resolve, clock);
    await client.connect();
    await until(() => ready(client).length === 2, 5_000, 'two connections');
    const held = Array.from({ length: 8 }, (_, i) => firstValueFrom(client.send<string>('held', i)));
    await until(() => connectionsTo(client, leaving)[0]?.callsInFlight > 0, 5_000, 'calls on the leaving server');

    resolver.answer = ['127.0.0.1'];
    clock.advance(5_000);
    await until(() => client.connections.length === 1, 5_000, 'the address to go');
    const leavingSession = leaving.handle.sessions[0];
    expect(leavingSession.isClosed).toBe(false); // its calls still run
    for (let i = 0; i < 50; i++) expect(await who(client, i)).toBe('a');
    releaseAll();
    const names = await within(Promise.all(held), 'the held calls');
    expect(names).toContain('b'); // they finished where they ran
    await until(() => leavingSession.isClosed, 5_000, 'the leaving connection to close');
  });

  test('a lost connection starts a resolution at once, and at most one per second', async () => {
    const servers = await startServers(['127.0.0.1', '127.0.0.2', '127.0.0.3'], { samePort: true });
    const resolver = testResolver(['127.0.0.1', '127.0.0.2', '127.0.0.3']);
    const clock = new FakeClock();
    const client = dnsClient(servers[0].port, resolver.resolve, clock);
    await client.connect();
    await until(() => ready(client).length === 3, 5_000, 'three connections');
    clock.advance(MIN_RESOLVE_GAP); // the first resolution is a second old
    resolver.answer = ['127.0.0.1', '127.0.0.3'];
    kill(servers[1]);
    await until(() => resolver.calls.length === 2, 5_000, 'a resolution at the loss');
    await until(() => client.connections.length === 2, 5_000, 'the dead address to go');
    kill(servers[2]);
    await until(() => ready(client).length === 1, 5_000, 'the second loss');
    expect(resolver.calls).toHaveLength(2); // within a second of the last one: it waits
    clock.advance(MIN_RESOLVE_GAP);
    expect(resolver.calls).toHaveLength(3);
  });

  test('a name that resolves to nothing: calls fail fast with its error as the cause; retried with backoff until it resolves', async () => {
    const [server] = await startServers(['127.0.0.1']);
    const notFound = Object.assign(new Error('getaddrinfo ENOTFOUND svc.test'), { code: 'ENOTFOUND' });
    const resolver = testResolver(notFound);
    const clock = new FakeClock();
    const client = dnsClient(server.port, resolver.resolve, clock, { reconnect: { initialDelay: 100, maxDelay: 400, jitter: 0 } });
    const first = await rejection(who(client, 0));
    expect(first).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ENOTFOUND'));
    expect(codeOf((first as SmuxError).cause)).toBe('ENOTFOUND');
    expect((first as SmuxError).retryable).toBe(true);
    expect(await rejection(who(client, 1))).toEqual(smuxError('ERR_SMUX_UNAVAILABLE', 'ENOTFOUND')); // fast: no new lookup
    expect(resolver.calls).toHaveLength(1);
    clock.advance(100);
    expect(resolver.calls).toHaveLength(2); // the first retry
    await turn(); // (its failure is taken in)
    clock.advance(199);
    expect(resolver.calls).toHaveLength(2);
    resolver.answer = ['127.0.0.1'];
    clock.advance(1); // 200 ms: the backoff doubled
    expect(resolver.calls).toHaveLength(3);
    await until(() => ready(client).length === 1, 5_000, 'the connection once the name resolves');
    expect(await who(client, 2)).toBe('a');
  });

  test('a failing resolution keeps the addresses it had (and says so once), the calls go on', async () => {
    const servers = await startServers(['127.0.0.1', '127.0.0.2'], { samePort: true });
    const resolver = testResolver(['127.0.0.1', '127.0.0.2']);
    const clock = new FakeClock();
    const client = dnsClient(servers[0].port, resolver.resolve, clock);
    await client.connect();
    await until(() => ready(client).length === 2, 5_000, 'two connections');
    logLines.length = 0;
    resolver.answer = new Error('DNS server unreachable');
    clock.advance(5_000);
    expect(resolver.calls).toHaveLength(2);
    await turn();
    expect(ready(client)).toHaveLength(2);
    expect(logLines.filter((l) => l.context === 'ClientSmux' && l.level === 'warn').map((l) => l.message)).toEqual([
      `Could not resolve svc.test:${servers[0].port}: DNS server unreachable (keeping the 2 addresses found before)`,
    ]);
    const names = new Set<string>();
    for (let i = 0; i < 100; i++) names.add(await who(client, i));
    expect([...names].sort()).toEqual(['a', 'b']);
  });

  // Found by a new-user trial: README said calls fail fast "while a name resolves to nothing at all" — true only until
  // its first answer. An empty answer later is a failed resolution too: the addresses found before stay.
  test('an empty answer after earlier ones keeps the addresses found before (and says so); the calls go on', async () => {
    const [server] = await startServers(['127.0.0.1']);
    const resolver = testResolver(['127.0.0.1']);
    const clock = new FakeClock();
    const client = dnsClient(server.port, resolver.resolve, clock);
    await client.connect();
    logLines.length = 0;
    resolver.answer = [];
    clock.advance(5_000);
    expect(resolver.calls).toHaveLength(2);
    await turn();
    expect(ready(client)).toEqual([`127.0.0.1:${server.port}`]);
    expect(logLines.filter((l) => l.context === 'ClientSmux' && l.level === 'warn').map((l) => l.message)).toEqual([
      `Could not resolve svc.test:${server.port}: svc.test resolved to no address (keeping the 1 address found before)`,
    ]);
    expect(await who(client, 1)).toBe('a');
  });

  test("the default resolver is the system's (an address literal resolves to itself)", async () => {
    const [server] = await startServers(['127.0.0.1']);
    const client = trackClient(new ClientSmux({ host: '127.0.0.1', port: server.port, dns: true }));
    expect(await who(client, 0)).toBe('a');
    expect(client.connections.map((c) => c.address)).toEqual([`127.0.0.1:${server.port}`]);
  });

  test('with tls, the certificate is checked against the name, not the resolved address', async () => {
    const pair = makeCertificate();
    if (pair === null) return; // makeCertificate warned loudly
    const handle = await startApp({
      controllers: [(await import('../helpers/many-hosts.js')).WhoController],
      providers: [{ provide: 'SERVER_NAME', useValue: 'tls' }],
      server: { host: '127.0.0.1', tls: pair },
    });
    // The certificate is for DNS:localhost only: connecting to 127.0.0.1 it passes only with servername localhost.
    const client = trackClient(
      new ClientSmux({
        host: 'localhost',
        port: handle.port,
        tls: { ca: pair.cert },
        dns: { resolve: () => Promise.resolve(['127.0.0.1']) },
      }),
    );
    expect(await who(client, 0)).toBe('tls');
  });
});
