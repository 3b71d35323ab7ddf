/**
 * Each way the start can fail ends the process with one line on stderr that names the cause and the fix,
 * and an exit code of its own (README: "When it does not start"). The service runs as a real process (the
 * built JavaScript, as in the image) against the real PostgreSQL server of the tests.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { dataDirLockName } from '../dataDirLock';
import { startupExitCodes } from '../startupFailure';
import { freePort } from '../freePort';
import { buildService, repositoryRoot } from './support/serviceProcess';
import { createTestDatabase, databaseUrl, testServerUrl, type TestDatabase } from './support/testDatabase';

const exitDeadlineMillis = 30_000;
let dataDir: string;
let mainPath: string;
/** A database the service could use, for the failures that are not the database's. */
let database: TestDatabase;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'startup-failures-'));
  database = await createTestDatabase({ poolMax: 1 });
  mainPath = await buildService();
}, 120_000);
afterAll(async () => {
  await database.drop();
  await rm(dataDir, { recursive: true, force: true });
});

interface Exit {
  code: number | null;
  stdout: string;
  stderrLines: string[];
}

/** Runs the service with exactly these settings until it exits by itself (killed if it does not). */
function startExpectingFailure(env: Record<string, string>): Promise<Exit> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [mainPath],
      { cwd: repositoryRoot, timeout: exitDeadlineMillis, killSignal: 'SIGKILL', env: { PATH: process.env.PATH, DATA_DIR: dataDir, STRIPE_WEBHOOK_SECRET: 'whsec_startup_failures', ...env } },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderrLines: stderr.split('\n').filter(Boolean) });
      },
    );
  });
}

/** A URL of the test server with another port, where nothing listens. */
async function urlWithClosedPort(): Promise<string> {
  const url = new URL(testServerUrl);
  url.port = String(await freePort());
  url.username = 'app';
  url.password = 'hunter2-database-password';
  return url.toString();
}

test('a database port where nothing listens: exit 69, one line naming the address and DATABASE_URL, no password', async () => {
  const wrongUrl = await urlWithClosedPort();
  const { code, stdout, stderrLines } = await startExpectingFailure({ DATABASE_URL: wrongUrl });
  expect(code).toBe(startupExitCodes.database);
  expect(stderrLines).toHaveLength(1);
  expect(stderrLines[0]).toMatch(`Cannot start: nothing accepts connections at 127.0.0.1:${new URL(wrongUrl).port} (connection refused)`);
  expect(stderrLines[0]).toContain('Check DATABASE_URL');
  expect(stdout + stderrLines.join('\n')).not.toContain('hunter2');
}, 40_000);

test('a database name that does not exist: exit 69, one line naming the database and DATABASE_URL', async () => {
  const { code, stderrLines } = await startExpectingFailure({ DATABASE_URL: databaseUrl('credits_no_such_database') });
  expect(code).toBe(startupExitCodes.database);
  expect(stderrLines).toEqual([expect.stringMatching(/^Cannot start: PostgreSQL at 127\.0\.0\.1:\d+ has no database "credits_no_such_database": create it .*Check DATABASE_URL/)]);
}, 40_000);

test('a port already taken: exit 75, one line naming the port and PORT', async () => {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const { port } = holder.address() as net.AddressInfo;
  try {
    const { code, stderrLines } = await startExpectingFailure({ DATABASE_URL: database.url, PORT: String(port) });
    expect(code).toBe(startupExitCodes.listen);
    expect(stderrLines).toEqual([`Cannot start: port ${port} on 127.0.0.1 is already in use (another npm start, or another program). Stop it, or set PORT to a free port.`]);
  } finally {
    await new Promise((resolve) => holder.close(resolve));
  }
}, 40_000);

test('a bad setting: exit 78, one line naming the variable', async () => {
  const { code, stdout, stderrLines } = await startExpectingFailure({ DATABASE_URL: database.url, STRIPE_MODE: 'production' });
  expect(code).toBe(startupExitCodes.configuration);
  expect(stdout).toBe('');
  expect(stderrLines).toEqual(['Configuration error: STRIPE_MODE must be "test" or "live", got "production".']);
}, 40_000);

test('a data dir another npm start holds: exit 73, one line naming its pid and the way out', async () => {
  // This test runner is alive: as good a holder as any other npm start.
  await writeFile(path.join(dataDir, dataDirLockName), `${process.pid}\n`);
  try {
    const { code, stdout, stderrLines } = await startExpectingFailure({});
    expect(code).toBe(startupExitCodes.dataDirInUse);
    expect(stderrLines).toEqual([expect.stringContaining(`Cannot start: another npm start (pid ${process.pid}) is using ${dataDir}. Stop it first`)]);
    expect(stdout).not.toContain('"level":50');
  } finally {
    await rm(path.join(dataDir, dataDirLockName), { force: true });
  }
}, 40_000);
