import { once } from 'node:events';
import net from 'node:net';

/**
 * A port that was free a moment ago on 127.0.0.1, for servers that cannot report the port they bound (Nest's gRPC
 * server) or are started by another program (the brokers).
 */
export async function freePort(): Promise<number> {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}
