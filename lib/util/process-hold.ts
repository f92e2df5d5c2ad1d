/** Node's timers hold at most 2^31 − 1 ms: the longest an idle interval can wait between its (empty) runs. */
const FOREVER_MS = 0x7fff_ffff;

/**
 * Runs `work` with a ref'd handle held until it settles, so the process stays alive meanwhile. For work bounded only
 * by the library's own timers, which are unref'd (they must not keep an app alive once its work is done), and which
 * an app awaits: without the hold, a process with nothing else alive exits before that work ends.
 */
export async function keepingProcessAlive<T>(work: () => Promise<T>): Promise<T> {
  const alive = setInterval(noop, FOREVER_MS);
  try {
    return await work();
  } finally {
    clearInterval(alive);
  }
}

function noop(): void {}
