/** CPU time of processes, read from /proc (Linux): for telling apart who used the machine's cores. */
import { readdirSync, readFileSync } from 'node:fs';

const ticksPerSecond = 100; // CLK_TCK on Linux

/** User + system CPU time of one process, in clock ticks (0 once it is gone). */
export function cpuTicks(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  } catch {
    return 0;
  }
}

/** Every PostgreSQL server process on the machine (postmaster, backends, WAL writer, …). */
export function postgresCpuTicks(): number {
  let total = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/comm`, 'utf8').trim() === 'postgres') total += cpuTicks(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

/** Share of one core that `ticks` of CPU time over `millis` of wall time amount to, in percent. */
export const corePercent = (ticks: number, millis: number) => (ticks / ticksPerSecond / (millis / 1000)) * 100;
