/**
 * rotate-webhook-secret on its own: what it does to the secrets file and what it says, with replicas that
 * do not answer. The rotations themselves, under load with real replicas and the local Stripe, are in
 * rotateWebhookSecretUnderLoad.test.ts.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startLocalStripe } from '../../localStripe';
import { freePort } from '../../service/freePort';
import { runScript } from '../../service/test/support/scriptProcess';
import { fingerprintSecret } from '../../service/webhook/secretFingerprint';
import { parseSecrets } from '../../service/webhook/secretStore';

const script = 'scripts/rotate-webhook-secret.ts';
const oldSecret = 'whsec_rotation_old_0000000000000000';
const newSecret = 'whsec_rotation_new_1111111111111111';

let dir: string;
let file: string;
let nobodyListens: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'rotate-'));
  file = path.join(dir, 'stripe_webhook_secret');
  await writeFile(file, `${oldSecret}\n`, { mode: 0o640 });
  nobodyListens = `http://127.0.0.1:${await freePort(['127.0.0.1'])}`;
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const env = (extra: NodeJS.ProcessEnv = {}) => ({ PATH: process.env.PATH, HOME: os.tmpdir(), ...extra });
const run = (args: string[], stdin = '', extraEnv: NodeJS.ProcessEnv = {}) => runScript(script, args, env(extraEnv), 30_000, stdin);
const secretsIn = async () => parseSecrets(await readFile(file, 'utf8'), file).map((secret) => secret.value);

test('the new secret from stdin goes in beside the old one, last, keeping the mode; unready replicas are named, exit 75; only fingerprints are printed', async () => {
  const result = await run(['--secrets-file', file, '--service-url', nobodyListens, '--wait-timeout', '1s', '--json'], `${newSecret}\n`);
  expect(result.code).toBe(75);
  expect(await secretsIn()).toEqual([oldSecret, newSecret]);
  expect((await stat(file)).mode & 0o777).toBe(0o640);
  expect(result.stderr).toContain(`added ${fingerprintSecret(newSecret)} beside ${fingerprintSecret(oldSecret)}`);
  expect(result.stderr).toContain(`${nobodyListens}/webhook-secrets did not answer`);
  expect(result.stderr).toContain('rerun this command to wait again');
  expect(JSON.parse(result.stdout)).toMatchObject({ ok: false, not_yet: expect.stringContaining('not every replica has loaded') });
  expect(result.stdout + result.stderr).not.toContain(newSecret);
  expect(result.stdout + result.stderr).not.toContain(oldSecret);
  // The rotation is recorded beside the file: fingerprints, no secret.
  const state = await readFile(`${file}.rotation.json`, 'utf8');
  expect(JSON.parse(state)).toMatchObject({ kind: 'dashboard-roll', new_fingerprint: fingerprintSecret(newSecret), old_fingerprints: [fingerprintSecret(oldSecret)], all_loaded_at: null, finished_at: null });
  expect(state).not.toContain(newSecret);
  expect((await stat(`${file}.rotation.json`)).mode & 0o777).toBe(0o600);

  // Run again, it resumes (the secret is not added twice); --finish refuses while the replicas are not ready.
  await run(['--secrets-file', file, '--service-url', nobodyListens, '--wait-timeout', '1s'], newSecret);
  expect(await secretsIn()).toEqual([oldSecret, newSecret]);
  const finish = await run(['--finish', '--secrets-file', file, '--service-url', nobodyListens]);
  expect(finish.code).toBe(75);
  expect(finish.stderr).toContain('run --finish again');
  expect(await secretsIn()).toEqual([oldSecret, newSecret]);
});

test('anything but one whsec_ secret on stdin is refused without being echoed, and changes nothing', async () => {
  for (const stdin of ['sk_live_not_a_webhook_secret\n', `${newSecret}\n${newSecret}x\n`]) {
    const result = await run(['--secrets-file', file, '--service-url', nobodyListens], stdin);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('stdin must hold one webhook signing secret');
    expect(result.stderr).not.toContain('sk_live_not_a_webhook_secret');
  }
  expect(await secretsIn()).toEqual([oldSecret]);
});

test('--dry-run says what it would add and changes nothing', async () => {
  const result = await run(['--dry-run', '--secrets-file', file, '--service-url', nobodyListens], newSecret);
  expect(result.code).toBe(0);
  expect(result.stderr).toContain(`would add ${fingerprintSecret(newSecret)}`);
  expect(await secretsIn()).toEqual([oldSecret]);
  await expect(stat(`${file}.rotation.json`)).rejects.toThrow(/ENOENT/);
});

test('--finish without a rotation in progress says how to start one, exit 1', async () => {
  const result = await run(['--finish', '--secrets-file', file, '--service-url', nobodyListens]);
  expect(result.code).toBe(1);
  expect(result.stderr).toContain('no rotation in progress');
});

test('--help prints the usage on stdout and exits 0, changing nothing', async () => {
  const result = await run(['--finish', '--help', '--secrets-file', file], newSecret);
  expect(result.code).toBe(0);
  expect(result.stdout).toMatch(/^Usage: npm run rotate-webhook-secret/);
  expect(result.stdout).toContain('--replace-endpoint');
  expect(await secretsIn()).toEqual([oldSecret]);
});

test('conflicting modes or a malformed value is a usage error, exit 2, changing nothing', async () => {
  for (const args of [['--finish', '--status', '--quiet-for', '10m'], ['--replace-endpoint', 'we_x', '--quiet-for', 'soon']]) {
    const result = await run([...args, '--secrets-file', file], newSecret);
    expect({ args, code: result.code }).toEqual({ args, code: 2 });
    expect(result.stderr).toContain('Usage:');
  }
  expect(await secretsIn()).toEqual([oldSecret]);
});

test('without --secrets-file it uses STRIPE_WEBHOOK_SECRET_FILE, else the development secret of npm start, and says which', async () => {
  const fromEnv = await run(['--status', '--service-url', nobodyListens], '', { STRIPE_WEBHOOK_SECRET_FILE: file });
  expect(fromEnv.code).toBe(0);
  expect(fromEnv.stderr).toContain(`secrets file: ${file} (STRIPE_WEBHOOK_SECRET_FILE)`);
  expect(fromEnv.stderr).toContain(`secrets in force (oldest first): ${fingerprintSecret(oldSecret)}`);

  await writeFile(path.join(dir, 'webhook-secret'), `${newSecret}\n`);
  const development = await run(['--status', '--service-url', nobodyListens], '', { DATA_DIR: dir });
  expect(development.stderr).toContain(`secrets file: ${path.join(dir, 'webhook-secret')} (the development secret of npm start`);
  expect(development.stderr).toContain(fingerprintSecret(newSecret));
});

test('--replace-endpoint --dry-run says what it would do and creates nothing; an endpoint Stripe does not have is named, exit 1', async () => {
  const local = await startLocalStripe();
  try {
    const endpoint = local.addWebhookEndpoint({ url: 'https://billing.example.com/api/v1/billing/stripe/webhook', enabledEvents: ['checkout.session.completed'], secret: oldSecret });
    const stripeEnv = { STRIPE_API_KEY: 'sk_test_rotation_dry_run', STRIPE_API_BASE: local.baseUrl };
    const dryRun = await run(['--replace-endpoint', endpoint.id, '--dry-run', '--secrets-file', file, '--service-url', nobodyListens], '', stripeEnv);
    expect(dryRun.code).toBe(0);
    expect(dryRun.stderr).toContain(`would create an endpoint for ${endpoint.url} (1 event types`);
    expect(local.webhookEndpoints().map((known) => known.id)).toEqual([endpoint.id]);
    expect(await secretsIn()).toEqual([oldSecret]);

    const unknown = await run(['--replace-endpoint', 'we_doesNotExist', '--secrets-file', file, '--service-url', nobodyListens], '', stripeEnv);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('Stripe has no webhook endpoint we_doesNotExist');
    expect(unknown.stdout + unknown.stderr).not.toContain('sk_test_rotation_dry_run');
  } finally {
    await local.close();
  }
});
