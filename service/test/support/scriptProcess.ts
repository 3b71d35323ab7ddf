/**
 * One of our TypeScript scripts (scripts/…) as a real process, the way `npm run` runs it: node with tsx as a
 * loader (one process, nothing left behind), in the repository, with exactly the environment given, and
 * killed if it overstays.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { repositoryRoot } from './serviceProcess';

export interface ScriptRun {
  /** The exit code; -1 when it was killed. */
  code: number;
  stdout: string;
  stderr: string;
}

const defaultDeadlineMillis = 30_000;

/** `stdin`, when given, is written to the script's standard input (secrets are given that way, never as arguments). */
export function runScript(file: string, args: string[], env: NodeJS.ProcessEnv, deadlineMillis = defaultDeadlineMillis, stdin?: string): Promise<ScriptRun> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      ['--import', 'tsx', path.resolve(repositoryRoot, file), ...args],
      { cwd: repositoryRoot, env, timeout: deadlineMillis, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }),
    );
    // A script may exit before reading its input (a usage error): that is not the test's failure.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(stdin ?? '');
  });
}

export interface RunningScript {
  readonly pid: number;
  /** stderr so far (progress, warnings). */
  stderr(): string;
  /** Sends the signal to the script's process (SIGKILL: as `kill -9` does). */
  kill(signal: NodeJS.Signals): void;
  /** Resolves when it exits; code -1 when it was killed by a signal. */
  readonly finished: Promise<ScriptRun>;
}

/** As runScript, but returns at once so the test can act while the script runs (and kill it). */
export function startScript(file: string, args: string[], env: NodeJS.ProcessEnv, deadlineMillis = defaultDeadlineMillis): RunningScript {
  let stderr = '';
  let resolveRun!: (run: ScriptRun) => void;
  const finished = new Promise<ScriptRun>((resolve) => (resolveRun = resolve));
  const child = execFile(
    process.execPath,
    ['--import', 'tsx', path.resolve(repositoryRoot, file), ...args],
    { cwd: repositoryRoot, env, timeout: deadlineMillis, killSignal: 'SIGKILL' },
    (error, stdout, allStderr) => resolveRun({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr: allStderr }),
  );
  child.stderr?.on('data', (chunk: Buffer | string) => (stderr += chunk.toString()));
  if (child.pid === undefined) throw new Error(`${file}: spawn failed`);
  const pid = child.pid;
  return { pid, stderr: () => stderr, kill: (signal) => child.kill(signal), finished };
}
