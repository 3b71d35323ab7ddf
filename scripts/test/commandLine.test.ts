/**
 * Every npm script that runs one of our TypeScript scripts answers `--help` with its usage on stdout, exit 0
 * and no side effect, and an unknown option with the usage on stderr and exit 2 (scripts/lib/cli.ts).
 * The scripts run as real processes, against an empty database and an empty data dir that must stay so.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { connectDatabase, type Database } from '../../service/db';
import { createLogger } from '../../service/logger';
import { runScript } from '../../service/test/support/scriptProcess';
import { databaseUrl, testServerUrl } from '../../service/test/support/testDatabase';

const repositoryRoot = path.resolve(__dirname, '../..');
const scriptDeadlineMillis = 20_000;

const logger = createLogger('silent');
const emptyDatabaseName = `credits_cli_${randomBytes(6).toString('hex')}`;
let admin: Database;
let emptyDatabase: Database;
let dataDir: string;

beforeAll(async () => {
  admin = connectDatabase({ connectionString: testServerUrl, poolMax: 1, logger });
  await admin.query(`CREATE DATABASE ${emptyDatabaseName}`);
  emptyDatabase = connectDatabase({ connectionString: databaseUrl(emptyDatabaseName), poolMax: 1, logger });
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'cli-data-'));
});
afterAll(async () => {
  await emptyDatabase.close();
  await admin.query(`DROP DATABASE IF EXISTS ${emptyDatabaseName} WITH (FORCE)`);
  await admin.close();
  await rm(dataDir, { recursive: true, force: true });
});

/** npm script name → the TypeScript file it runs with tsx. */
async function typeScriptScripts(): Promise<Array<[string, string]>> {
  const { scripts } = JSON.parse(await readFile(path.join(repositoryRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  return Object.entries(scripts).flatMap(([name, command]) => {
    const file = /^tsx (scripts\/\S+\.ts)$/.exec(command)?.[1];
    return file ? [[name, file] as [string, string]] : [];
  });
}

/** A script with nothing configured but an empty database and an empty data dir. */
const runWithEmptyState = (file: string, args: string[]) =>
  runScript(file, args, { PATH: process.env.PATH, HOME: os.tmpdir(), DATABASE_URL: databaseUrl(emptyDatabaseName), STRIPE_API_KEY: 'sk_test_unused', DATA_DIR: dataDir }, scriptDeadlineMillis);

async function tablesIn(db: Database): Promise<string[]> {
  const { rows } = await db.query<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'");
  return rows.map((row) => row.table_name);
}

test('the scripts checked here are the ones package.json runs', async () => {
  expect((await typeScriptScripts()).map(([name]) => name).sort()).toEqual(['bench', 'doctor', 'make-token', 'migrate', 'replay-events', 'rotate-database-password', 'rotate-webhook-secret', 'send-test-event']);
});

test('--help prints the usage on stdout, exits 0 and changes nothing (migrate --help leaves an empty database empty)', async () => {
  for (const [name, file] of await typeScriptScripts()) {
    const result = await runWithEmptyState(file, ['--help']);
    expect({ name, code: result.code, stderr: result.stderr }).toEqual({ name, code: 0, stderr: '' });
    expect(result.stdout).toMatch(new RegExp(`^Usage: npm run ${name}\\b`));
    expect(result.stdout).toContain('--help');
  }
  expect(await tablesIn(emptyDatabase)).toEqual([]);
  expect(await readdir(dataDir)).toEqual([]);
}, 90_000); // seven script processes, one after another, on a busy two-core machine

test('an unknown option prints the problem and the usage on stderr and exits 2, changing nothing', async () => {
  for (const [name, file] of await typeScriptScripts()) {
    const result = await runWithEmptyState(file, ['--no-such-option']);
    expect({ name, code: result.code, stdout: result.stdout }).toEqual({ name, code: 2, stdout: '' });
    expect(result.stderr).toContain(`${name}: Unknown option '--no-such-option'`);
    expect(result.stderr).toContain(`Usage: npm run ${name}`);
  }
  expect(await tablesIn(emptyDatabase)).toEqual([]);
  expect(await readdir(dataDir)).toEqual([]);
}, 90_000); // seven script processes, one after another, on a busy two-core machine

test('a malformed value is a usage error too (exit 2, naming the option)', async () => {
  const cases: Array<[string, string[], string]> = [
    ['scripts/bench/run.ts', ['--levels', '1,eight'], '--levels must be a whole number'],
    ['scripts/replay-events.ts', ['--since', 'yesterday'], '--since must look like 72h, 3d or an ISO date'],
    ['scripts/replay-events.ts', ['--event', 'ch_123'], '--event takes a Stripe event id'],
    ['scripts/replay-events.ts', ['--event', 'evt_1', '--since', '3d'], '--event and --since do not go together'],
    ['scripts/make-token.ts', ['--user', 'alice', '--ttl', 'forever'], '--ttl must be a duration'],
    ['scripts/make-token.ts', [], '--user is required'],
    ['scripts/send-test-event.ts', ['--type', 'gift'], '--type must be one of paid, unpaid'],
    ['scripts/send-test-event.ts', ['--credits', '2.5'], '--credits must be a whole number from 1'],
    ['scripts/send-test-event.ts', ['--user', ' '], '--user must not be empty'],
  ];
  for (const [file, args, message] of cases) {
    const result = await runWithEmptyState(file, args);
    expect({ file, code: result.code }).toEqual({ file, code: 2 });
    expect(result.stderr).toContain(message);
    expect(result.stderr).toContain('Usage:');
  }
  expect(await readdir(dataDir)).toEqual([]);
}, 60_000);

test('the service itself (npm start) answers --help the same way, and refuses any argument: its settings come from the environment', async () => {
  const help = await runWithEmptyState('service/main.ts', ['--help']);
  expect({ code: help.code, stderr: help.stderr }).toEqual({ code: 0, stderr: '' });
  expect(help.stdout).toMatch(/^Usage: npm start\b/);
  expect(help.stdout).toContain('--help');
  const unknown = await runWithEmptyState('service/main.ts', ['--port', '3001']);
  expect({ code: unknown.code, stdout: unknown.stdout }).toEqual({ code: 2, stdout: '' });
  expect(unknown.stderr).toContain("start: Unknown option '--port'");
  expect(unknown.stderr).toContain('Usage: npm start');
  expect(await tablesIn(emptyDatabase)).toEqual([]);
  expect(await readdir(dataDir)).toEqual([]);
}, 60_000);
