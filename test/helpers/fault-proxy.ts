import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';

/*
 * A TCP proxy on 127.0.0.1 that breaks the connections it carries on purpose, at seeded random points: it cuts
 * them (FIN), resets them (RST), stalls them (nothing moves either way for a while, then everything held moves
 * on), delays them (latency on every chunk from then on) or silences them for good (a half-open path: nothing
 * is forwarded and nothing is closed). A fault strikes after a random number of bytes has crossed the link, so
 * it may fall in the middle of a frame or a message; the chunk it falls in is split there.
 *
 * Also here: what a fault run needs from the process — real GC for heap figures, and the host process's
 * 'uncaughtException' / 'unhandledRejection' (Jest gives a test a copy of `process` whose listeners never fire).
 */

/** A seeded PRNG (mulberry32): the same seed draws the same faults at the same byte counts. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What the proxy can do to a link. */
export type FaultKind = 'cut' | 'reset' | 'stall' | 'longStall' | 'delay' | 'blackhole';

/** How faults are drawn for each link. */
export interface FaultPlan {
  /** Relative weights of the fault kinds (a missing kind is never drawn). */
  readonly weights: Partial<Record<FaultKind, number>>;
  /** Bytes (both directions together) a link carries before its next fault, drawn uniformly in [min, max]. */
  readonly bytesBetweenFaults: readonly [number, number];
  /**
   * The chance that a new link's first fault strikes within its first `earlyFaultBytes` bytes — while the client
   * connects and says hello — instead of after `bytesBetweenFaults`.
   */
  readonly earlyFaultChance?: number;
  readonly earlyFaultBytes?: readonly [number, number];
  /** How long a `stall` holds the link, ms. */
  readonly stallMs: readonly [number, number];
  /** How long a `longStall` holds the link, ms (make it longer than the calls' deadline). */
  readonly longStallMs: readonly [number, number];
  /** Latency a `delay` adds to every chunk from then on, ms. */
  readonly delayMs: readonly [number, number];
  /** At most this many faults of a kind over the proxy's life (a long stall or a silence costs seconds). */
  readonly maxFaults?: Partial<Record<FaultKind, number>>;
}

/** One fault the proxy injected. */
export interface FaultRecord {
  readonly link: number;
  readonly kind: FaultKind;
  /** Bytes the link had carried when it struck. */
  readonly atByte: number;
  /** The direction whose chunk it struck in: `up` (client → server) or `down`. */
  readonly direction: 'up' | 'down';
  /** How long, for stalls and delays (ms). */
  readonly ms?: number;
}

/** What a proxy did. */
export interface FaultStats {
  connections: number;
  bytesUp: number;
  bytesDown: number;
  faults: Record<FaultKind, number>;
}

const PAUSED_BY_STALL = 1;
const PAUSED_BY_BACKPRESSURE = 2;
const PAUSED_BY_QUEUE = 4;
/** Delayed bytes held per direction before the source is paused (memory stays bounded under latency). */
const MAX_QUEUED = 1 << 20;

/**
 * The proxy: `new` connections to {@link FaultProxy.port} are forwarded to `target`; each link draws faults from
 * the plan (none with a `null` plan). Every socket and timer it makes is released by {@link close}.
 */
export class FaultProxy {
  readonly stats: FaultStats = {
    connections: 0,
    bytesUp: 0,
    bytesDown: 0,
    faults: { cut: 0, reset: 0, stall: 0, longStall: 0, delay: 0, blackhole: 0 },
  };
  /** When bytes were last handed on in each direction (`performance.now()`), e.g. the last frame a peer got. */
  readonly lastForwardAt = { up: 0, down: 0 };
  /** The most recent faults (the last 200), for failure messages. */
  readonly recent: FaultRecord[] = [];
  readonly #server: net.Server;
  readonly #target: number;
  readonly #random: () => number;
  readonly #links = new Set<Link>();
  #plan: FaultPlan | null;
  #silent = false;

