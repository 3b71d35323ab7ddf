/**
 * The service as a real child process, for the service, infra and reliability tests and the benchmark:
 * built once per source version (or run from its sources with tsx as a loader), started with `node` as
 * one process leading its own process group, its JSON log lines captured, killed or stopped like an
 * orchestrator would. Nothing it starts outlives the test file or the program that started it.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from '../../freePort';

const run = promisify(execFile);

export const repositoryRoot = path.resolve(__dirname, '../../..');
const serviceDir = path.join(repositoryRoot, 'service');
const buildsDir = path.join(repositoryRoot, 'dist', '.builds');

const defaultStartTimeoutMillis = 30_000;
const stopDeadlineMillis = 15_000;
const pollMillis = 10;

/** Every process started here and still running (listening or not), so a suite can stop them all. */
const spawnedServices = new Set<SpawnedService>();
/** The process group of every service started here (its pid), until stopAllServiceProcesses has killed it. */
const processGroups = new Set<number>();
/** Kills the service's process group once the process that started it is gone, however it ended. */
const exitWithStarter = path.join(__dirname, 'exitWithStarter.mjs');
const allLines: string[] = [];

async function sourceFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'test') files.push(...(await sourceFiles(full)));
    } else if (/\.(ts|sql|js|html|css)$/.test(entry.name) && !entry.name.endsWith('.test.ts')) {
      files.push(full);
    }
  }
  return files.sort();
}

let building: Promise<string> | undefined;

/**
 * Compiles `service/` (tests excluded) to JavaScript under dist/.builds/<hash of the sources>/ and copies
 * the migrations beside it; returns the path of main.js. A build of the same sources is reused, and
 * concurrent builders (several jest workers) each build into a private folder and the first rename wins.
 */
export function buildService(): Promise<string> {
  building ??= (async () => {
    const hash = createHash('sha256');
    // The local Stripe is part of the build: `npm start` without settings loads it.
    for (const file of [...(await sourceFiles(serviceDir)), ...(await sourceFiles(path.join(repositoryRoot, 'localStripe')))]) hash.update(file).update(await readFile(file));
    hash.update(readFileSync(path.join(repositoryRoot, 'tsconfig.json'))).update(readFileSync(path.join(repositoryRoot, 'tsconfig.build.json')));
    const target = path.join(buildsDir, hash.digest('hex').slice(0, 16));
    const mainPath = path.join(target, 'service', 'main.js');
    if (existsSync(mainPath)) return mainPath;

    const temporary = `${target}.tmp-${process.pid}-${Date.now()}`;
    await mkdir(temporary, { recursive: true });
    // Only service/ is compiled: scripts being edited elsewhere must not break the service build.
    const tsconfigPath = path.join(temporary, 'tsconfig.json');
    await writeFile(
      tsconfigPath,
      JSON.stringify({
        extends: path.join(repositoryRoot, 'tsconfig.build.json'),
        compilerOptions: { rootDir: repositoryRoot, outDir: temporary, sourceMap: false, incremental: false },
        include: [serviceDir],
        exclude: [path.join(repositoryRoot, 'node_modules'), path.join(serviceDir, 'test'), path.join(repositoryRoot, '**/*.test.ts')],
      }),
    );
    try {
      await run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', tsconfigPath], { cwd: repositoryRoot, maxBuffer: 16 * 1024 * 1024 });
    } catch (error) {
      await rm(temporary, { recursive: true, force: true });
      const output = (error as { stdout?: string }).stdout ?? '';
      throw new Error(`Building the service failed:\n${output.slice(0, 4000)}`, { cause: error });
    }
    await cp(path.join(serviceDir, 'migrations'), path.join(temporary, 'service', 'migrations'), { recursive: true });
    await cp(path.join(serviceDir, 'creditsPage', 'public'), path.join(temporary, 'service', 'creditsPage', 'public'), { recursive: true });
    await rm(tsconfigPath);
    try {
      await rename(temporary, target);
    } catch {
      await rm(temporary, { recursive: true, force: true }); // Another builder got there first with the same sources.
    }
    return mainPath;
  })();
  const current = building;
  current.catch(() => {
    if (building === current) building = undefined;
  });
  return current;
}

