/** Command-line options of `npm run bench -- [options]`. */
export interface BenchOptions {
  /** `--quick`: 3 rounds of ≥ 1 s per system and case (≈ 5 – 7 minutes). */
  quick: boolean;
  /** `--rounds=N`: default 5, or 3 with --quick. */
  rounds: number;
  /** `--only=echo-64-64,hol,core`: run only these case ids (see cases/plan.ts; `core` for the core cases). */
  only: string[] | null;
  /** `--systems=nestjs-smux,Nest TCP`: run only these systems. */
  systems: string[] | null;
  /** `--cpu-prof`: the Node servers and clients write V8 CPU profiles to bench/results/ when they exit. */
  cpuProf: boolean;
}

export function parseOptions(argv: string[]): BenchOptions {
  const value = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const list = (name: string): string[] | null =>
    value(name)
      ?.split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '') ?? null;
  const known = /^--(quick|cpu-prof|rounds=\d+|only=.+|systems=.+)$/;
  const unknown = argv.filter((a) => !known.test(a));
  if (unknown.length > 0) {
    // `--systems=nestjs-smux,Nest TCP` unquoted reaches us as two arguments: the second one is a stray word.
    const quoting = unknown.some((a) => !a.startsWith('--')) ? ' (quote a system name with a space: "--systems=nestjs-smux,Nest TCP")' : '';
    throw new Error(
      `unknown option ${unknown.join(' ')}: use --quick, --rounds=N, --only=<case ids>, --systems=<names>, --cpu-prof${quoting}`,
    );
  }
  const quick = argv.includes('--quick');
  const rounds = Number(value('rounds') ?? (quick ? 3 : 5));
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');
  return { quick, rounds, only: list('only'), systems: list('systems'), cpuProf: argv.includes('--cpu-prof') };
}
