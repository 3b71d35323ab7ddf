/**
 * How the doctor runs other programs (`docker exec … nginx -t`, `pulumi stack output`, a local `nginx -t`):
 * one function, given to each check, so that a test or an operator can substitute the program (a docker
 * client that reaches another host, or a stand-in that runs the same command without Docker).
 */
import { execFile } from 'node:child_process';

export interface CommandResult {
  /** The exit code; -1 when the program could not be started or was killed (see `stderr`). */
  code: number;
  stdout: string;
  stderr: string;
}

export type CommandRunner = (program: string, args: readonly string[]) => Promise<CommandResult>;

const commandDeadlineMillis = 30_000;
const maxOutputBytes = 4 * 1024 * 1024;

/** Runs the program without a shell (no quoting surprises), with a deadline. */
export const runCommand: CommandRunner = (program, args) =>
  new Promise((resolve) => {
    execFile(program, [...args], { timeout: commandDeadlineMillis, killSignal: 'SIGKILL', maxBuffer: maxOutputBytes, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (!error) return resolve({ code: 0, stdout, stderr });
      const code = typeof error.code === 'number' ? error.code : -1;
      const reason = error.code === 'ENOENT' ? `${program}: command not found` : error.killed ? `${program} did not finish within ${commandDeadlineMillis / 1000} s` : '';
      resolve({ code, stdout, stderr: [stderr, reason].filter(Boolean).join('\n') });
    });
  });

/** The last lines of a program's output, for a report. */
export function lastLines(text: string, count = 6): string[] {
  return text.trim().split('\n').filter(Boolean).slice(-count);
}
