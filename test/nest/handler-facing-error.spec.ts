/** The transport's errors as handler code receives them: SmuxErrors that Nest's exception filters do not log. */
import { inspect } from 'node:util';
import { describe, expect, test } from '@jest/globals';
import { IntrinsicException } from '@nestjs/common';
import { isSmuxError, SmuxError } from '../../lib/index.js';
import { handlerFacing } from '../../lib/nest/handler-facing-error.js';

describe('handlerFacing', () => {
  const cause = new Error('underneath');
  const reason = new SmuxError('ERR_SMUX_LIMIT', 'over the limit', { cause, retryable: true });

  test('keeps what the reason says: code, message, retryable, cause, stack; a SmuxError by instanceof and isSmuxError', () => {
    const facing = handlerFacing(reason);
    expect(facing).not.toBe(reason);
    expect(facing).toBeInstanceOf(SmuxError);
    expect(facing).toBeInstanceOf(Error);
    expect(isSmuxError(facing, 'ERR_SMUX_LIMIT')).toBe(true);
    expect({ name: facing.name, code: facing.code, message: facing.message, retryable: facing.retryable }).toEqual({
      name: 'SmuxError',
      code: 'ERR_SMUX_LIMIT',
      message: 'over the limit',
      retryable: true,
    });
    expect(facing.cause).toBe(cause);
    expect(facing.stack).toBe(reason.stack);
    expect(String(facing)).toBe('SmuxError: over the limit');
    expect(inspect(facing)).toMatch(/^SmuxError: over the limit\n/); // named as the SmuxError it stands for (not its class)
  });

  test("is Nest's IntrinsicException (its filters do not log it); made once: a handler-facing error is returned as it is", () => {
    const facing = handlerFacing(reason);
    expect(facing).toBeInstanceOf(IntrinsicException);
    expect(reason).not.toBeInstanceOf(IntrinsicException);
    expect(handlerFacing(facing)).toBe(facing);
    expect(handlerFacing(new SmuxError('ERR_SMUX_CANCELLED', 'gone')).cause).toBeUndefined();
  });
});