export interface ServiceOptions {
  /** DATABASE_URL; unset to give it as DATABASE_URL_FILE in `env`, or to run on the embedded database. */
  databaseUrl?: string;
  /** One of these: a fixed secret (STRIPE_WEBHOOK_SECRET) or a hot-reloaded file. */
  webhookSecret?: string;
  webhookSecretFile?: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default: a free port; a restart passes the previous one so clients keep their URL. */
  port?: number;
  stripeMode?: 'test' | 'live';
  logLevel?: string;
  /** More environment variables; HOST and PORT come from the options above. */
  env?: Record<string, string>;
  /** Options for node itself, e.g. --cpu-prof. */
  nodeArgs?: string[];
  /** Run with tsx from the TypeScript sources instead of the built JavaScript. */
  fromSources?: boolean;
  /** The entry file and its arguments, relative to `cwd` (e.g. a built image's `dist/service/main.js`);
   *  default: the built service, or service/main.ts with `fromSources`. */
  program?: string[];
  /** Default: the repository root. */
  cwd?: string;
  /** DATA_DIR (or DATA_DIR in `env`); default a fresh temporary folder per process, removed when it exits. */
  dataDir?: string;
  /** How long to wait for it to listen (default 30 s). */
  startTimeoutMillis?: number;
  /** A name shown in errors. */
  name?: string;
}

export interface ServiceExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A service process that was spawned and may not listen (yet, or ever: e.g. a start-up that must fail). */
export interface SpawnedService {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  readonly url: string;
  /** Every stdout/stderr line of this process, in order. */
  readonly logLines: string[];
  readonly options: ServiceOptions;
  readonly exited: Promise<ServiceExit>;
  isRunning(): boolean;
  /** Resolves with the first line (already seen or future) that satisfies `predicate`. */
  waitForLog(predicate: (line: string) => boolean, timeoutMillis?: number): Promise<string>;
  /** Sends the signal to the service process alone, as `kill <pid>` does: what it started may outlive it,
   *  until stop() or the end of the test file. */
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL if it has not exited after the deadline; then kills anything left in its process group. */
  stop(): Promise<ServiceExit>;
}

export interface ServiceProcess extends SpawnedService {
  readonly webhookUrl: string;
  /** From spawn to the "service listening" log line. */
  readonly startupMillis: number;
  /** Resident memory (VmRSS) in bytes, read from /proc; undefined once the process is gone. */
  rssBytes(): number | undefined;
}

function childEnv(options: ServiceOptions, host: string, port: number, dataDir: string): NodeJS.ProcessEnv {
  // A minimal environment: nothing of the parent's (which may hold credentials) leaks into the child.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME ?? os.tmpdir(), ...options.env, HOST: host, PORT: String(port), DATA_DIR: dataDir };
  if (options.databaseUrl) env.DATABASE_URL = options.databaseUrl;
  if (options.stripeMode) env.STRIPE_MODE = options.stripeMode;
  if (options.logLevel) env.LOG_LEVEL = options.logLevel;
  if (options.webhookSecret) env.STRIPE_WEBHOOK_SECRET = options.webhookSecret;
  if (options.webhookSecretFile) env.STRIPE_WEBHOOK_SECRET_FILE = options.webhookSecretFile;
  return env;
}

/**
 * A data dir of its own for one service process. As root, an embedded PostgreSQL in it runs as the `postgres`
 * user, which must be able to enter it (mkdtemp makes it 0700); what it holds besides is mode 0600.
 */
async function temporaryDataDirectory(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'credits-service-data-'));
  await chmod(dir, 0o755);
  return dir;
}

/** Signals a process group, if any of it is left. */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the whole group has exited already.
  }
}

/**
 * Starts the service as one node process (tsx as a loader, never as a wrapper process) leading its own
 * process group, so that stop(), the end of the test file or the end of its starter kills everything it
 * started. Resolves at once, without waiting for it to listen.
 */
