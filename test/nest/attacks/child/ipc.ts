/**
 * The few messages between the attack harness (test/helpers/attack-harness.ts) and its child processes, over
 * Node's IPC channel (`fork`): the child says `{ ready }` once, then answers each `{ id, cmd, args }` with
 * `{ id, ok, value }` or `{ id, ok: false, error }`. A child exits when the channel closes (the test is gone).
 */

/** A command from the harness. */
export interface CommandMessage {
  id: number;
  cmd: string;
  args?: unknown;
}

/** A child's answer to a command. */
export type ReplyMessage = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

/** A child's first message. */
export interface ReadyMessage {
  ready: unknown;
}

/** Memory of a child after two full GCs (`process.memoryUsage()`, bytes). */
export interface MemoryFigures {
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  rss: number;
}

/** The server's connections right now. */
export interface ServerStats {
  /** Open connections (smux sessions). */
  connections: number;
  /** Streams registered on them. */
  streams: number;
  /** Bytes written to their sockets that the kernel has not taken yet. */
  socketQueued: number;
  /** `slow-event` handlers started so far. */
  slowEvents: number;
}

/** What a child's log saw: lines per level and the last few warnings and errors. */
export interface LogFigures {
  counts: Record<string, number>;
  last: string[];
}

/** The measuring client's figures for one window of time. */
export interface ClientWindow {
  /** Calls completed with their reply. */
  calls: number;
  /** Calls that failed. */
  errors: number;
  /** The first few failures: `CODE: message`. */
  errorSamples: string[];
  /** Length of the window. */
  ms: number;
  /** Completed calls per second. */
  perSecond: number;
  /** The longest time without a completed call (window start and end count as edges). */
  maxGapMs: number;
  /** New clients (connect, one call, close) tried during the window, when probes run. */
  newClients: { ok: number; failed: number; samples: string[] };
}

type Handler = (args: never) => unknown;

/** Answers the harness's commands with `handlers`, after saying `ready` with `value`. */
export function serveCommands(value: unknown, handlers: Record<string, Handler>): void {
  const send = (message: ReplyMessage | ReadyMessage): void => void process.send?.(message);
  process.on('message', (message: CommandMessage) => {
    const handler = handlers[message.cmd];
    void (async () => {
      try {
        if (handler === undefined) throw new Error(`unknown command ${message.cmd}`);
        send({ id: message.id, ok: true, value: (await handler(message.args as never)) ?? null });
      } catch (error) {
        send({ id: message.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
      }
    })();
  });
  process.on('disconnect', () => process.exit(0));
  send({ ready: value });
}

/** Memory after two full GCs, a turn apart (Buffers' memory is released once their wrappers are collected). */
export async function memoryAfterGc(): Promise<MemoryFigures> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('the child must run with --expose-gc');
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  const { heapUsed, external, arrayBuffers, rss } = process.memoryUsage();
  return { heapUsed, external, arrayBuffers, rss };
}

/** CPU time this process has used so far (user + system), µs. */
export function cpuMicros(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

/** A Nest logger that prints nothing and counts lines per level (a child's stderr stays clean). */
export function countingLogger(): {
  logger: Record<'log' | 'warn' | 'error' | 'fatal' | 'debug' | 'verbose', Handler>;
  figures(): LogFigures;
} {
  const counts: Record<string, number> = {};
  const last: string[] = [];
  const keep =
    (level: string) =>
    (message: unknown, ...rest: unknown[]): void => {
      counts[level] = (counts[level] ?? 0) + 1;
      if (level === 'warn' || level === 'error' || level === 'fatal') {
        last.push(
          `${level}: ${message instanceof Error ? message.message : String(message)}${rest.length > 1 ? ` ${String(rest[0])}` : ''}`,
        );
        if (last.length > 10) last.shift();
      }
    };
  return {
    logger: {
      log: keep('log'),
      warn: keep('warn'),
      error: keep('error'),
      fatal: keep('fatal'),
      debug: keep('debug'),
      verbose: keep('verbose'),
    },
    figures: () => ({ counts: { ...counts }, last: [...last] }),
  };
}
