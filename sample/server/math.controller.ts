import { Controller, UseGuards } from '@nestjs/common';
import { Ctx, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { interval, map, type Observable, take } from 'rxjs';
import type { SmuxContext } from '../../lib/index.js';
import { ApiKeyGuard } from './api-key.guard.js';

@Controller()
export class MathController {
  /** Request/response: one stream per call. */
  @MessagePattern('math.sum')
  sum(@Payload() numbers: number[]): number {
    return numbers.reduce((a, b) => a + b, 0);
  }

  /** An Observable reply: every value reaches the caller in order, then completion. */
  @MessagePattern('math.ticks')
  ticks(@Payload() count: number): Observable<{ tick: number }> {
    return interval(50).pipe(
      take(count),
      map((tick) => ({ tick })),
    );
  }

  /** An event: no reply; delivered at most once. */
  @EventPattern('math.computed')
  computed(@Payload() event: { result: number }): void {
    console.log(`  (server) event math.computed received: result ${event.result}`);
  }

  /** A guarded handler reading the call's headers. */
  @UseGuards(ApiKeyGuard)
  @MessagePattern('math.whoami')
  whoami(@Ctx() ctx: SmuxContext): { pattern: string; user: string | undefined } {
    return { pattern: ctx.getPattern(), user: ctx.getHeaders()['x-user'] };
  }
}
