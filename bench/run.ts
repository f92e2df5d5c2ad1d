/**
 * `npm run bench [-- --quick]`: nestjs-smux side by side with raw Node TCP, Nest's TCP and gRPC transports and
 * Go smux, in one run (issue 4).
 *
 * Every system's server and client are separate processes on 127.0.0.1 (systems/). Each round runs every case
 * on every system once (the systems' order rotates per round), plus the core cases (bench/core peers), so that
 * machine drift hits all systems alike; ratios are taken within a round, then their medians reported. Output:
 * a progress line on stderr, the table on stdout, bench/results/latest.json and bench/results/latest.svg.
 */
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isSized, optionalCases, type PlannedCase, plan, priming } from './cases/plan.js';
import { type Calibration, calibrate, measuredSeconds, raiseIfShort, sizedSpec } from './cases/sizing.js';
import { goAvailability } from '../test/interop/go-peer.js';
import type { CoreCase } from './core/cases.js';
import { corePlan } from './cases/core.js';
import { parseOptions } from './lib/options.js';
import { writeJson } from './report/json.js';
import { type CoreSample, type Sample, summarizeCase, summarizeCore } from './report/summary.js';
import { renderSvg, writeSvg } from './report/svg.js';
import { type Environment, renderTable } from './report/table.js';
import { evaluateTargets } from './report/targets.js';
import { allSystems, SUBJECT } from './systems/index.js';
import type { System } from './systems/system.js';

