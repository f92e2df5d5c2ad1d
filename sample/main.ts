/**
 * `npm run sample`: a Nest microservice on ServerSmux and a Nest client app using ClientsModule with
 * ClientSmux, over real TCP on 127.0.0.1. Makes each kind of call, prints what came back, exits 0 — or 1 when a
 * result is not what it must be. Then the streams: a 64 MiB upload over a byte stream (SHA-256 checked, with a
 * progress bar), a conversation over a bidirectional stream, and a slow viewer of a real-time feed.
 */
import 'reflect-metadata';
import type { AddressInfo, Server } from 'node:net';
import { NestFactory } from '@nestjs/core';
import { ServerSmux } from '../lib/index.js';
import { ChatClient } from './client/chat.client.js';
import { ClientModule } from './client/client.module.js';
import { FilesClient } from './client/files.client.js';
import { FramesClient } from './client/frames.client.js';
import { MathClient } from './client/math.client.js';
import { AppModule } from './server/app.module.js';

/** The upload's size: 64 MiB by default (SAMPLE_UPLOAD_MIB=… to try others). */
const UPLOAD_MIB = Math.max(1, Math.floor(Number(process.env['SAMPLE_UPLOAD_MIB'])) || 64);

async function main(): Promise<void> {
  // The microservice: every call arrives on its own smux stream.
  const server = new ServerSmux({ host: '127.0.0.1', port: 0 });
  const microservice = await NestFactory.createMicroservice(AppModule, { strategy: server, logger: ['error', 'warn'] });
  await microservice.listen();
  const { port } = server.unwrap<Server>().address() as AddressInfo;

  // The client app: ClientsModule.register({ customClass: ClientSmux }).
  const clientApp = await NestFactory.createApplicationContext(ClientModule.forPort(port), { logger: ['error', 'warn'] });
  const math = clientApp.get(MathClient);
  const failed: string[] = [];
  const check = (ok: boolean, what: string): void => {
    if (!ok) failed.push(what);
  };

  const sum = await math.sum([1, 2, 3, 4]);
  console.log(`math.sum [1,2,3,4]        → ${sum}`);
  console.log(`math.ticks 3              → ${JSON.stringify(await math.ticks(3))}`);
  await math.notify(sum);
  console.log(`math.computed (event)     → sent (emit resolves once it is on the wire)`);
  console.log(`math.whoami (key ok)      → ${JSON.stringify(await math.whoami('sample-key'))}`);
  const refused = await math.whoami('wrong').catch((error: unknown) => error);
  console.log(`math.whoami (wrong key)   → error ${JSON.stringify(refused)}`);
  const [a, b] = await Promise.all([math.sum([10, 20]), math.sum([30, 40])]);
  console.log(`two calls at once         → ${a}, ${b} (one connection, two streams)`);
  check(sum === 10 && a === 30 && b === 70, 'math.sum');

  // A byte stream: client.openDuplex() ↔ ctx.getDuplex().
  const size = UPLOAD_MIB * 1024 * 1024;
  const upload = await clientApp.get(FilesClient).upload('camera.raw', size);
  const matches = upload.receipt.sha256 === upload.sha256 && upload.receipt.bytes === size;
  const rate = (UPLOAD_MIB / (upload.ms / 1000)).toFixed(0);
  const label = `files.upload ${UPLOAD_MIB} MiB`.padEnd(26);
  console.log(`${label}→ ${upload.receipt.bytes} bytes in ${upload.ms.toFixed(0)} ms (${rate} MiB/s)`);
  console.log(`  sha256 ${upload.receipt.sha256} ${matches ? '(the server’s, same as ours)' : `≠ ours ${upload.sha256}`}`);
  check(matches, 'files.upload: the server’s SHA-256 or size differs from ours');

  // A bidirectional stream: a stream of messages in, a stream of answers out, on one call.
  const lines = ['hi there', 'can you hear me over one stream?', 'every message gets its own answer', 'bye'];
  const chat = await clientApp.get(ChatClient).talk(lines, (line) => console.log(line));
  console.log(
    `chat.talk                 → ${chat.replies.length} answers to ${chat.sent} messages, ${chat.whileSending} while ada was still sending`,
  );
  const inOrder = chat.replies.every((reply, i) => reply.re === i + 1);
  check(chat.replies.length === lines.length && inOrder && chat.whileSending === lines.length, 'chat.talk');

  // A real-time feed: frames made at 1000 fps, watched by a viewer that needs 10 ms to render one.
  const frames = clientApp.get(FramesClient);
  const seen = await frames.watch({ fps: 1000, frameBytes: 32 * 1024 }, { count: 40, maxMs: 3_000, renderMs: 10 });
  for (const [i, frame] of seen.entries()) {
    if (i % 8 !== 0 && i !== seen.length - 1) continue; // a few of them
    console.log(
      `  frame seq ${String(frame.seq).padStart(4)}  latency ${frame.latencyMs.toFixed(1).padStart(5)} ms  dropped ${frame.dropped}`,
    );
  }
  const last = seen.at(-1) ?? { seq: 0, dropped: 0 };
  const worst = Math.max(0, ...seen.map((frame) => frame.latencyMs)).toFixed(0);
  console.log(
    `frames.live (feed)        → ${seen.length} frames seen up to seq ${last.seq}: ${last.dropped} dropped by the server, latency ≤ ${worst} ms`,
  );
  // The gaps in seq are exactly the drops the server counted; a viewer this slow must have missed some.
  const gapsAreDrops = seen.every((frame, i) => frame.seq > (seen[i - 1]?.seq ?? 0) && frame.dropped === frame.seq - 1 - i);
  check(seen.length > 0 && gapsAreDrops && last.dropped > 0, 'frames.live');

  await clientApp.close();
  await microservice.close();
  if (failed.length > 0) {
    console.log(`FAILED: ${failed.join('; ')}`);
    process.exitCode = 1;
  }
}

await main();
