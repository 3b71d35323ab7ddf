/**
 * `npm start` with no settings, as a newcomer runs it: an embedded PostgreSQL under the data dir, made-up
 * development secrets, the user routes on, one service per data dir. The service is a real process; the
 * database address it logs is used with the real `psql`, and tokens come from the real `make-token` script.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { dataDirLockName } from '../dataDirLock';
import { devSessionKeyPath, devWebhookSecretPath } from '../devSecret';
import { isProcessAlive } from '../processAlive';
import { parseSecrets } from '../webhook/secretStore';
import { runScript } from './support/scriptProcess';
import { startServiceProcess, stopAllServiceProcesses, waitUntil, type ServiceProcess } from './support/serviceProcess';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';
import { deliver } from './support/testApp';

const run = promisify(execFile);
const balancePath = '/api/v1/billing/credits';
const stopDeadlineMillis = 15_000;

let dataDir: string;
beforeEach(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'development-start-'));
  // As root the embedded PostgreSQL runs as the `postgres` user: a data dir it can enter keeps the cluster itself.
  await chmod(dataDir, 0o755);
});
afterEach(async () => {
  await stopAllServiceProcesses();
  await rm(dataDir, { recursive: true, force: true });
});

/** `npm start` with nothing configured but where its data goes. */
function startDevelopmentService(name: string): Promise<ServiceProcess> {
  return startServiceProcess({ name, databaseUrl: '', env: { DATABASE_URL: '', DATA_DIR: dataDir } });
}

const messages = (service: ServiceProcess) => service.logLines.map((line) => (JSON.parse(line) as { msg: string }).msg);

async function makeToken(user: string): Promise<string> {
  const made = await runScript('scripts/make-token.ts', ['--user', user], { PATH: process.env.PATH, DATA_DIR: dataDir });
  expect(made).toMatchObject({ code: 0, stderr: '' });
  return made.stdout.trim();
}

/** The embedded server's pid, from its postmaster.pid. */
function embeddedPostgresPid(): number {
  return Number(readFileSync(path.join(dataDir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0]);
}

test('with no settings: an embedded PostgreSQL at a logged address, development secrets, user routes with make-token; a restart reuses them and says so', async () => {
  const first = await startDevelopmentService('first start');
  const webhookSecret = parseSecrets(await readFile(devWebhookSecretPath(dataDir), 'utf8'), 'webhook-secret')[0]!.value;
  const sessionKey = (await readFile(devSessionKeyPath(dataDir), 'utf8')).trim();
  expect(Buffer.from(sessionKey, 'hex')).toHaveLength(32);
  expect(messages(first)).toEqual(
    expect.arrayContaining([
      'creating the embedded PostgreSQL (first start only)',
      expect.stringMatching(/^embedded PostgreSQL ready: psql postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/),
      expect.stringContaining(`generated the development secret in ${devWebhookSecretPath(dataDir)}`),
      expect.stringContaining(`generated the development session key in ${devSessionKeyPath(dataDir)}`),
    ]),
  );
  for (const secret of [webhookSecret, sessionKey]) expect(first.logLines.join('\n')).not.toContain(secret);

  const delivered = await deliver(first.webhookUrl, stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'alice', metadata: { credits: '250' } })), {
    secrets: [webhookSecret],
  });
  expect(delivered.body.status).toBe('processed');
  const token = await makeToken('alice');
  const balance = await fetch(`${first.url}${balancePath}`, { headers: { Authorization: `Bearer ${token}` } });
  expect(balance.status).toBe(200);
  expect(await balance.json()).toMatchObject({ user_id: 'alice', purchased_credits_balance: 250, total_credits: 250 });

  // The logged address is one psql can use, for the README's troubleshooting queries.
  const address = /psql (postgres:\/\/\S+)/.exec(messages(first).join('\n'))![1]!;
  const { stdout } = await run('psql', [address, '-Atc', "SELECT count(*) FROM stripe_events WHERE status = 'processed'"], { timeout: 20_000 });
  expect(stdout.trim()).toBe('1');

  const serverPid = embeddedPostgresPid();
  expect(await first.stop()).toEqual({ code: 0, signal: null });
  expect(isProcessAlive(serverPid)).toBe(false);
  expect(existsSync(path.join(dataDir, dataDirLockName))).toBe(false);

  const second = await startDevelopmentService('restart');
  expect(messages(second)).toEqual(
    expect.arrayContaining([expect.stringContaining('reused the development secret'), expect.stringContaining('reused the development session key')]),
  );
  expect(messages(second).join('\n')).not.toMatch(/generated|creating the embedded PostgreSQL/);
  const again = await fetch(`${second.url}${balancePath}`, { headers: { Authorization: `Bearer ${token}` } });
  expect(await again.json()).toMatchObject({ user_id: 'alice', purchased_credits_balance: 250 });
}, 90_000);

test('a second npm start on the same data dir is refused; after a kill, the next start takes over the lock and the PostgreSQL left behind', async () => {
  const first = await startDevelopmentService('first');
  await expect(startDevelopmentService('second')).rejects.toThrow(new RegExp(`exit code 73[^]*another npm start \\(pid ${first.pid}\\) is using`));
  expect(first.isRunning()).toBe(true);

  const leftBehind = embeddedPostgresPid();
  first.kill('SIGKILL');
  await first.exited;
  try {
    expect(isProcessAlive(leftBehind)).toBe(true);
    const next = await startDevelopmentService('after the kill');
    expect(messages(next)).toContain('stopping the embedded PostgreSQL left running by an earlier npm start that did not exit cleanly');
    expect(isProcessAlive(leftBehind)).toBe(false);
    expect((await fetch(`${next.url}/readyz`)).status).toBe(200);
  } finally {
    if (isProcessAlive(leftBehind)) process.kill(leftBehind, 'SIGKILL');
    await waitUntil(() => !isProcessAlive(leftBehind), stopDeadlineMillis, 'the left-behind PostgreSQL to stop');
  }
}, 90_000);