const results = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results');
/** A mistake in the command line: said without a stack trace, before anything starts. */
function usageError(error: unknown): never {
  process.stderr.write(`npm run bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(2);
}

const options = ((): ReturnType<typeof parseOptions> => {
  try {
    return parseOptions(process.argv.slice(2));
  } catch (error) {
    return usageError(error);
  }
})();
const { quick, rounds } = options;

/** Every case id `--only` may name: the planned cases (full and --quick), the optional ones, and `core`. */
function checkCaseIds(only: string[] | null): void {
  if (only === null) return;
  const ids = new Set(['core', ...[plan(false), plan(true), optionalCases(false), optionalCases(true)].flat().map((c) => c.id)]);
  const unknown = only.filter((id) => !ids.has(id));
  if (unknown.length > 0)
    usageError(`unknown case ${unknown.map((id) => `'${id}'`).join(', ')} in --only: the cases are ${[...ids].join(', ')}`);
}

function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  else if (text !== '') process.stderr.write(`${text}\n`);
}

/** The commit measured (with "+changes" when lib/ has uncommitted changes), or "unknown" outside git. */
function commit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty =
      execFileSync('git', ['status', '--porcelain', '--', 'lib'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== '';
    return dirty ? `${head}+changes` : head;
  } catch {
    return 'unknown';
  }
}

/** The systems in a different order each round, so no system always runs first (or right after another). */
function rotate<T>(list: T[], round: number): T[] {
  const k = list.length === 0 ? 0 : round % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

/** A line that stays (a stall, a failure), above the progress line. */
function describe(value: unknown): string {
  return value instanceof Error ? value.message : typeof value === 'string' ? value : JSON.stringify(value);
}

function announce(text: string): void {
  progress(text);
  if (process.stderr.isTTY) process.stderr.write('\n');
}

/** Unrecorded runs on fresh processes before round 1 (see `priming`). */
async function prime(systems: System[], cases: PlannedCase[]): Promise<void> {
  for (const system of systems.filter((s) => cases.some((c) => s.supports(c.spec)))) {
    for (const spec of priming(quick, cases).filter((p) => system.supports(p))) {
      progress(`priming · ${system.name}`);
      await system.run(spec);
    }
  }
}

/** Calibrations by case id and system name. */
type Calibrations = Map<string, Calibration>;
const key = (caseId: string, system: string): string => `${caseId}\u0000${system}`;

/** A calibration of every sized case on every system that takes part (unrecorded runs, before round 1). */
async function calibrateAll(systems: System[], cases: PlannedCase[]): Promise<Calibrations> {
  const calibrations: Calibrations = new Map();
  for (const c of cases.filter(isSized)) {
    for (const system of systems.filter((s) => s.supports(c.spec))) {
      progress(`calibrating · ${c.label} · ${system.name}`);
      const calibration = await calibrate(system, c);
      if (calibration.failed !== undefined) announce(`calibrating · ${c.label} · ${system.name}: FAILED ${calibration.failed}`);
      calibrations.set(key(c.id, system.name), calibration);
    }
  }
  return calibrations;
}

/** One round: every case on every system that takes part (rotated order), then the core cases. */
async function runRound(
  round: number,
  systems: System[],
  cases: PlannedCase[],
  calibrations: Calibrations,
  core: CoreCase[],
  samples: Sample[],
  coreSamples: CoreSample[],
): Promise<void> {
  const where = `round ${round}/${rounds}`;
  for (const c of cases) {
    for (const system of rotate(
      systems.filter((s) => s.supports(c.spec)),
      round,
    )) {
      progress(`${where} · ${c.label} · ${system.name}`);
      const calibration = isSized(c) ? calibrations.get(key(c.id, system.name)) : undefined;
      const spec = isSized(c) && calibration !== undefined ? sizedSpec(c, calibration) : c.spec;
      const t0 = performance.now();
      const run = await system.run(spec);
      const wallMs = Math.round(performance.now() - t0);
      const seconds = measuredSeconds(run);
      const result = seconds === null ? run : { ...run, seconds };
      if (isSized(c) && calibration !== undefined && !run.stalled && run.failed === undefined) raiseIfShort(c, calibration, seconds);
      samples.push({ round, caseId: c.id, system: system.name, wallMs, result });
      if (result.stalled) announce(`${where} · ${c.label} · ${system.name}: STALL (no progress for 5 s), restarted`);
      if (result.failed !== undefined) announce(`${where} · ${c.label} · ${system.name}: FAILED ${describe(result.failed)}`);
    }
  }
  for (const [name, run] of core) {
    progress(`${where} · core · ${name}`);
    const t0 = performance.now();
    try {
      coreSamples.push({ round, name, value: await run(), wallMs: Math.round(performance.now() - t0) });
    } catch (error) {
      coreSamples.push({ round, name, value: null, error: error instanceof Error ? error.message.slice(0, 300) : String(error) });
      announce(`${where} · core · ${name}: FAILED ${String(error)}`.slice(0, 300));
    }
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  const measured = commit(); // read before the run: commits made while it runs are not what was built
  checkCaseIds(options.only);
  let systems: System[];
  try {
    systems = allSystems({ cpuProf: options.cpuProf, names: options.systems });
  } catch (error) {
    return usageError(error);
  }
  const stopAll = (): Promise<unknown> => Promise.all(systems.map((s) => s.stop()));
  const onSignal = (): void => void stopAll().finally(() => process.exit(130));
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);

  const active = systems.filter((s) => s.unavailable === null);
  const skipped = systems.filter((s) => s.unavailable !== null).map((s) => `${s.name} — ${s.unavailable}`);
  for (const reason of skipped) process.stderr.write(`*** skipped: ${reason} ***\n`);
  const wanted = (id: string): boolean => options.only === null || options.only.includes(id);
  const cases = [...plan(quick), ...optionalCases(quick).filter((c) => options.only?.includes(c.id) === true)].filter((c) => wanted(c.id));
  const core = wanted('core') ? corePlan(quick, goAvailability().ok) : { cases: [], ratios: [] };
  const samples: Sample[] = [];
  const coreSamples: CoreSample[] = [];
  let calibrations: Calibrations | undefined;
  let calibrationSeconds: number | undefined;
  try {
    await prime(active, cases);
    const t0 = performance.now();
    calibrations = await calibrateAll(active, cases);
    calibrationSeconds = (performance.now() - t0) / 1000;
    for (let round = 1; round <= rounds; round++) await runRound(round, active, cases, calibrations, core.cases, samples, coreSamples);
  } finally {
    progress('stopping…');
    await stopAll();
    progress('');
  }

  const summaries = cases.map((c) =>
    summarizeCase(
      c,
      active.map((s) => s.name),
      samples,
      SUBJECT,
    ),
  );
  const coreSummary = summarizeCore(
    core.cases.map(([name]) => name),
    core.ratios,
    coreSamples,
  );
  const targets = evaluateTargets(summaries, coreSummary, SUBJECT);
  const env: Environment = {
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown CPU',
    cores: cpus().length,
    commit: measured,
    date: `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    rounds,
    quick,
    skipped,
  };
  process.stdout.write(`\n${renderTable(env, summaries, coreSummary, targets, SUBJECT)}`);
  const seconds = (performance.now() - started) / 1000;
  // Only a full run replaces the latest results: a restricted one (--only, --systems) writes `partial`, --quick `quick`.
  const name = options.only !== null || options.systems !== null ? 'partial' : quick ? 'quick' : 'latest';
  writeJson(join(results, `${name}.json`), {
    ...env,
    seconds,
    options,
    plan: cases,
    corePlan: core.cases.map(([n]) => n),
    // How each sized case was sized per system: the calibrated rate, the calls per run (as raised after short rounds).
    sizing: { calibrationSeconds, calibrations: [...(calibrations?.values() ?? [])] },
    summaries,
    core: coreSummary,
    targets,
    samples,
    coreSamples,
  });
  writeSvg(join(results, `${name}.svg`), renderSvg(env, summaries, coreSummary, SUBJECT));
  process.stdout.write(`\nwritten bench/results/${name}.json and bench/results/${name}.svg (${seconds.toFixed(0)} s)\n`);
}

await main();
