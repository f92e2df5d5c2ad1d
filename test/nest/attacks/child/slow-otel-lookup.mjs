// `node --import <this file> …`: resolving `@opentelemetry/api` takes 400 ms, as it can behind the OpenTelemetry
// SDK's own loader hooks (NodeSDK under `--import`: 120 – 220 ms in an ESM app, found by a new-user trial).
import { register } from 'node:module';

register(
  'data:text/javascript,' +
    encodeURIComponent(`
export async function resolve(specifier, context, next) {
  if (specifier === '@opentelemetry/api') await new Promise((resolve) => setTimeout(resolve, 400));
  return next(specifier, context);
}`),
);
