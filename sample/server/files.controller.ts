import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern, Payload, RpcException } from '@nestjs/microservices';
import type { SmuxContext } from '../../lib/index.js';
import type { UploadReceipt, UploadRequest } from '../messages.js';

@Controller()
export class FilesController {
  /**
   * A byte stream (the caller used `client.openDuplex()`): reads the upload from `ctx.getDuplex()`, hashes it as
   * it arrives (nothing is held: the stream's window paces the caller), then writes the receipt back on the same
   * Duplex and ends it. The handler's return value does not reach the caller of a byte stream; the Duplex does.
   */
  @MessagePattern('files.upload')
  async upload(@Payload() request: UploadRequest, @Ctx() ctx: SmuxContext): Promise<void> {
    const duplex = ctx.getDuplex();
    const hash = createHash('sha256');
    let bytes = 0;
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        bytes += chunk.length;
        callback();
      },
    });
    // pipeline() into a Writable rather than `for await (… of duplex)`: Node's async iterator destroys the stream
    // when the loop ends, and the receipt could then not be written back.
    await pipeline(duplex, sink);
    if (bytes !== request.size) throw new RpcException({ code: 'E_SHORT_UPLOAD', expected: request.size, got: bytes });
    const receipt: UploadReceipt = { name: request.name, bytes, sha256: hash.digest('hex') };
    duplex.end(JSON.stringify(receipt));
  }
}
