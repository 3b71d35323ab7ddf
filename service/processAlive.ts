import { readFileSync } from 'node:fs';

/**
 * Whether a process exists and has not exited. A zombie (exited, not yet reaped by its parent) answers
 * signal 0 like a live process, so on Linux its state in /proc is read too.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // No /proc (not Linux): signal 0 is all we know.
  }
}
