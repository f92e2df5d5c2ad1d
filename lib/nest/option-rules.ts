import { SmuxError } from '../smux/index.js';
import { describeValue, nearestName } from '../util/describe.js';

/*
 * The option checks both sides share: a rule for every option a side accepts (its type and range, for the
 * messages), and check(), which refuses a wrong type, a value out of range or an unknown name with a SmuxError
 * ERR_SMUX_INVALID_CONFIG. options.ts applies them and fills in the defaults.
 */

/** Node's timers hold at most 2^31 − 1 ms. */
const MAX_MS = 0x7fff_ffff;

/** What every option of a side is, for the checks and the "did you mean" hint. */
type Rule =
  | { kind: 'integer'; min: number; max: number; unit: string }
  | { kind: 'number'; min: number; max: number; unit: string }
  | { kind: 'string' }
  | { kind: 'boolean' }
  | { kind: 'object' }
  | { kind: 'codec'; method: 'serialize' | 'deserialize' }
  | { kind: 'list' }
  | { kind: 'function' }
  | { kind: 'flag-or-object' };

/** The options both sides take. */
const common: Record<string, Rule> = {
  host: { kind: 'string' },
  port: { kind: 'integer', min: 0, max: 65_535, unit: 'a TCP port' },
  path: { kind: 'string' },
  smux: { kind: 'object' },
  maxMessageBytes: { kind: 'integer', min: 1, max: 2 ** 32 - 1, unit: 'bytes' },
  serializer: { kind: 'codec', method: 'serialize' },
  deserializer: { kind: 'codec', method: 'deserialize' },
  tls: { kind: 'object' },
};

/** The options of `ServerSmuxOptions`. */
export const serverRules: Record<string, Rule> = {
  ...common,
  maxConnections: { kind: 'integer', min: 1, max: MAX_MS, unit: 'connections' },
  maxCallsPerConnection: { kind: 'integer', min: 1, max: MAX_MS, unit: 'calls' },
  maxEventsPerConnection: { kind: 'integer', min: 1, max: MAX_MS, unit: 'event handlers' },
  maxReplyBufferBytes: { kind: 'integer', min: 1, max: Number.MAX_SAFE_INTEGER, unit: 'bytes' },
  closeTimeout: { kind: 'integer', min: 0, max: MAX_MS, unit: 'ms; 0 ends running calls at once' },
  finTimeout: { kind: 'integer', min: 1, max: MAX_MS, unit: 'ms' },
  maxPendingRequestBytes: { kind: 'integer', min: 1, max: Number.MAX_SAFE_INTEGER, unit: 'bytes per connection' },
  maxQueuedReplyBytes: { kind: 'integer', min: 1, max: Number.MAX_SAFE_INTEGER, unit: 'bytes per connection' },
  replyStallTimeout: { kind: 'integer', min: 1, max: MAX_MS, unit: 'ms' },
  requestTimeout: { kind: 'integer', min: 1, max: MAX_MS, unit: 'ms' },
  evictIdleAfter: { kind: 'integer', min: 0, max: MAX_MS, unit: 'ms; 0 = never evict' },
  maxConnectionsPerAddress: { kind: 'integer', min: 1, max: MAX_MS, unit: 'connections' },
  maxConnectionAge: { kind: 'integer', min: 0, max: MAX_MS, unit: 'ms; 0 = no limit' },
  maxConnectionAgeGrace: { kind: 'integer', min: 0, max: MAX_MS, unit: 'ms; 0 = as long as calls run' },
  connectTo: { kind: 'object' },
};

/** The options of `ClientSmuxOptions`. */
export const clientRules: Record<string, Rule> = {
  ...common,
  timeout: { kind: 'integer', min: 0, max: 0xffff_ffff, unit: 'ms; 0 = no deadline' }, // the wire's u32 TIMEOUT field
  waitForReady: { kind: 'boolean' },
  maxSourceBufferBytes: { kind: 'integer', min: 1, max: Number.MAX_SAFE_INTEGER, unit: 'bytes' },
  maxConcurrentCalls: { kind: 'integer', min: 1, max: MAX_MS, unit: 'calls' },
  maxQueuedCalls: { kind: 'integer', min: 0, max: MAX_MS, unit: 'calls; 0 = none wait' },
  connectTimeout: { kind: 'integer', min: 1, max: MAX_MS, unit: 'ms' },
  reconnect: { kind: 'object' },
  hosts: { kind: 'list' },
  dns: { kind: 'flag-or-object' },
  connectionsPerAddress: { kind: 'integer', min: 1, max: 256, unit: 'connections to each address' },
  pingInterval: { kind: 'integer', min: 0, max: MAX_MS, unit: 'ms; 0 = no pings' },
};

