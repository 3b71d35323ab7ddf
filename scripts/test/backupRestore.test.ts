/**
 * scripts/backup-database and scripts/restore-database, and the stack's scheduled backup script, for
 * real: pg_dump and pg_restore against the local PostgreSQL. The stack's container is reached through
 * `docker exec`; here a `docker` stand-in on PATH runs the command it is given on this machine instead.
 * Every PostgreSQL program the scripts start is recorded (a stand-in that logs its arguments and runs the
 * real one), to check that no password is ever on a command line.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connectDatabase, type Database, type Queryable } from '../../service/db';
import { createLogger } from '../../service/logger';
import { backupScript, dumpNamePattern } from '../../infra/backupSchedule';
import { checkInvariants, invariantsHold } from '../../service/test/support/invariants';
import { startPrivatePostgres } from '../../service/test/support/privatePostgres';
import { charge, checkoutSession, stripeEvent } from '../../service/test/support/stripeFixtures';
import { deliver, startTestApp } from '../../service/test/support/testApp';
import { createTestDatabase, databaseUrl, testServerUrl, type TestDatabase } from '../../service/test/support/testDatabase';

const logger = createLogger('silent');
const repoRoot = path.resolve(__dirname, '..', '..');
const password = 'Pa:ss\\w0rd@with/odd%chars';

let source: TestDatabase;
let dir: string;
let shims: string;
let commandLog: string;
const created: string[] = [];

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function script(name: string, args: string[], options: { input?: string; cwd?: string } = {}): Run {
  const result = spawnSync(path.join(repoRoot, 'scripts', name), args, {
    cwd: options.cwd ?? dir,
    input: options.input ?? '',
    encoding: 'utf8',
    env: { PATH: `${shims}:${process.env.PATH}`, HOME: dir, COMMAND_LOG: commandLog },
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** The test server's URL for a database, with a password in it (the local server trusts loopback, so any works). */
function urlWithPassword(database: string): string {
  const url = new URL(databaseUrl(database));
  url.password = encodeURIComponent(password);
  return url.toString();
}

async function emptyDatabase(): Promise<{ name: string; db: Database }> {
  const name = `credits_restore_${randomBytes(6).toString('hex')}`;
  const admin = connectDatabase({ connectionString: testServerUrl, poolMax: 1, logger });
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.close();
  created.push(name);
  return { name, db: connectDatabase({ connectionString: databaseUrl(name), poolMax: 2, logger }) };
}

/** What a restore must bring back: balances, the ledger, the events. */
async function snapshot(db: Queryable): Promise<unknown> {
  const balances = await db.query('SELECT user_id, purchased_credits_balance, credits_remaining FROM service_subscriptions ORDER BY user_id');
  const ledger = await db.query('SELECT count(*)::int AS entries, coalesce(sum(delta), 0)::int AS total FROM credit_ledger');
  const events = await db.query('SELECT id, status FROM stripe_events ORDER BY id');
  return { balances: balances.rows, ledger: ledger.rows, events: events.rows };
}

function writeShim(name: string, body: string): void {
  writeFileSync(path.join(shims, name), `#!/usr/bin/env bash\n${body}\n`);
  chmodSync(path.join(shims, name), 0o755);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'backup-restore-'));
  shims = path.join(dir, 'bin');
  mkdirSync(shims);
  commandLog = path.join(dir, 'commands.log');
  for (const program of ['pg_dump', 'pg_restore', 'psql']) {
    writeShim(program, `printf '%s %s\\n' "${program}" "$*" >> "$COMMAND_LOG"\nexec /usr/bin/${program} "$@"`);
  }
  // `docker exec [-i] [-u USER] CONTAINER PROGRAM ARGS...`, run here: the "container" is the local server.
  writeShim(
    'docker',
    `printf 'docker %s\\n' "$*" >> "$COMMAND_LOG"
[[ $1 == exec ]] || { echo "docker stand-in: only exec" >&2; exit 64; }
shift
while [[ $1 == -* ]]; do case $1 in -i) shift ;; -u) shift 2 ;; *) exit 64 ;; esac; done
shift
PGHOST=127.0.0.1 PGPORT=${new URL(testServerUrl).port || '5432'} exec "$@"`,
  );

  source = await createTestDatabase();
  const app = await startTestApp(source.db);
  try {
    for (const [userId, credits] of [['user_backup_a', 500], ['user_backup_b', 120], ['user_backup_c', 75]] as const) {
      const session = checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) }, payment_intent: `pi_${userId}` });
      expect((await deliver(app.webhookUrl, stripeEvent('checkout.session.completed', session))).status).toBe(200);
    }
    const refund = charge({ payment_intent: 'pi_user_backup_a', amount: 1000, amount_refunded: 500, refunded: false });
    expect((await deliver(app.webhookUrl, stripeEvent('charge.refunded', refund))).status).toBe(200);
  } finally {
    await app.close();
  }
}, 60_000);

