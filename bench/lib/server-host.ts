import { serveCommands } from './process.js';

/** How often the server samples its RSS for the peak figure. */
const SAMPLE_MS = 50;

/**
 * The common part of every Node benchmark server: prints `LISTENING <port>`, samples
 * `process.memoryUsage().rss` every 50 ms, and answers `PEAK` on stdin with the high-water mark since the
 * previous `PEAK` (then starts over from the current RSS). Exits when stdin ends.
 */
export function hostServer(port: number): void {
  let peak = process.memoryUsage.rss();
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), SAMPLE_MS);
  sampler.unref();
  serveCommands((line) => {
    if (line !== 'PEAK') throw new Error(`unknown command: ${line}`);
    const rss = process.memoryUsage.rss();
    const result = { peakRss: Math.max(peak, rss), rss };
    peak = rss;
    return result;
  });
  process.stdout.write(`LISTENING ${port}\n`);
}

/** Heap used and RSS after two full GCs (the server runs with --expose-gc). */
export function measureAfterGc(): { heapUsed: number; rss: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('the server must run with --expose-gc');
  gc();
  gc();
  const { heapUsed, rss } = process.memoryUsage();
  return { heapUsed, rss };
}
