/**
 * Rotating the database password while the service runs (README, Deploy): ALTER ROLE first, then the
 * password file; the service reads the file for every new connection. Against a PostgreSQL server that
 * checks passwords for real (SCRAM over TCP), with the service as a child process.
 */
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connectDatabase, type Database } from '../db';
import { createLogger } from '../logger';
import { startPrivatePostgres, type PrivatePostgres } from './support/privatePostgres';
import { runScript } from './support/scriptProcess';
import { startServiceProcess, stopAllServiceProcesses, waitUntil, type ServiceProcess } from './support/serviceProcess';
import { checkoutSession, signedDelivery, stripeEvent } from './support/stripeFixtures';

const logger = createLogger('silent');
const webhookSecret = 'whsec_passwordRotationSecret';
const role = 'credits_app';

let server: PrivatePostgres;
let admin: Database;
let dir: string;
let passwordFile: string;
let service: ServiceProcess;

/** Replaces the file by rename, as the secret writer does. */
function writePassword(password: string): void {
  const next = path.join(dir, '.database_password.new');
  writeFileSync(next, `${password}\n`, { mode: 0o400 });
  renameSync(next, passwordFile);
}

async function deliverPurchase(userId: string): Promise<number> {
  const delivery = signedDelivery(stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: '1' } })), [webhookSecret]);
  const response = await fetch(service.webhookUrl, { method: 'POST', headers: delivery.headers, body: delivery.body });
  return response.status;
}

/** Whether `password` opens a new connection as the service's role. */
async function canConnectWith(password: string): Promise<boolean> {
  const probe = connectDatabase({ connectionString: `postgres://${role}:${encodeURIComponent(password)}@127.0.0.1:${server.port}/credits`, poolMax: 1, logger });
  try {
    await probe.ping();
    return true;
  } catch {
    return false;
  } finally {
    await probe.close();
  }
}

beforeAll(async () => {
  server = await startPrivatePostgres({ hostAuth: 'scram-sha-256' });
  admin = connectDatabase({ connectionString: server.socketUrl(), poolMax: 2, logger });
  await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'first-password'`);
  await admin.query(`CREATE DATABASE credits OWNER ${role}`);
  dir = mkdtempSync(path.join(os.tmpdir(), 'password-rotation-'));
  passwordFile = path.join(dir, 'database_password');
  writePassword('first-password');
  service = await startServiceProcess({
    name: 'rotation service',
    // No password in the URL: the file holds it.
    databaseUrl: `postgres://${role}@127.0.0.1:${server.port}/credits`,
    webhookSecret,
    env: { DATABASE_PASSWORD_FILE: passwordFile },
  });
}, 120_000);

