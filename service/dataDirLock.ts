import { readFileSync, unlinkSync } from 'node:fs';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isProcessAlive } from './processAlive';
import { StartupError, startupExitCodes } from './startupFailure';

export const dataDirLockName = 'npm-start.pid';

/**
 * One development service per data dir: two of them on one embedded database would each believe its own
 * writes are there. The lock is a file holding our pid; a lock whose process is gone is taken over, and it
 * is removed when the process exits, however it exits (short of SIGKILL, which the next start recovers from).
 * Returns the release function.
 */
export async function lockDataDir(dataDir: string): Promise<() => void> {
  const lockPath = path.join(dataDir, dataDirLockName);
  await mkdir(dataDir, { recursive: true });
  const shown = displayPath(dataDir);
  while (!(await createExclusively(lockPath))) {
    const holder = Number((await readFile(lockPath, 'utf8').catch(() => '')).trim());
    if (Number.isInteger(holder) && holder > 0 && isProcessAlive(holder)) {
      throw new StartupError(
        `Cannot start: another npm start (pid ${holder}) is using ${shown}. Stop it first, or give this one its own DATA_DIR ` +
          `(or a DATABASE_URL). If pid ${holder} is not an npm start, delete ${path.join(shown, dataDirLockName)}.`,
        startupExitCodes.dataDirInUse,
      );
    }
    // The holder is gone (killed, or the machine restarted): its lock is stale.
    await unlink(lockPath).catch(() => undefined);
  }

  const release = () => {
    process.removeListener('exit', release);
    try {
      if (readFileSync(lockPath, 'utf8').trim() === String(process.pid)) unlinkSync(lockPath);
    } catch {
      // Already gone.
    }
  };
  process.once('exit', release);
  return release;
}

/** Written aside and hard-linked into place, so that nobody ever reads a lock without its pid. */
async function createExclusively(lockPath: string): Promise<boolean> {
  const written = `${lockPath}.${process.pid}`;
  await writeFile(written, `${process.pid}\n`);
  try {
    await link(written, lockPath);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await unlink(written).catch(() => undefined);
  }
}

/** `.data` rather than /home/…/project/.data when it is under the working directory. */
function displayPath(dir: string): string {
  const relative = path.relative(process.cwd(), dir);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : dir;
}
