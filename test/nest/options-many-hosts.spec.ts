/**
 * The options of a ClientSmux over several servers (`hosts`, `dns`, `connectionsPerAddress`) are checked in the
 * constructor like every other: the option named, the value shown with its type, what is allowed.
 */
import { describe, expect, test } from '@jest/globals';
import { ClientSmux, type ClientSmuxOptions, SmuxError } from '../../lib/index.js';

/** The message of the error the constructor throws for `options`. */
function refusal(options: unknown): string {
  try {
    new ClientSmux(options as ClientSmuxOptions);
  } catch (error) {
    expect(error).toBeInstanceOf(SmuxError);
    expect((error as SmuxError).code).toBe('ERR_SMUX_INVALID_CONFIG');
    return (error as SmuxError).message;
  }
  throw new Error('the constructor accepted the options');
}

const two = [
  { host: '127.0.0.1', port: 4000 },
  { host: '127.0.0.2', port: 4000 },
];

describe('ClientSmux options for many hosts', () => {
  test.each([
    [{ hosts: two, host: '127.0.0.1' }, 'ClientSmux option hosts cannot be combined with host (list every server in hosts), got an array'],
    [{ hosts: two, port: 4000 }, 'ClientSmux option hosts cannot be combined with port (list every server in hosts), got an array'],
    [
      { hosts: two, path: '/tmp/x.sock' },
      'ClientSmux option hosts cannot be combined with path (list every server in hosts), got an array',
    ],
    [{ hosts: [] }, 'ClientSmux option hosts must list at least one server ({ host, port }), got an array'],
    [{ hosts: { host: '127.0.0.1', port: 4000 } }, 'ClientSmux option hosts must be an array, got an object'],
    [{ hosts: ['127.0.0.1:4000'] }, 'ClientSmux option hosts[0] must be an object, got "127.0.0.1:4000" (a string)'],
    [{ hosts: [{ host: '127.0.0.1' }] }, 'ClientSmux option hosts[0].port is required (a TCP port, 1–65535), got undefined'],
    [{ hosts: [{ port: 4000 }] }, 'ClientSmux option hosts[0].host is required (a host name or address), got undefined'],
    [
      { hosts: [two[0], { host: '127.0.0.2', port: '4000' }] },
      'ClientSmux option hosts[1].port must be an integer from 1 to 65535 (a TCP port), got "4000" (a string)',
    ],
    [
      { hosts: [{ host: '127.0.0.1:4000', port: 4000 }] },
      'ClientSmux option hosts[0].host must be a host name or address without a port (give it as port), got "127.0.0.1:4000" (a string)',
    ],
    [
      { hosts: [...two, { host: '127.0.0.1', port: 4000 }] },
      'ClientSmux option hosts[2] repeats hosts[0] (127.0.0.1:4000): for several connections to one address use connectionsPerAddress, got an object',
    ],
    [{ dns: 'yes' }, 'ClientSmux option dns must be true, false or an object, got "yes" (a string)'],
    [{ path: '/tmp/x.sock', dns: true }, 'ClientSmux option dns needs host names: it cannot be combined with path, got true (a boolean)'],
    [
      { dns: { refreshInterval: 10 } },
      'ClientSmux option dns.refreshInterval must be an integer from 1000 to 2147483647 (ms), got 10 (a number)',
    ],
    [{ dns: { resolve: 'dns.lookup' } }, 'ClientSmux option dns.resolve must be a function, got "dns.lookup" (a string)'],
    [
      { connectionsPerAddress: 0 },
      'ClientSmux option connectionsPerAddress must be an integer from 1 to 256 (connections to each address), got 0 (a number)',
    ],
    [
      { connectionsPerAddress: 1.5 },
      'ClientSmux option connectionsPerAddress must be an integer from 1 to 256 (connections to each address), got 1.5 (a number)',
    ],
    [
      { connectionsPerAddress: '2' },
      'ClientSmux option connectionsPerAddress must be an integer from 1 to 256 (connections to each address), got "2" (a string)',
    ],
  ])('%j is refused', (options, message) => {
    expect(refusal(options)).toBe(message);
  });

  test('misspelt names get the nearest known one', () => {
    expect(refusal({ hosts: [{ host: '127.0.0.1', prot: 4000 }] })).toMatch(
      /^ClientSmux has no option hosts\[0\]\.prot \(did you mean hosts\[0\]\.port\?\); its options are hosts\[0\]\.host, hosts\[0\]\.port$/,
    );
    expect(refusal({ dns: { refreshInteval: 5_000 } })).toMatch(
      /^ClientSmux has no option dns\.refreshInteval \(did you mean dns\.refreshInterval\?\)/,
    );
    expect(refusal({ connectionsPerAdress: 2 })).toMatch(
      /^ClientSmux has no option connectionsPerAdress \(did you mean connectionsPerAddress\?\)/,
    );
    expect(refusal({ host: '127.0.0.1', hots: [] })).toMatch(/did you mean host\?/); // a tie goes to the older name
  });

  test('good options are taken: one connection per address and index, none dialled before the first call', () => {
    const client = new ClientSmux({ hosts: two, connectionsPerAddress: 2 });
    expect(
      client.connections.map(({ address, index, state, callsInFlight, lastError }) => [address, index, state, callsInFlight, lastError]),
    ).toEqual([
      ['127.0.0.1:4000', 0, 'idle', 0, null],
      ['127.0.0.1:4000', 1, 'idle', 0, null],
      ['127.0.0.2:4000', 0, 'idle', 0, null],
      ['127.0.0.2:4000', 1, 'idle', 0, null],
    ]);
    expect(new ClientSmux({ port: 4000 }).connections.map((c) => c.address)).toEqual(['localhost:4000']);
    // With dns, the addresses are known once the name is resolved (on the first call).
    expect(
      new ClientSmux({ host: 'svc.test', port: 4000, dns: { refreshInterval: 1_000, resolve: async () => ['127.0.0.1'] } }).connections,
    ).toEqual([]);
    expect(() => new ClientSmux({ host: 'svc.test', dns: false, connectionsPerAddress: 256 })).not.toThrow();
  });
});
