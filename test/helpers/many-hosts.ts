import type net from 'node:net';
import { Controller, Inject } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import type { ClientSmux, ServerSmuxOptions } from '../../lib/index.js';
import type { SmuxConnectionInfo } from '../../lib/index.js';
import { type AppHandle, startApp } from '../nest/helpers.js';

/** The provider token of a server's name (what `who` answers). */
export const SERVER_NAME = 'SERVER_NAME';

/** Calls running in the servers' handlers, by server name, and gates that hold `held` calls. */
export const running = new Map<string, number>();
/** ms a server (by name) takes to answer `who`; others answer after a turn of the event loop. */
export const delays = new Map<string, number>();
let releaseHeld: Array<() => void> = [];

/** Lets every held call return. */
export function releaseAll(): void {
  for (const release of releaseHeld.splice(0)) release();
}

@Controller()
export class WhoController {
  constructor(@Inject(SERVER_NAME) private readonly name: string) {}

  /** Answers with the server's name after a turn of the event loop, so calls stay in flight a little. */
  @MessagePattern('who')
  async who(): Promise<string> {
    const ms = delays.get(this.name);
    await new Promise((resolve) => (ms === undefined ? setImmediate(resolve) : setTimeout(resolve, ms)));
    return this.name;
  }

  /** Answers with the server's name once {@link releaseAll} is called; {@link running} counts it meanwhile. */
  @MessagePattern('held')
  async held(@Payload() _n: number): Promise<string> {
    running.set(this.name, (running.get(this.name) ?? 0) + 1);
    await new Promise<void>((resolve) => releaseHeld.push(resolve));
    running.set(this.name, (running.get(this.name) ?? 0) - 1);
    return this.name;
  }
}

/** Clears {@link running} and the gates (use in beforeEach). */
export function resetServers(): void {
  running.clear();
  delays.clear();
  releaseHeld = [];
}

/** A server on a loopback address, and its name. */
export interface NamedServer {
  readonly name: string;
  readonly host: string;
  readonly handle: AppHandle;
  readonly port: number;
}

/**
 * Starts a server named `a`, `b`, … on each of `hosts` (127.0.0.x), all on one port when `samePort` (the first
 * one's, which the others bind on their own addresses) — as replicas behind one DNS name are.
 */
export async function startServers(
  hosts: readonly string[],
  options: { samePort?: boolean; server?: (i: number) => ServerSmuxOptions } = {},
): Promise<NamedServer[]> {
  const servers: NamedServer[] = [];
  let port = 0;
  for (const [i, host] of hosts.entries()) {
    const name = String.fromCharCode(97 + i);
    const handle = await startApp({
      controllers: [WhoController],
      providers: [{ provide: SERVER_NAME, useValue: name }],
      server: { ...options.server?.(i), host, port: options.samePort === true ? port : 0 },
    });
    if (options.samePort === true) port = handle.port;
    servers.push({ name, host, handle, port: handle.port });
  }
  return servers;
}

/** Starts one more server on `host` and `port`, named `name`. */
export async function startServer(name: string, host: string, port: number): Promise<NamedServer> {
  const handle = await startApp({
    controllers: [WhoController],
    providers: [{ provide: SERVER_NAME, useValue: name }],
    server: { host, port },
  });
  return { name, host, handle, port: handle.port };
}

/**
 * The server dies as a killed process would, seen from the client: it stops accepting (a reconnect is refused) and
 * every connection drops at once, with whatever calls were running on it.
 */
export function kill(server: NamedServer): void {
  server.handle.server.unwrap<net.Server>().close();
  for (const session of server.handle.sessions) session.destroy();
}

/** The client's connection(s) to `server`. */
export function connectionsTo(client: ClientSmux, server: NamedServer): SmuxConnectionInfo[] {
  return client.connections.filter((c) => c.address === `${server.host}:${server.port}`);
}

/** Runs `total` tasks with at most `window` of them in flight (a bounded loop, no timers). */
export async function runWindow(total: number, window: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(window, total) }, worker));
}

/** How far each count is from an even share, as a fraction of that share (0.1: 10 % off). */
export function spread(counts: readonly number[]): number[] {
  const share = counts.reduce((a, b) => a + b, 0) / counts.length;
  return counts.map((count) => (count - share) / share);
}
