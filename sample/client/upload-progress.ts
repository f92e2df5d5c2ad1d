import cliProgress from 'cli-progress';

const MiB = 1024 * 1024;
/** How often the bar is redrawn on a terminal, and how often a plain line is printed when output is a log. */
const TTY_FPS = 10;
const LOG_EVERY_MS = 1_000;

/**
 * A cli-progress bar for a transfer of `total` bytes: bytes sent, rate and ETA. On a terminal it redraws in place;
 * when stdout is not a TTY (CI logs, `| tee`) it prints one plain line a second instead — no escape codes, and a
 * handful of lines however long the transfer.
 */
export class UploadProgress {
  readonly #bar: cliProgress.SingleBar;
  readonly #total: number;
  #started = 0;
  #lastUpdate = 0;

  /** @param label - shown before the bar */
  constructor(label: string, total: number) {
    this.#total = total;
    this.#bar = new cliProgress.SingleBar(
      {
        stream: process.stdout, // with the sample's other output, in order
        format: `  ${label} [{bar}] {percentage}% | {sent} / {size} MiB | {rate} MiB/s | ETA {eta_formatted}`,
        barsize: 24,
        fps: TTY_FPS,
        etaBuffer: 20, // updates come every 100 ms at most: the ETA follows the last ~2 s
        noTTYOutput: true, // print plain lines when stdout is not a terminal…
        notTTYSchedule: LOG_EVERY_MS, // …at most one a second
        // stop() ends the bar's line; in the plain mode that line is already ended, and it would print an empty one.
        clearOnComplete: !process.stdout.isTTY,
        // Before the first update cli-progress has no ETA yet (it would show "0s").
        formatTime: (t, options, roundTo) => (this.#lastUpdate === 0 ? '-' : cliProgress.Format.TimeFormat(t, options, roundTo)),
      },
      cliProgress.Presets.shades_classic,
    );
  }

  start(): void {
    this.#started = performance.now();
    this.#bar.start(this.#total, 0, { sent: '0.0', size: (this.#total / MiB).toFixed(1), rate: '-' });
  }

  /** `sent` bytes so far. Called per chunk; the bar itself is fed at most every 100 ms (its ETA averages updates). */
  update(sent: number): void {
    const now = performance.now();
    if (now - this.#lastUpdate < 100 && sent < this.#total) return;
    this.#lastUpdate = now;
    this.#bar.update(sent, { sent: (sent / MiB).toFixed(1), rate: this.#rate(sent, now) });
  }

  /** Draws the last state and ends the line (also after a failure: the terminal is left tidy). */
  stop(): void {
    this.#bar.stop();
  }

  #rate(sent: number, now: number): string {
    const seconds = (now - this.#started) / 1000;
    return seconds > 0 ? (sent / MiB / seconds).toFixed(1) : '-';
  }
}
