import { Controller } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { smuxFeed } from '../../lib/index.js';
import type { LiveRequest } from '../messages.js';

/** The longest a feed runs, whoever watches it: the sample's callers leave after a second or two. */
const MAX_SECONDS = 10;

@Controller()
export class FramesController {
  /**
   * A real-time feed: `smuxFeed()` stamps each frame with a sequence number and the server's time, and when the
   * caller reads more slowly than frames are made, the oldest unsent ones are dropped (at most `bufferSize` wait)
   * — the camera is never slowed down and nothing piles up. The caller sees the drops as gaps in `seq`.
   */
  @MessagePattern('frames.live', smuxFeed({ bufferSize: 4 }))
  live(@Payload() request: LiveRequest): Observable<Buffer> {
    const fps = Math.min(Math.max(request.fps, 1), 2_000);
    const total = fps * MAX_SECONDS;
    return new Observable<Buffer>((subscriber) => {
      const started = performance.now();
      let made = 0;
      // Frames are due by the clock, not by ticks: when the thread was busy (in this sample, with the caller's
      // slow rendering), the frames captured meanwhile come out together on the next tick.
      const timer = setInterval(() => {
        const due = Math.min(total, Math.floor(((performance.now() - started) * fps) / 1000));
        while (made < due) subscriber.next(frame(++made, request.frameBytes));
        if (made >= total) subscriber.complete();
      }, 1);
      return () => clearInterval(timer); // the caller left (unsubscribed): the camera stops
    });
  }
}

/** A frame: `bytes` of pixels, numbered in its first four (a fresh Buffer each: a waiting frame must not change). */
function frame(n: number, bytes: number): Buffer {
  const pixels = Buffer.alloc(Math.max(bytes, 4), n & 0xff);
  pixels.writeUInt32BE(n, 0);
  return pixels;
}