/** An entry of the client's `hosts` option (port 0 is no server to dial). */
export const hostRules: Record<string, Rule> = {
  host: { kind: 'string' },
  port: { kind: 'integer', min: 1, max: 65_535, unit: 'a TCP port' },
};

/** The client's `dns` option, given as an object. */
export const dnsRules: Record<string, Rule> = {
  refreshInterval: { kind: 'integer', min: 1_000, max: MAX_MS, unit: 'ms' },
  resolve: { kind: 'function' },
};

/** The client's `reconnect` option. */
export const reconnectRules: Record<string, Rule> = {
  initialDelay: { kind: 'integer', min: 0, max: MAX_MS, unit: 'ms' },
  maxDelay: { kind: 'integer', min: 0, max: MAX_MS, unit: 'ms' },
  factor: { kind: 'number', min: 1, max: 1000, unit: 'growth per failed attempt' },
  jitter: { kind: 'number', min: 0, max: 1, unit: 'a fraction of each delay' },
};

/** Checks each present option against its rule; unknown names are refused with the nearest known one. */
export function check<T extends object>(side: string, input: T | undefined, rules: Record<string, Rule>, prefix = ''): T {
  if (input === undefined) return {} as T;
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new SmuxError(
      'ERR_SMUX_INVALID_CONFIG',
      `${side} ${prefix === '' ? 'options' : `option ${prefix.slice(0, -1)}`} must be an object, got ${describeValue(input)}`,
    );
  }
  for (const [name, value] of Object.entries(input)) {
    const rule = rules[name];
    if (rule === undefined) {
      const hint = nearestName(name, Object.keys(rules));
      throw new SmuxError(
        'ERR_SMUX_INVALID_CONFIG',
        `${side} has no option ${prefix}${name}${hint === undefined ? '' : ` (did you mean ${prefix}${hint}?)`}; its options are ${Object.keys(
          rules,
        )
          .map((k) => prefix + k)
          .join(', ')}`,
      );
    }
    if (value !== undefined) checkValue(side, prefix + name, rule, value);
  }
  return input;
}

/** Refuses a value its rule does not allow; `name` is the option's full name (`reconnect.factor`). */
function checkValue(side: string, name: string, rule: Rule, value: unknown): void {
  switch (rule.kind) {
    case 'integer':
    case 'number': {
      const ok = typeof value === 'number' && (rule.kind === 'number' ? Number.isFinite(value) : Number.isInteger(value));
      if (!ok || value < rule.min || value > rule.max) {
        fail(
          side,
          name,
          `must be ${rule.kind === 'integer' ? 'an integer' : 'a number'} from ${rule.min} to ${rule.max} (${rule.unit})`,
          value,
        );
      }
      return;
    }
    case 'string':
      if (typeof value !== 'string' || value === '') fail(side, name, 'must be a non-empty string', value);
      return;
    case 'boolean':
      if (typeof value !== 'boolean') fail(side, name, 'must be true or false', value);
      return;
    case 'object':
      if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(side, name, 'must be an object', value);
      return;
    case 'codec':
      if (typeof value !== 'object' || value === null || typeof (value as Record<string, unknown>)[rule.method] !== 'function') {
        fail(side, name, `must be an object with a ${rule.method}() method`, value);
      }
      return;
    case 'list':
      if (!Array.isArray(value)) fail(side, name, 'must be an array', value);
      return;
    case 'function':
      if (typeof value !== 'function') fail(side, name, 'must be a function', value);
      return;
    case 'flag-or-object':
      if (typeof value !== 'boolean' && (typeof value !== 'object' || value === null || Array.isArray(value))) {
        fail(side, name, 'must be true, false or an object', value);
      }
  }
}

/** Throws the ERR_SMUX_INVALID_CONFIG every check gives: the option, why it is refused, and the value with its type. @throws SmuxError */
export function fail(side: string, name: string, why: string, value: unknown): never {
  throw new SmuxError('ERR_SMUX_INVALID_CONFIG', `${side} option ${name} ${why}, got ${describeValue(value)}`);
}
