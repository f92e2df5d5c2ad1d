/**
 * Pipes run as for any transport. Nest's ValidationPipe throws an HTTP BadRequestException, which a microservice
 * reports as "Internal server error"; the README's recipe (an exceptionFactory that throws an RpcException)
 * gives callers the validation errors. Both behaviours are pinned here.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Controller, UsePipes, ValidationPipe } from '@nestjs/common';
import { MessagePattern, Payload, RpcException } from '@nestjs/microservices';
import { IsEmail, IsString, MinLength } from 'class-validator';
import { firstValueFrom } from 'rxjs';
import type { ClientSmux } from '../../lib/index.js';
import { closeAll, startApp } from './helpers.js';

class CreateUserDto {
  @IsEmail() email!: string;
  @IsString() @MinLength(8) password!: string;
}

const rpcValidation = new ValidationPipe({
  whitelist: true,
  exceptionFactory: (errors) =>
    new RpcException({ code: 'E_VALIDATION', errors: errors.map((e) => ({ property: e.property, constraints: e.constraints })) }),
});

@Controller()
class UsersController {
  @UsePipes(rpcValidation)
  @MessagePattern('users.create')
  create(@Payload() user: CreateUserDto): { email: string; keys: string[] } {
    return { email: user.email, keys: Object.keys(user) };
  }

  @UsePipes(new ValidationPipe())
  @MessagePattern('users.create-plain')
  createPlain(@Payload() user: CreateUserDto): { email: string } {
    return { email: user.email };
  }
}

describe('ValidationPipe', () => {
  let client: ClientSmux;
  beforeAll(async () => {
    client = (await startApp({ controllers: [UsersController] })).client();
  });
  afterAll(closeAll);

  test('with an exceptionFactory throwing RpcException, the caller receives the validation errors', async () => {
    const error = await firstValueFrom(client.send('users.create', { email: 'nope', password: 'short' })).catch((e: unknown) => e);
    expect(error).toEqual({
      code: 'E_VALIDATION',
      errors: [
        { property: 'email', constraints: { isEmail: 'email must be an email' } },
        { property: 'password', constraints: { minLength: 'password must be longer than or equal to 8 characters' } },
      ],
    });
  });

  test('a valid payload passes, transformed and whitelisted', async () => {
    const reply = await firstValueFrom(client.send('users.create', { email: 'ada@example.com', password: 'long enough', admin: true }));
    expect(reply).toEqual({ email: 'ada@example.com', keys: ['email', 'password'] });
  });

  test('without the recipe the caller gets only "Internal server error" (why the README shows it)', async () => {
    const error = await firstValueFrom(client.send('users.create-plain', { email: 'nope' })).catch((e: unknown) => e);
    expect(error).toEqual({ status: 'error', message: 'Internal server error' });
  });
});
