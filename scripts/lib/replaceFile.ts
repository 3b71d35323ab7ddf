import { chown, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Writes `content` to a temporary file beside `file` and renames it over, keeping the owner and mode, so a
 * reader (a replica watching the file) never sees half a file. The file must exist: its owner and mode are
 * the deployment's choice, not this script's.
 */
export async function replaceFileKeepingOwner(file: string, content: string): Promise<void> {
  const current = await stat(file);
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    await writeFile(temporary, content, { mode: current.mode & 0o7777, flag: 'wx' });
    await chown(temporary, current.uid, current.gid).catch(() => undefined); // only root may give a file away
    await rename(temporary, file);
  } finally {
    await rm(temporary, { force: true });
  }
}