export async function spawnServiceProcess(options: ServiceOptions): Promise<SpawnedService> {
  const name = options.name ?? 'service';
  const program = options.program ?? (options.fromSources ? ['--import', 'tsx', path.join(serviceDir, 'main.ts')] : [await buildService()]);
  const host = options.host ?? '127.0.0.1';
  const port = options.port || (await freePort([host]));
  const givenDataDir = options.dataDir ?? options.env?.DATA_DIR;
  const temporaryDataDir = givenDataDir === undefined ? await temporaryDataDirectory() : undefined;
  const child: ChildProcess = spawn(process.execPath, ['--import', pathToFileURL(exitWithStarter).href, ...(options.nodeArgs ?? []), ...program], {
    cwd: options.cwd ?? repositoryRoot,
    env: childEnv(options, host, port, givenDataDir ?? temporaryDataDir!),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  if (child.pid === undefined) throw new Error(`${name}: spawn failed`);
  const pid = child.pid;
  processGroups.add(pid);

  const logLines: string[] = [];
  const waiters = new Set<{ predicate: (line: string) => boolean; resolve: (line: string) => void }>();
  const onLine = (line: string) => {
    logLines.push(line);
    allLines.push(line);
    for (const waiter of waiters) {
      if (waiter.predicate(line)) {
        waiters.delete(waiter);
        waiter.resolve(line);
      }
    }
  };
  for (const stream of [child.stdout!, child.stderr!]) {
    let pending = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const parts = (pending + chunk).split('\n');
      pending = parts.pop() ?? '';
      for (const part of parts) if (part) onLine(part);
    });
    stream.on('end', () => {
      if (pending) onLine(pending);
      pending = '';
    });
  }

  let running = true;
  const exited = new Promise<ServiceExit>((resolve) => {
    child.once('exit', (code, signal) => {
      running = false;
      // Gone once the exit is reported: a test file that ends right after stop() leaves no folder behind.
      const removed = temporaryDataDir ? rm(temporaryDataDir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined) : Promise.resolve();
      void removed.then(() => resolve({ code, signal }));
    });
  });

  const waitForLog = (predicate: (line: string) => boolean, timeoutMillis = defaultStartTimeoutMillis) => {
    const seen = logLines.find(predicate);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const waiter = {
        predicate,
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`${name}: expected log line did not appear within ${timeoutMillis} ms; last lines:\n${logLines.slice(-10).join('\n')}`));
      }, timeoutMillis);
      waiters.add(waiter);
    });
  };

  const spawned: SpawnedService = {
    name,
    pid,
    port,
    url: `http://${host}:${port}`,
    logLines,
    options,
    exited,
    isRunning: () => running,
    waitForLog,
    kill(signal) {
      if (running) child.kill(signal);
    },
    async stop() {
      if (running) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), stopDeadlineMillis);
      const exit = await exited;
      clearTimeout(timer);
      // Whatever it started and left behind goes with it.
      signalGroup(pid, 'SIGKILL');
      return exit;
    },
  };
  spawnedServices.add(spawned);
  void exited.then(() => spawnedServices.delete(spawned));
  return spawned;
}

/** Starts the service as a child process and resolves once it listens (or rejects with its last log lines). */
export async function startServiceProcess(options: ServiceOptions): Promise<ServiceProcess> {
  const spawnedAt = performance.now();
  const spawned = await spawnServiceProcess(options);
  // Up when it logs "service listening" (LOG_LEVEL info or finer) or its health check answers.
  const isListening = async () => {
    if (spawned.logLines.some((line) => line.includes('"msg":"service listening"'))) return true;
    try {
      return (await fetch(`${spawned.url}/healthz`)).ok;
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + (options.startTimeoutMillis ?? defaultStartTimeoutMillis);
  while (!(await isListening())) {
    if (!spawned.isRunning() || Date.now() > deadline) {
      const exit = await spawned.stop();
      throw new Error(`${spawned.name} did not start listening (exit code ${exit.code}, signal ${exit.signal}); last lines:\n${spawned.logLines.slice(-10).join('\n')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, pollMillis));
  }
  return {
    ...spawned,
    webhookUrl: `${spawned.url}/api/v1/billing/stripe/webhook`,
    startupMillis: performance.now() - spawnedAt,
    rssBytes: () => readRssBytes(spawned.pid),
  };
}

/** The same service again on the same port and settings (after a crash or a stop). */
export function restartServiceProcess(previous: ServiceProcess): Promise<ServiceProcess> {
  return startServiceProcess({ ...previous.options, port: previous.port });
}

/** Stops every service process this module started that is still running (or still starting), and kills
 *  whatever any of them left behind in its process group. */
export async function stopAllServiceProcesses(): Promise<void> {
  await Promise.all([...spawnedServices].map((service) => service.stop()));
  for (const pid of processGroups) signalGroup(pid, 'SIGKILL');
  processGroups.clear();
}

/** Every log line of every service process started in this test file (or benchmark run). */
export function allServiceLogLines(): readonly string[] {
  return allLines;
}

export function readRssBytes(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Polls `condition` until it holds, or throws after `timeoutMillis`: the only kind of waiting tests do. */
export async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMillis: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMillis;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMillis} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMillis));
  }
}

// Under jest, a test file stops its services when it ends, whether its tests passed, failed or timed out.
// (A `process.on('exit')` handler would not do: inside a test file jest gives `process` events of its own,
// which never fire. The preloaded exitWithStarter.mjs covers a runner that is killed or interrupted.)
if (typeof afterAll === 'function') afterAll(stopAllServiceProcesses);
