/**
 * The one way our scripts read their arguments (node:util parseArgs underneath):
 *
 *   const cli = parseCommandLine({ usage, options: { user: { type: 'string' } } });
 *   cli.values.user                     // typed as parseArgs types it
 *   if (bad) cli.fail('--user is required');
 *
 * `--help` / `-h` prints `usage` on stdout and exits 0 before the script does anything else. An unknown option,
 * a missing or malformed value, or `cli.fail(…)` prints the problem and then `usage` on stderr and exits 2.
 */
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;

export interface CommandLineSpec<O extends Options> {
  /** The whole usage text, written once per script: what it does, its arguments and options, an example. */
  usage: string;
  options: O;
  /** Accept bare arguments (returned as `positionals`); by default any is a usage error. */
  allowPositionals?: boolean;
  /** Defaults to process.argv without node and the script. */
  args?: string[];
}

export const usageErrorExitCode = 2;

export function parseCommandLine<const O extends Options>(spec: CommandLineSpec<O>) {
  const args = spec.args ?? process.argv.slice(2);
  const usage = `${spec.usage.trim()}\n`;
  const fail = (message: string): never => {
    process.stderr.write(`${commandName(usage)}: ${message}\n\n${usage}`);
    process.exit(usageErrorExitCode);
  };
  const wantsHelp = () => {
    process.stdout.write(usage);
    process.exit(0);
  };

  let parsed;
  try {
    parsed = parseArgs({ args, options: spec.options, allowPositionals: spec.allowPositionals ?? false, strict: true });
  } catch (error) {
    // `--help` wins over any other mistake on the same line.
    if (args.includes('--help') || args.includes('-h')) return wantsHelp() as never;
    return fail((error as Error).message);
  }
  if (args.includes('--help') || args.includes('-h')) wantsHelp();
  return { values: parsed.values, positionals: parsed.positionals, fail };
}

/** A whole number option within bounds, or a usage error naming the option. */
export function wholeNumberOption(cli: { fail(message: string): never }, flag: string, raw: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const value = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
    cli.fail(`${flag} must be a whole number from ${min}${max === Number.MAX_SAFE_INTEGER ? ' up' : ` to ${max}`}, got "${raw}"`);
  }
  return value;
}

const durationUnitSeconds: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** "90s", "30m", "1h", "7d" → seconds; undefined when the text is not such a duration. */
export function parseDurationSeconds(text: string): number | undefined {
  const match = /^(\d+)([smhd])$/.exec(text.trim());
  return match ? Number(match[1]) * durationUnitSeconds[match[2]!]! : undefined;
}

/** The command as the usage's first line spells it ("Usage: npm run bench …" → "bench", "npm start" → "start"), else the file name. */
function commandName(usage: string): string {
  const named = /^Usage:\s+(?:npm\s+(?:run(?:\s+-s)?\s+)?)?(\S+)/.exec(usage)?.[1];
  return named ?? path.basename(process.argv[1] ?? 'script').replace(/\.[cm]?[jt]s$/, '');
}