afterAll(async () => {
  await stopAllServiceProcesses();
  await admin?.close();
  await server?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

test('ALTER ROLE, then the file: the running service opens its new connections with the new password, no delivery fails', async () => {
  expect(await deliverPurchase('user_rotation')).toBe(200);

  await admin.query(`ALTER ROLE ${role} PASSWORD 'second-password'`);
  writePassword('second-password');
  // The pool's idle connections end (as they do after idleTimeoutMillis, or a database restart): the next
  // requests need new connections, and the notification listener reconnects.
  const rotatedAt = new Date();
  await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND state = $2', [role, 'idle']);
  await waitUntil(async () => (await admin.query('SELECT 1 FROM pg_stat_activity WHERE usename = $1', [role])).rowCount === 0, 10_000, 'idle connections closed');

  const statuses: number[] = [];
  for (let round = 0; round < 5; round++) {
    statuses.push(...(await Promise.all(Array.from({ length: 8 }, (_, index) => deliverPurchase(`user_rotation_${index % 4}`)))));
  }

  expect(new Set(statuses)).toEqual(new Set([200]));
  const { rows } = await admin.query<{ count: number }>(
    'SELECT count(*)::int AS count FROM pg_stat_activity WHERE usename = $1 AND backend_start > $2',
    [role, rotatedAt],
  );
  expect(rows[0]?.count).toBeGreaterThan(1); // new connections, several at once, made with the new password
  await expect(canConnectWith('first-password')).resolves.toBe(false);
  await expect(canConnectWith('second-password')).resolves.toBe(true);
  await service.waitForLog((line) => line.includes('database notification') || line.includes('idle database connection lost'));
  expect(service.logLines.join('\n')).not.toContain('second-password');
});

/** Purchases delivered back to back by a few senders until stopped; every answer's status. */
function deliverContinuously(): { answered(): number; stop(): Promise<number[]> } {
  const statuses: number[] = [];
  let flowing = true;
  const senders = Array.from({ length: 4 }, async (_, index) => {
    for (let round = 0; flowing; round++) statuses.push(await deliverPurchase(`user_flow_${index}_${round % 3}`));
  });
  return {
    answered: () => statuses.length,
    async stop() {
      flowing = false;
      await Promise.all(senders);
      return statuses;
    },
  };
}

/**
 * Ends every connection of the service's role while nothing is in flight: the next deliveries need new ones, which
 * log in with the file's password. Waits for those connections to be gone, not for the role to have none: the
 * notification listener reconnects a second later, already a new connection.
 */
async function dropServiceConnections(): Promise<void> {
  const { rows } = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE usename = $1', [role]);
  const ended = rows.map((row) => row.pid);
  await admin.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [ended]);
  await waitUntil(async () => (await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1)', [ended])).rowCount === 0, 10_000, 'the connections closed');
}

test('with a second between ALTER ROLE and the file, new connections wait for the file instead of failing: no delivery fails', async () => {
  await admin.query(`ALTER ROLE ${role} PASSWORD 'third-password'`);
  await dropServiceConnections();
  const flow = deliverContinuously();
  await new Promise((resolve) => setTimeout(resolve, 1_000)); // the operator between the two steps
  writePassword('third-password');
  // Deliveries go on after the file is there: a dozen answers more, however slow the machine is today.
  const answeredAtFile = flow.answered();
  await waitUntil(() => flow.answered() >= answeredAtFile + 12, 20_000, 'deliveries after the new password file');
  const statuses = await flow.stop();

  expect(statuses.length).toBeGreaterThanOrEqual(12);
  expect(statuses.filter((status) => status !== 200)).toEqual([]);
  await service.waitForLog((line) => line.includes('database refused the password'), 5_000); // it did have to wait
  await expect(canConnectWith('second-password')).resolves.toBe(false);
});

test('rotate-database-password changes the role and the file one right after the other, as the role itself, printing no password', async () => {
  const newPassword = 'fourth-password-0123456789abcdef';
  const flow = deliverContinuously();
  const result = await runScript(
    'scripts/rotate-database-password.ts',
    ['--json'],
    { PATH: process.env.PATH, HOME: os.tmpdir(), DATABASE_URL: `postgres://${role}@127.0.0.1:${server.port}/credits`, DATABASE_PASSWORD_FILE: passwordFile },
    30_000,
    `${newPassword}\n`,
  );
  const statuses = await flow.stop();
  await dropServiceConnections();
  for (let index = 0; index < 4; index++) statuses.push(await deliverPurchase(`user_after_script_${index}`)); // new connections

  expect(result.stderr).toContain(`role ${role} has a new password`);
  expect(result.code).toBe(0);
  expect(JSON.parse(result.stdout)).toEqual({ ok: true, role, password_file: passwordFile });
  expect(result.stdout + result.stderr).not.toContain(newPassword);
  expect(readFileSync(passwordFile, 'utf8')).toBe(`${newPassword}\n`);
  expect(statSync(passwordFile).mode & 0o777).toBe(0o400);
  await expect(canConnectWith('third-password')).resolves.toBe(false);
  await expect(canConnectWith(newPassword)).resolves.toBe(true);
  expect(statuses.filter((status) => status !== 200)).toEqual([]);
  expect(service.logLines.join('\n')).not.toContain(newPassword);
});

test('a password the database keeps refusing past the window answers 503 with Retry-After, so Stripe retries; the file fixed, deliveries flow again', async () => {
  await admin.query(`ALTER ROLE ${role} PASSWORD 'fifth-password'`);
  await dropServiceConnections();
  const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_refused', metadata: { credits: '1' } }));
  const delivery = signedDelivery(event, [webhookSecret]);
  const refused = await fetch(service.webhookUrl, { method: 'POST', headers: delivery.headers, body: delivery.body });
  expect(refused.status).toBe(503);
  expect(refused.headers.get('retry-after')).toBe('5');
  expect(await refused.json()).toMatchObject({ received: false, error: 'database_unavailable' });

  writePassword('fifth-password');
  const retried = await fetch(service.webhookUrl, { method: 'POST', headers: delivery.headers, body: delivery.body });
  expect(retried.status).toBe(200);
  expect(service.logLines.join('\n')).not.toContain('fifth-password');
}, 60_000);
