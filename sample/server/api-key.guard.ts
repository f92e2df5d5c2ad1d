import { type CanActivate, type ExecutionContext, Injectable } from '@nestjs/common';
import { RpcException } from '@nestjs/microservices';
import type { SmuxContext } from '../../lib/index.js';

/** Lets a call through only with the `x-api-key` header the sample expects. */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const ctx = context.switchToRpc().getContext<SmuxContext>();
    if (ctx.getHeaders()['x-api-key'] === 'sample-key') return true;
    throw new RpcException({ code: 'E_FORBIDDEN', message: 'a valid x-api-key header is required' });
  }
}
