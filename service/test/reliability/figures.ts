/**
 * Figures of the reliability run: each test file counts what it did, and at the end of the file adds them
 * to a ledger shared by the whole jest run and prints the running totals, so the last table printed is the
 * run's total.
 */
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Figures {
  deliveriesSent: number;
  faultsInjected: number;
  inputsTried: number;
  invariantChecks: number;
  scenarios: number;
}

const names: Record<keyof Figures, string> = {
  deliveriesSent: 'signed deliveries sent (incl. retries)',
  faultsInjected: 'faults injected',
  inputsTried: 'bad or fuzzed inputs tried',
  invariantChecks: 'invariant checks passed',
  scenarios: 'scenarios run',
};

export function newFigures(): Figures {
  return { deliveriesSent: 0, faultsInjected: 0, inputsTried: 0, invariantChecks: 0, scenarios: 0 };
}

/** One ledger per jest run: the jest parent process (workers are its children; in band it is us). */
function ledgerPath(): string {
  const runner = typeof process.send === 'function' ? process.ppid : process.pid;
  return path.join(os.tmpdir(), `stripe-credits-reliability-${runner}.jsonl`);
}

export function reportFigures(file: string, figures: Figures): void {
  const ledger = ledgerPath();
  appendFileSync(ledger, `${JSON.stringify({ file, figures, atMillis: Date.now() })}\n`);
  const entries = existsSync(ledger)
    ? readFileSync(ledger, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { file: string; figures: Figures })
    : [];
  const total = newFigures();
  for (const entry of entries) for (const key of Object.keys(total) as Array<keyof Figures>) total[key] += entry.figures[key];
  const width = Math.max(...Object.values(names).map((name) => name.length));
  const rows = (Object.keys(names) as Array<keyof Figures>).map(
    (key) => `  ${names[key].padEnd(width)}  ${String(figures[key]).padStart(8)}  ${String(total[key]).padStart(8)}`,
  );
  process.stdout.write(
    [
      '',
      `Reliability figures after ${file} (${entries.length} file${entries.length === 1 ? '' : 's'} done in this run)`,
      `  ${''.padEnd(width)}  ${'file'.padStart(8)}  ${'run'.padStart(8)}`,
      ...rows,
      '',
    ].join('\n'),
  );
}
