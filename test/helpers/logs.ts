import { Logger, type LoggerService } from '@nestjs/common';

/** What Nest logged as errors (the apps of these suites log through {@link collectingLogger}). */
export const loggedErrors: unknown[][] = [];

/** One line Nest logged: its level, message and context (`ServerSmux`, `ClientSmux`, …). */
export interface LogLine {
  level: 'log' | 'warn' | 'error' | 'fatal' | 'debug' | 'verbose';
  message: string;
  context: string | undefined;
}

/** Every line logged through {@link collectingLogger}, at every level (clear it in a test that reads it). */
export const logLines: LogLine[] = [];

function keep(level: LogLine['level']) {
  return (message: unknown, ...rest: unknown[]): void => {
    const context = typeof rest.at(-1) === 'string' ? (rest.at(-1) as string) : undefined;
    logLines.push({ level, message: message instanceof Error ? message.message : String(message), context });
    if (level === 'error' || level === 'fatal') loggedErrors.push([message, ...rest]);
  };
}

/**
 * A Nest logger that keeps every line in {@link logLines} (errors also in {@link loggedErrors}) and prints
 * nothing: the suites provoke errors on purpose, and the test output stays free of them.
 */
export const collectingLogger: LoggerService = {
  log: keep('log'),
  warn: keep('warn'),
  debug: keep('debug'),
  verbose: keep('verbose'),
  fatal: keep('fatal'),
  error: keep('error'),
};

/** Routes Nest's static logger (used by clients made outside an app) through {@link collectingLogger}. */
export function collectLogs(): void {
  Logger.overrideLogger(collectingLogger);
}