  /** Starts a proxy on 127.0.0.1 (an ephemeral port) in front of 127.0.0.1:`target`. */
  static async start(target: number, options: { seed: number; plan: FaultPlan | null }): Promise<FaultProxy> {
    const proxy = new FaultProxy(target, options.seed, options.plan);
    await new Promise<void>((resolve, reject) => proxy.#server.once('error', reject).listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  private constructor(target: number, seed: number, plan: FaultPlan | null) {
    this.#target = target;
    this.#random = prng(seed);
    this.#plan = plan;
    this.#server = net.createServer({ allowHalfOpen: true }, (socket) => this.#accept(socket));
  }

  /** The port clients connect to. */
  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** Links open now. */
  get openLinks(): number {
    return this.#links.size;
  }

  /** Faults injected so far. */
  get faultCount(): number {
    return Object.values(this.stats.faults).reduce((a, b) => a + b, 0);
  }

  /** A draw in [0, 1) from the proxy's seeded PRNG. */
  random(): number {
    return this.#random();
  }

  /** Starts drawing faults from `plan`, on open links too. */
  startFaults(plan: FaultPlan): void {
    this.#plan = plan;
    for (const link of this.#links) link.faultAt ??= this.nextFaultAt(link.carried);
  }

  /** Stops drawing faults: links that are stalled or delayed finish that fault, then forward plainly. */
  calm(): void {
    this.#plan = null;
    for (const link of this.#links) link.faultAt = null;
  }

  /**
   * Every open link stops forwarding both ways without closing anything (a half-open, dead path): bytes are read
   * and dropped. With `andNewLinks`, links opened later are silent from the start too, until {@link heal}.
   */
  silence(andNewLinks = false): void {
    for (const link of this.#links) link.silence();
    this.#silent = andNewLinks;
  }

  /** New links forward again (silenced links stay silent: those connections are dead). */
  heal(): void {
    this.#silent = false;
  }

  /** Stops listening; every link is destroyed and every timer cleared. Resolves once the listener is closed. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const link of [...this.#links]) link.destroy();
    await closed;
  }

  /** The next fault of a link: its kind, or null for none (no plan, or nothing drawn). */
  drawFault(): FaultKind | null {
    const plan = this.#plan;
    if (plan === null) return null;
    const max = plan.maxFaults ?? {};
    const entries = (Object.entries(plan.weights) as Array<[FaultKind, number]>)
      .filter(([, weight]) => weight > 0)
      .filter(([kind]) => this.stats.faults[kind] < (max[kind] ?? Infinity));
    const total = entries.reduce((sum, [, w]) => sum + w, 0);
    if (total === 0) return null;
    let pick = this.#random() * total;
    for (const [kind, weight] of entries) {
      pick -= weight;
      if (pick < 0) return kind;
    }
    return entries.at(-1)![0];
  }

  /** Where (in bytes carried) a link's next fault strikes, or null without a plan. */
  nextFaultAt(carried: number): number | null {
    const plan = this.#plan;
    if (plan === null) return null;
    return carried + this.#between(plan.bytesBetweenFaults);
  }

  /** Where a new link's first fault strikes: early (while connecting) by chance, else as any other. */
  firstFaultAt(): number | null {
    const plan = this.#plan;
    if (plan === null) return null;
    if (plan.earlyFaultChance !== undefined && this.#random() < plan.earlyFaultChance) {
      return this.#between(plan.earlyFaultBytes ?? [0, 200]);
    }
    return this.nextFaultAt(0);
  }

  /** A duration for a fault, ms. */
  durationOf(kind: 'stall' | 'longStall' | 'delay'): number {
    const plan = this.#plan;
    if (plan === null) return 0;
    return this.#between(kind === 'stall' ? plan.stallMs : kind === 'longStall' ? plan.longStallMs : plan.delayMs);
  }

  /** Records a fault. */
  record(fault: FaultRecord): void {
    this.stats.faults[fault.kind]++;
    this.recent.push(fault);
    if (this.recent.length > 200) this.recent.shift();
  }

  /** A link ended. */
  forget(link: Link): void {
    this.#links.delete(link);
  }

  #between([min, max]: readonly [number, number]): number {
    return Math.round(min + this.#random() * (max - min));
  }

  #accept(client: net.Socket): void {
    this.stats.connections++;
    const server = net.connect({ host: '127.0.0.1', port: this.#target, allowHalfOpen: true });
    const link = new Link(this, this.stats.connections, client, server);
    this.#links.add(link);
    if (this.#silent) link.silence();
  }
}

/** One proxied connection: two pipes (up: client → server, down: server → client) and the faults it draws. */
class Link {
  readonly id: number;
  readonly up: Pipe;
  readonly down: Pipe;
  /** Bytes carried both ways. */
  carried = 0;
  /** Where the next fault strikes (bytes carried), or null. */
  faultAt: number | null;
  readonly #proxy: FaultProxy;
  readonly #timers = new Set<NodeJS.Timeout>();
  #destroyed = false;

  constructor(proxy: FaultProxy, id: number, client: net.Socket, server: net.Socket) {
    this.#proxy = proxy;
    this.id = id;
    this.up = new Pipe(this, client, server, 'up', (n) => {
      proxy.stats.bytesUp += n;
      proxy.lastForwardAt.up = performance.now();
    });
    this.down = new Pipe(this, server, client, 'down', (n) => {
      proxy.stats.bytesDown += n;
      proxy.lastForwardAt.down = performance.now();
    });
    this.faultAt = proxy.firstFaultAt();
  }

  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** A chunk arrived on `pipe`: forward it, splitting it where a fault strikes. */
  carry(pipe: Pipe, chunk: Buffer): void {
    while (chunk.length > 0 && !this.#destroyed) {
      const faultAt = this.faultAt;
      if (faultAt === null || this.carried + chunk.length < faultAt) {
        this.carried += chunk.length;
        pipe.forward(chunk);
        return;
      }
      const head = chunk.subarray(0, Math.max(0, faultAt - this.carried));
      this.carried += head.length;
      if (head.length > 0) pipe.forward(head);
      chunk = chunk.subarray(head.length);
      this.faultAt = null;
      const kind = this.#proxy.drawFault();
      if (kind === null) {
        this.faultAt = this.#proxy.nextFaultAt(this.carried);
        continue;
      }
      this.#strike(kind, pipe);
      if (kind === 'stall' || kind === 'longStall') {
        if (chunk.length > 0) pipe.hold(chunk); // moves on when the stall ends
        return;
      }
      if (kind !== 'delay') return; // cut, reset, blackhole: the rest of the chunk is lost
    }
  }

  #strike(kind: FaultKind, pipe: Pipe): void {
    const base = { link: this.id, atByte: this.carried, direction: pipe.direction } as const;
    switch (kind) {
      case 'cut':
        this.#proxy.record({ ...base, kind });
        this.destroy();
        return;
      case 'reset':
        this.#proxy.record({ ...base, kind });
        this.destroy(true);
        return;
      case 'blackhole':
        this.#proxy.record({ ...base, kind });
        this.silence();
        return;
      case 'delay': {
        const ms = this.#proxy.durationOf('delay');
        this.#proxy.record({ ...base, kind, ms });
        this.up.delay = Math.max(this.up.delay, ms);
        this.down.delay = Math.max(this.down.delay, ms);
        this.faultAt = this.#proxy.nextFaultAt(this.carried);
        return;
      }
      case 'stall':
      case 'longStall': {
        const ms = this.#proxy.durationOf(kind);
        this.#proxy.record({ ...base, kind, ms });
        this.up.stall();
        this.down.stall();
        this.timer(() => {
          this.up.unstall();
          this.down.unstall();
          this.faultAt = this.#proxy.nextFaultAt(this.carried);
        }, ms);
        return;
      }
    }
  }

  /** Nothing is forwarded any more, either way, and nothing is closed. */
  silence(): void {
    this.up.silence();
    this.down.silence();
    this.faultAt = null;
  }

  /** A timer that dies with the link. */
  timer(run: () => void, ms: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.#destroyed) run();
    }, ms);
    this.#timers.add(timer);
  }

  /** Closes both sides: a FIN (a cut), or with `reset` an RST. */
  destroy(reset = false): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.up.close(reset);
    this.down.close(reset);
    this.#proxy.forget(this);
  }
}

/** One direction of a link. */
class Pipe {
  readonly direction: 'up' | 'down';
  /** Latency added to each chunk, ms. */
  delay = 0;
  readonly #link: Link;
  readonly #from: net.Socket;
  readonly #to: net.Socket;
  readonly #count: (bytes: number) => void;
  #paused = 0;
  #silent = false;
  #held: Buffer[] = []; // what arrived while stalled
  #queue: Array<{ due: number; data: Buffer }> = []; // delayed chunks, in order
  #queued = 0;
  #queueTimer: NodeJS.Timeout | null = null;
  #ended = false; // `from` sent FIN: `to` gets it once everything before it is delivered

  constructor(link: Link, from: net.Socket, to: net.Socket, direction: 'up' | 'down', count: (bytes: number) => void) {
    this.#link = link;
    this.#from = from;
    this.#to = to;
    this.direction = direction;
    this.#count = count;
    from.on('data', (chunk: Buffer) => (this.#silent ? undefined : link.carry(this, chunk)));
    from.on('end', () => {
      this.#ended = true;
      this.#maybeEnd();
    });
    from.on('error', () => link.destroy());
    from.on('close', () => link.destroy());
    to.on('drain', () => this.#resume(PAUSED_BY_BACKPRESSURE));
  }

  /** Sends a chunk on (after the pipe's latency). */
  forward(chunk: Buffer): void {
    if (this.#silent) return;
    if (this.#paused & PAUSED_BY_STALL) return this.hold(chunk);
    if (this.delay === 0 && this.#queue.length === 0) return this.#write(chunk);
    this.#queue.push({ due: Date.now() + this.delay, data: chunk });
    this.#queued += chunk.length;
    if (this.#queued > MAX_QUEUED) this.#pause(PAUSED_BY_QUEUE);
    this.#schedule();
  }

  /** Keeps a chunk until the stall ends. */
  hold(chunk: Buffer): void {
    this.#held.push(chunk);
  }

  stall(): void {
    this.#pause(PAUSED_BY_STALL);
    if (this.#queueTimer !== null) clearTimeout(this.#queueTimer);
    this.#queueTimer = null;
  }

  unstall(): void {
    if ((this.#paused & PAUSED_BY_STALL) === 0) return;
    this.#paused &= ~PAUSED_BY_STALL;
    const held = this.#held;
    this.#held = [];
    for (const chunk of held) this.forward(chunk);
    this.#schedule();
    this.#resume(0);
    this.#maybeEnd();
  }

  /** Drops everything from now on and keeps reading, so the sender never notices. */
  silence(): void {
    this.#silent = true;
    this.#held = [];
    this.#queue = [];
    this.#queued = 0;
    if (this.#queueTimer !== null) clearTimeout(this.#queueTimer);
    this.#queueTimer = null;
    this.#paused = 0;
    this.#from.resume();
  }

  close(reset: boolean): void {
    if (this.#queueTimer !== null) clearTimeout(this.#queueTimer);
    this.#queueTimer = null;
    this.#queue = [];
    this.#held = [];
    for (const socket of [this.#from, this.#to]) {
      socket.on('error', () => undefined);
      if (reset && !socket.destroyed && typeof socket.resetAndDestroy === 'function' && socket.readyState !== 'opening') {
        socket.resetAndDestroy();
      } else socket.destroy();
    }
  }

  #write(chunk: Buffer): void {
    if (this.#to.destroyed) return;
    this.#count(chunk.length);
    if (!this.#to.write(chunk)) this.#pause(PAUSED_BY_BACKPRESSURE);
  }

  #schedule(): void {
    if (this.#queueTimer !== null || this.#queue.length === 0 || this.#paused & PAUSED_BY_STALL || this.#link.destroyed) return;
    const wait = Math.max(0, this.#queue[0].due - Date.now());
    this.#queueTimer = setTimeout(() => {
      this.#queueTimer = null;
      const now = Date.now();
      while (this.#queue.length > 0 && this.#queue[0].due <= now && !(this.#paused & PAUSED_BY_STALL)) {
        const { data } = this.#queue.shift()!;
        this.#queued -= data.length;
        this.#write(data);
      }
      if (this.#queued <= MAX_QUEUED / 2) this.#resume(PAUSED_BY_QUEUE);
      this.#schedule();
      this.#maybeEnd();
    }, wait);
  }

  #maybeEnd(): void {
    if (!this.#ended || this.#silent || this.#paused & PAUSED_BY_STALL || this.#queue.length > 0 || this.#held.length > 0) return;
    if (!this.#to.destroyed && !this.#to.writableEnded) this.#to.end();
  }

  #pause(reason: number): void {
    if (this.#paused === 0) this.#from.pause();
    this.#paused |= reason;
  }

  #resume(reason: number): void {
    this.#paused &= ~reason;
    if (this.#paused === 0 && !this.#from.destroyed) this.#from.resume();
  }
}

// ── the process around a fault run ─────────────────────────────────────────────────────────────────────────

/** The real `process` (Jest hands each test file a copy, whose 'uncaughtException' listeners never fire). */
export function hostProcess(): NodeJS.Process {
  return vm.runInThisContext('process') as NodeJS.Process;
}

let gcFunction: (() => void) | null | undefined;

/** A full garbage collection, if one can be had (`--expose-gc`, or the flag set now in a fresh context). */
export function collectGarbage(): boolean {
  if (gcFunction === undefined) {
    gcFunction = (globalThis as { gc?: () => void }).gc ?? null;
    if (gcFunction === null) {
      try {
        v8.setFlagsFromString('--expose-gc');
        gcFunction = vm.runInNewContext('gc') as () => void;
      } catch {
        gcFunction = null;
      }
    }
  }
  if (gcFunction === null) return false;
  gcFunction();
  return true;
}

/** `heapUsed` after a full GC when one is available (twice, and a turn of the loop for finalizers between). */
export async function settledHeap(): Promise<{ heapUsed: number; gc: boolean }> {
  const gc = collectGarbage();
  await new Promise((resolve) => setImmediate(resolve));
  collectGarbage();
  return { heapUsed: process.memoryUsage().heapUsed, gc };
}

/**
 * Records every uncaught exception and unhandled rejection of the real process until `stop()`, which returns
 * them (Jest fails the test on them too; this makes the check explicit and names them).
 */
export function watchProcessErrors(): { readonly errors: unknown[]; stop(): unknown[] } {
  const host = hostProcess();
  const errors: unknown[] = [];
  const onError = (error: unknown): void => void errors.push(error);
  host.on('uncaughtException', onError);
  host.on('unhandledRejection', onError);
  return {
    errors,
    stop() {
      host.off('uncaughtException', onError);
      host.off('unhandledRejection', onError);
      return errors;
    },
  };
}