afterAll(async () => {
  await source?.drop();
  const admin = connectDatabase({ connectionString: testServerUrl, poolMax: 1, logger });
  for (const name of created) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.close();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => writeFileSync(commandLog, ''));

/** No password in any program's arguments, and no pgpass file left behind. */
function expectNoPasswordOnACommandLine(): void {
  const log = readFileSync(commandLog, 'utf8');
  expect(log).not.toBe('');
  for (const fragment of [password, encodeURIComponent(password), 'Pa:ss']) expect(log).not.toContain(fragment);
}

test.each(['backup-database', 'restore-database'])('%s --help prints its usage and exits 0, touching nothing', (name) => {
  const run = script(name, ['--help']);
  expect(run.status).toBe(0);
  expect(run.stdout).toMatch(new RegExp(`^Usage: scripts/${name} `));
  expect(run.stdout).toContain('--dry-run');
  expect(readFileSync(commandLog, 'utf8')).toBe('');
  expect(existsSync(path.join(dir, 'backups'))).toBe(false);
});

test.each(['backup-database', 'restore-database'])('%s with an unknown option prints its usage and exits 2', (name) => {
  const run = script(name, ['--unknown', 'x']);
  expect(run.status).toBe(2);
  expect(run.stderr).toContain('unknown option: --unknown');
});

test('an external database (URL on stdin) round-trips: backup, then restore into an empty database gives the same credits', async () => {
  const dump = path.join(dir, 'external.dump');
  const backup = script('backup-database', ['--database-url-file', '-', '--output', dump], { input: `${urlWithPassword(source.url.split('/').pop() as string)}\n` });
  expect(backup).toMatchObject({ status: 0 });
  expect(backup.stdout).toMatch(/^dumped postgresql:\/\/postgres@127\.0\.0\.1:5432\/credits_test_\w+ into .*external\.dump \(\d+ bytes\)/);
  expect(readFileSync(dump).subarray(0, 5).toString()).toBe('PGDMP');
  expect(readdirSync(dir).filter((file) => file.endsWith('.partial'))).toEqual([]);
  expect(statSync(dump).mode & 0o077).toBe(0); // readable by its owner only

  const target = await emptyDatabase();
  const urlFile = path.join(dir, 'target-url');
  writeFileSync(urlFile, urlWithPassword(target.name), { mode: 0o600 });
  const restore = script('restore-database', ['--database-url-file', urlFile, dump]);
  expect(restore).toMatchObject({ status: 0 });
  expect(restore.stdout).toContain('into the empty database');

  expect(await snapshot(target.db)).toEqual(await snapshot(source.db));
  expect(await checkInvariants(target.db)).toEqual(invariantsHold);
  expectNoPasswordOnACommandLine();
  await target.db.close();
});

test('the password in the URL reaches a server that checks it (SCRAM), odd characters and all, through the pgpass file only', async () => {
  const server = await startPrivatePostgres({ hostAuth: 'scram-sha-256' });
  try {
    const admin = connectDatabase({ connectionString: server.socketUrl(), poolMax: 1, logger });
    await admin.query(`CREATE ROLE backup_reader LOGIN PASSWORD '${password.replace(/'/g, "''")}'`);
    await admin.close();
    const url = (secret: string) => `postgres://backup_reader:${encodeURIComponent(secret)}@127.0.0.1:${server.port}/postgres`;
    const dump = path.join(dir, 'checked.dump');

    expect(script('backup-database', ['--database-url-file', '-', '--output', dump], { input: url(password) })).toMatchObject({ status: 0 });
    const wrong = script('backup-database', ['--database-url-file', '-', '--output', path.join(dir, 'wrong.dump')], { input: url('not-the-password') });
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toContain('pg_dump of postgresql://backup_reader@127.0.0.1');
    expect(existsSync(path.join(dir, 'wrong.dump'))).toBe(false);
    const scheduled = path.join(dir, 'scheduled-checked');
    mkdirSync(scheduled);
    expect(runBackup(scheduled, 'postgres', { host: '127.0.0.1', port: String(server.port), user: 'backup_reader' }).status).toBe(0);
    expect(readdirSync(scheduled)).toEqual([expect.stringMatching(dumpNamePattern)]);
    expectNoPasswordOnACommandLine();
  } finally {
    await server.destroy();
  }
}, 60_000);

test('a database that holds tables is not overwritten without --force; with it, it is replaced by the dump', async () => {
  const dump = path.join(dir, 'force.dump');
  expect(script('backup-database', ['--database-url-file', '-', '--output', dump], { input: urlWithPassword(source.url.split('/').pop() as string) }).status).toBe(0);
  const target = await emptyDatabase();
  const urlFile = path.join(dir, 'force-url');
  writeFileSync(urlFile, urlWithPassword(target.name));
  expect(script('restore-database', ['--database-url-file', urlFile, dump]).status).toBe(0);
  await target.db.query("UPDATE stripe_events SET status = 'failed' WHERE id = (SELECT min(id) FROM stripe_events)"); // written after the backup
  const changed = await snapshot(target.db);
  expect(changed).not.toEqual(await snapshot(source.db));

  const refused = script('restore-database', ['--database-url-file', urlFile, dump]);
  expect(refused.status).toBe(3);
  expect(refused.stderr).toMatch(/holds \d+ tables, views or sequences; restoring would replace them/);
  expect(refused.stderr).toContain('rerun with --force');
  expect(await snapshot(target.db)).toEqual(changed);

  const dryRun = script('restore-database', ['--database-url-file', urlFile, '--force', '--dry-run', dump]);
  expect(dryRun).toMatchObject({ status: 0, stdout: expect.stringMatching(/^would restore .* replacing its \d+ tables/) });
  expect(await snapshot(target.db)).toEqual(changed);

  const forced = script('restore-database', ['--database-url-file', urlFile, '--force', dump]);
  expect(forced.status).toBe(0);
  expect(await snapshot(target.db)).toEqual(await snapshot(source.db));
  await target.db.close();
});

test('the stack’s container round-trips through docker exec, as the server’s own user, with nothing secret to pass', async () => {
  const sourceName = source.url.split('/').pop() as string;
  const dump = path.join(dir, 'container.dump');
  const container = ['--container', 'stripe-credits-test-postgres', '--user', 'postgres'];
  expect(script('backup-database', [...container, '--database', sourceName, '--output', dump])).toMatchObject({ status: 0 });
  const target = await emptyDatabase();
  expect(script('restore-database', [...container, '--database', target.name, dump])).toMatchObject({ status: 0 });

  expect(await snapshot(target.db)).toEqual(await snapshot(source.db));
  const log = readFileSync(commandLog, 'utf8');
  expect(log).toContain(`docker exec -i -u postgres stripe-credits-test-postgres pg_dump --username=postgres --dbname=${sourceName} --format=custom`);
  expect(log).toMatch(/docker exec -i -u postgres stripe-credits-test-postgres pg_restore --username=postgres --dbname=\w+ --single-transaction/);
  await target.db.close();
});

test('--dry-run says what it would dump and writes nothing; --stack names the stack’s container', () => {
  const run = script('backup-database', ['--stack', 'live', '--docker-host', 'ssh://deploy@docker.example.com', '--dry-run']);
  expect(run).toMatchObject({ status: 0 });
  expect(run.stdout).toMatch(/^would dump database stripe_credits in container stripe-credits-live-postgres on ssh:\/\/deploy@docker\.example\.com into backups\/stripe_credits-\d{8}T\d{6}Z\.dump/);
  expect(readFileSync(commandLog, 'utf8')).toBe('');
  expect(existsSync(path.join(dir, 'backups'))).toBe(false);
});

test('a file that is not a dump is refused before anything is touched', () => {
  const notADump = path.join(dir, 'not-a-dump.sql');
  writeFileSync(notADump, 'DROP TABLE credit_ledger;');
  const run = script('restore-database', ['--container', 'x', notADump]);
  expect(run.status).toBe(1);
  expect(run.stderr).toContain('is not a pg_dump custom-format archive');
  expect(readFileSync(commandLog, 'utf8')).toBe('');
});

/** Runs the backup container's script once, as the container would (its settings in libpq's variables). */
function runBackup(target: string, database: string, server = { host: new URL(testServerUrl).hostname, port: new URL(testServerUrl).port || '5432', user: decodeURIComponent(new URL(testServerUrl).username) || 'postgres' }) {
  const scriptFile = path.join(dir, 'backup.sh');
  writeFileSync(scriptFile, backupScript());
  const passwordFile = path.join(dir, 'postgres_password');
  writeFileSync(passwordFile, `${password}\n`);
  return spawnSync('sh', [scriptFile, target, '--once'], {
    encoding: 'utf8',
    env: {
      PATH: `${shims}:${process.env.PATH}`,
      COMMAND_LOG: commandLog,
      PGHOST: server.host,
      PGPORT: server.port,
      PGUSER: server.user,
      PGDATABASE: database,
      BACKUP_INTERVAL_SECONDS: '86400',
      BACKUP_RETENTION_DAYS: '7',
      BACKUP_PASSWORD_FILE: passwordFile,
    },
    timeout: 60_000,
  });
}


describe('the scheduled backup container’s script', () => {
  test('writes a whole dump, deletes the ones past retention and leftovers, and its dump restores', async () => {
    const target = path.join(dir, 'scheduled');
    mkdirSync(target);
    const age = (file: string, days: number) => {
      writeFileSync(path.join(target, file), 'old');
      const when = new Date(Date.now() - days * 86_400_000);
      utimesSync(path.join(target, file), when, when);
    };
    age('stripe_credits-20200101T000000Z.dump', 8);
    age('stripe_credits-20200102T000000Z.dump', 6);
    age('.stripe_credits-20200103T000000Z.dump.partial', 1);
    age('unrelated.txt', 30);

    const run = runBackup(target, source.url.split('/').pop() as string);

    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^backup stripe_credits-\d{8}T\d{6}Z\.dump: \d+ bytes\ndeleted stripe_credits-20200101T000000Z\.dump\n$/);
    const files = readdirSync(target).sort();
    const fresh = files.filter((file) => dumpNamePattern.test(file) && !file.startsWith('stripe_credits-2020'));
    expect(fresh).toHaveLength(1);
    expect(files).toEqual([...fresh, 'stripe_credits-20200102T000000Z.dump', 'unrelated.txt'].sort());
    expectNoPasswordOnACommandLine();

    const restored = await emptyDatabase();
    const urlFile = path.join(dir, 'scheduled-url');
    writeFileSync(urlFile, databaseUrl(restored.name));
    expect(script('restore-database', ['--database-url-file', urlFile, path.join(target, fresh[0] as string)]).status).toBe(0);
    expect(await snapshot(restored.db)).toEqual(await snapshot(source.db));
    await restored.db.close();
  });

  test('a failed dump leaves no file and says when it tries again', () => {
    const target = path.join(dir, 'scheduled-failing');
    mkdirSync(target);
    const run = runBackup(target, 'no_such_database');
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain('backup failed (pg_dump exit 1): the next attempt is in 86400 s');
    expect(readdirSync(target)).toEqual([]);
  });
});
