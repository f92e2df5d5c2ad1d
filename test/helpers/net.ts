import net from 'node:net';
import { Session, type SmuxConfig } from '../../lib/smux/index.js';

/** Two connected real TCP sockets on 127.0.0.1 (an ephemeral port); the listener is closed again. */
export async function tcpPair(): Promise<{ client: net.Socket; server: net.Socket }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const { port } = listener.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
  const server = await accepted;
  listener.close();
  return { client, server };
}

/** A client and a server session over a real TCP pair. */
export async function sessionPair(
  clientConfig: Partial<SmuxConfig> = {},
  serverConfig: Partial<SmuxConfig> = clientConfig,
): Promise<{ client: Session; server: Session; clientSocket: net.Socket; serverSocket: net.Socket }> {
  const { client: clientSocket, server: serverSocket } = await tcpPair();
  return {
    client: Session.client(clientSocket, clientConfig),
    server: Session.server(serverSocket, serverConfig),
    clientSocket,
    serverSocket,
  };
}

/** Resolves with the session's close error (or undefined) once it emits `'close'`. */
export function closed(session: Session): Promise<unknown> {
  return new Promise((resolve) => session.once('close', resolve));
}

/** Reads a readable to its end and returns the bytes. */
export async function readAll(readable: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of readable) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Waits until `predicate()` is true, checking on every event-loop turn; fails after `ms`. */
export async function until(predicate: () => boolean, ms = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** A port on 127.0.0.1 where nothing listens (it was free a moment ago). */
export async function closedPort(): Promise<number> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const { port } = listener.address() as net.AddressInfo;
  await new Promise((resolve) => listener.close(resolve));
  return port;
}
