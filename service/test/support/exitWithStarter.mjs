// Preloaded (node --import) into every service process a test or the benchmark starts: once the process
// that started it is gone (finished, crashed, killed outright, or stopped with Ctrl-C, which the service's
// own process group does not receive), the service's whole process group is killed at once.
import process from 'node:process';
import { setInterval } from 'node:timers';

const starterPid = process.ppid;
const checkEveryMillis = 200;

setInterval(() => {
  // An orphan is adopted by init (or a subreaper), so its parent pid changes.
  if (process.ppid !== starterPid) process.kill(0, 'SIGKILL');
}, checkEveryMillis).unref();
