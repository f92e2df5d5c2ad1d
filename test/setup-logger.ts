/**
 * Every suite logs through the collecting logger: tests provoke warnings and errors on purpose, and the test
 * output stays free of them (suites that care read `logLines`). Apps created with their own `logger` option
 * override it again for themselves.
 */
import { Logger } from '@nestjs/common';
import { collectingLogger } from './helpers/logs.js';

Logger.overrideLogger(collectingLogger);
