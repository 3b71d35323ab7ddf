/**
 * Both rotations of rotate-webhook-secret while the local Stripe keeps creating events and delivering them,
 * signed as Stripe signs them, through a round-robin balancer to two service processes on one database
 * that read one secrets file: first a Dashboard roll, then an endpoint replacement through the Stripe API.
 * Zero deliveries may be rejected (the local Stripe's delivery log and the replicas' metrics), nothing may
 * be applied twice, and the retired secret must be gone from the file and from every replica.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startLocalStripe, type LocalStripe } from '../../localStripe';
import { checkoutSession } from '../../localStripe/objects';
import { HANDLED_EVENT_TYPES } from '../../service/webhook/handledEventTypes';
import { fingerprintSecret } from '../../service/webhook/secretFingerprint';
import { parseSecrets } from '../../service/webhook/secretStore';
import { runScript } from '../../service/test/support/scriptProcess';
import { startServiceProcess, stopAllServiceProcesses, waitUntil, type ServiceProcess } from '../../service/test/support/serviceProcess';
import { startTcpProxy, type TcpProxy } from '../../service/test/support/tcpProxy';
import { createTestDatabase, type TestDatabase } from '../../service/test/support/testDatabase';

const script = 'scripts/rotate-webhook-secret.ts';
const firstSecret = 'whsec_underLoadFirst0000000000000000';
const rolledSecret = 'whsec_underLoadRolled111111111111111';
const eventIntervalMillis = 15;
const scriptDeadlineMillis = 60_000;

let database: TestDatabase;
let local: LocalStripe;
let replicas: ServiceProcess[];
let balancer: TcpProxy;
let dir: string;
let secretsFile: string;
let webhookUrl: string;
const published: string[] = [];
let publishing: NodeJS.Timeout | undefined;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'rotation-under-load-'));
  secretsFile = path.join(dir, 'stripe_webhook_secret');
  await writeFile(secretsFile, `${firstSecret}\n`, { mode: 0o600 });
  database = await createTestDatabase();
  local = await startLocalStripe({ delivery: { retryDelaysMillis: [100, 200], jitterMillis: 10 } });
  // STRIPE_API_BASE without a key: no Stripe calls (the events carry metadata.credits), no development Stripe.
  const options = { databaseUrl: database.url, webhookSecretFile: secretsFile, env: { STRIPE_MODE: 'test', STRIPE_API_BASE: local.baseUrl } };
  replicas = await Promise.all([startServiceProcess({ ...options, name: 'replica 0' }), startServiceProcess({ ...options, name: 'replica 1' })]);
  balancer = await startTcpProxy(replicas.map((replica) => replica.port));
  webhookUrl = `http://127.0.0.1:${balancer.port}/api/v1/billing/stripe/webhook`;
}, 120_000);

afterAll(async () => {
  if (publishing) clearInterval(publishing);
  await local?.close();
  await balancer?.close();
  await stopAllServiceProcesses();
  await database?.drop();
  await rm(dir, { recursive: true, force: true });
});

/** Something happens at Stripe every few milliseconds: a paid purchase of one credit by a new user. */
function startEvents(): void {
  publishing = setInterval(() => {
    const event = local.publishEvent('checkout.session.completed', checkoutSession({ client_reference_id: `user_load_${published.length}`, metadata: { credits: '1' } }));
    published.push(event.id);
  }, eventIntervalMillis);
}

async function stopEvents(): Promise<void> {
  clearInterval(publishing);
  publishing = undefined;
  await local.deliveriesSettled();
}

const serviceUrlArgs = () => replicas.flatMap((replica) => ['--service-url', replica.url]);
const rotate = (args: string[], stdin = '', env: NodeJS.ProcessEnv = {}) =>
  runScript(script, [...args, '--secrets-file', secretsFile, ...serviceUrlArgs(), '--quiet-for', '2s', '--wait-timeout', '30s', '--json'], { PATH: process.env.PATH, HOME: os.tmpdir(), ...env }, scriptDeadlineMillis, stdin);
const secretsInFile = async () => parseSecrets(await readFile(secretsFile, 'utf8'), secretsFile).map((secret) => secret.fingerprint);

interface Usage {
  fingerprint: string;
  loaded: boolean;
  verified_deliveries: number;
}
async function usageOf(replica: ServiceProcess): Promise<Usage[]> {
  return ((await (await fetch(`${replica.url}/webhook-secrets`)).json()) as { fingerprints: Usage[] }).fingerprints;
}

/** Whatever went wrong with a delivery: the local Stripe's log of attempts, and each replica's count of refused signatures. */
async function rejections(): Promise<{ attempts: number[]; signatureFailures: string[] }> {
  const attempts = local.deliveryAttempts.map((attempt) => attempt.status).filter((status) => status !== 200);
  const signatureFailures: string[] = [];
  for (const replica of replicas) {
    const metrics = await (await fetch(`${replica.url}/metrics`)).text();
    signatureFailures.push(...metrics.split('\n').filter((line) => line.startsWith('stripe_webhook_signature_failures_total{') && !line.endsWith(' 0')));
  }
  return { attempts, signatureFailures };
}

/** Every event published so far applied exactly once: one stripe_events row and one credit per event. */
async function appliedOnce(): Promise<{ events: number; rows: number; users: number; usersCreditedTwice: number }> {
  const { rows: events } = await database.db.query<{ count: number }>("SELECT count(*)::int AS count FROM stripe_events WHERE id = ANY($1) AND status = 'processed'", [published]);
  const { rows: users } = await database.db.query<{ users: number; twice: number }>(
    "SELECT count(*)::int AS users, count(*) FILTER (WHERE entries > 1)::int AS twice FROM (SELECT user_id, count(*) AS entries FROM credit_ledger WHERE user_id LIKE 'user_load_%' GROUP BY user_id) AS per_user",
  );
  return { events: published.length, rows: events[0]!.count, users: users[0]!.users, usersCreditedTwice: users[0]!.twice };
}

test('a Dashboard roll: --finish refuses while the old secret still verifies deliveries, then retires it; no delivery rejected, none applied twice', async () => {
  const endpoint = local.addWebhookEndpoint({ url: webhookUrl, enabledEvents: [...HANDLED_EVENT_TYPES], secret: firstSecret });
  startEvents();
  await waitUntil(() => local.deliveryAttempts.length >= 40, 20_000, 'deliveries before the rotation');

  // The operator adds the new secret before Stripe signs with it (the roll is not done yet): the script
  // waits until both replicas have it, and --finish refuses, since every delivery still needs the old one.
  const started = await rotate([], `${rolledSecret}\n`);
  expect(started.stderr).toContain('every replica has loaded');
  expect(started.code).toBe(0);
  expect(JSON.parse(started.stdout)).toMatchObject({ ok: true, action: 'dashboard-roll', new_fingerprint: fingerprintSecret(rolledSecret), old_fingerprints: [fingerprintSecret(firstSecret)] });
  await new Promise((resolve) => setTimeout(resolve, 2_500)); // longer than --quiet-for: only the old secret's use can hold it up
  const refused = await rotate(['--finish']);
  expect(refused.code).toBe(75);
  expect(refused.stderr).toContain(`verified a delivery with ${fingerprintSecret(firstSecret)}`);
  expect(refused.stderr).toContain('roll the secret in the Dashboard');
  expect(await secretsInFile()).toEqual([fingerprintSecret(firstSecret), fingerprintSecret(rolledSecret)]);

  // Now the roll: Stripe signs every delivery with both, and each replica credits them to the newest secret.
  local.rollWebhookEndpointSecret(endpoint.id, 24 * 3600_000, rolledSecret);
  let finished = await rotate(['--finish']);
  for (let attempt = 0; finished.code === 75 && attempt < 10; attempt++) finished = await rotate(['--finish']);
  expect(finished.stderr).toContain('retired');
  expect(finished.code).toBe(0);
  expect(JSON.parse(finished.stdout)).toMatchObject({ ok: true, retired: [fingerprintSecret(firstSecret)], in_force: [fingerprintSecret(rolledSecret)], because: 'quiet' });
  expect(await secretsInFile()).toEqual([fingerprintSecret(rolledSecret)]);
  const afterFinish = local.deliveryAttempts.length;
  await waitUntil(() => local.deliveryAttempts.length >= afterFinish + 40, 20_000, 'deliveries after the rotation');
  await stopEvents();

  for (const replica of replicas) {
    const usage = await usageOf(replica);
    expect(usage.find((entry) => entry.fingerprint === fingerprintSecret(firstSecret))).toMatchObject({ loaded: false });
    expect(usage.find((entry) => entry.fingerprint === fingerprintSecret(rolledSecret))).toMatchObject({ loaded: true, verified_deliveries: expect.any(Number) });
    expect(usage.find((entry) => entry.fingerprint === fingerprintSecret(rolledSecret))!.verified_deliveries).toBeGreaterThan(0);
  }
  expect(await rejections()).toEqual({ attempts: [], signatureFailures: [] });
  const applied = await appliedOnce();
  expect(applied).toEqual({ events: applied.events, rows: applied.events, users: applied.events, usersCreditedTwice: 0 });
  expect(started.stdout + started.stderr + finished.stdout + finished.stderr).not.toContain(rolledSecret);
  process.stdout.write(`\nDashboard roll: ${published.length} events, ${local.deliveryAttempts.length} delivery attempts, all 200; --finish refused once, then retired\n`);
}, 120_000);

test('an endpoint replacement through the Stripe API: events delivered to both endpoints apply once, the old endpoint and its secret are gone, and the Pulumi step is printed', async () => {
  const [oldEndpoint] = local.webhookEndpoints();
  startEvents();
  await waitUntil(() => local.deliveryAttempts.length >= 40, 20_000, 'deliveries before the replacement');
  const attemptsBefore = local.deliveryAttempts.length;

  const replaced = await rotate(['--replace-endpoint', oldEndpoint!.id], '', { STRIPE_API_KEY: 'sk_test_rotation_script', STRIPE_API_BASE: local.baseUrl });
  expect(replaced.stderr).toContain('retired');
  expect(replaced.code).toBe(0);
  const result = JSON.parse(replaced.stdout) as { new_endpoint_id: string; new_fingerprint: string; retired: string[]; in_force: string[]; next_steps: string[] };
  const [newEndpoint] = local.webhookEndpoints();
  expect(local.webhookEndpoints()).toHaveLength(1);
  expect(newEndpoint).toMatchObject({ id: result.new_endpoint_id, url: webhookUrl, enabled_events: oldEndpoint!.enabled_events, api_version: oldEndpoint!.api_version, status: 'enabled' });
  expect(result).toMatchObject({ retired: [fingerprintSecret(rolledSecret)], in_force: [fingerprintSecret(newEndpoint!.secret)], new_fingerprint: fingerprintSecret(newEndpoint!.secret) });
  expect(result.next_steps).toEqual([`pulumi config set stripeWebhookEndpointId ${newEndpoint!.id}`, `pulumi config set --secret stripeWebhookSecret < ${secretsFile}`, 'pulumi up']);
  expect(await secretsInFile()).toEqual([fingerprintSecret(newEndpoint!.secret)]);

  const afterReplacement = local.deliveryAttempts.length;
  await waitUntil(() => local.deliveryAttempts.length >= afterReplacement + 40, 20_000, 'deliveries after the replacement');
  await stopEvents();

  // While both endpoints existed, events went to both: the same event id twice, applied once.
  const during = local.deliveryAttempts.slice(attemptsBefore);
  const endpointsPerEvent = new Map<string, Set<string>>();
  for (const attempt of during) endpointsPerEvent.set(attempt.eventId, (endpointsPerEvent.get(attempt.eventId) ?? new Set()).add(attempt.endpointId));
  expect([...endpointsPerEvent.values()].filter((endpoints) => endpoints.size === 2).length).toBeGreaterThan(0);
  expect(await rejections()).toEqual({ attempts: [], signatureFailures: [] });
  const applied = await appliedOnce();
  expect(applied).toEqual({ events: applied.events, rows: applied.events, users: applied.events, usersCreditedTwice: 0 });
  for (const replica of replicas) {
    expect((await usageOf(replica)).filter((entry) => entry.loaded).map((entry) => entry.fingerprint)).toEqual([fingerprintSecret(newEndpoint!.secret)]);
  }
  expect(replaced.stdout + replaced.stderr).not.toContain(newEndpoint!.secret);
  expect(replaced.stdout + replaced.stderr).not.toContain('sk_test_rotation_script');
  const twice = [...endpointsPerEvent.values()].filter((endpoints) => endpoints.size === 2).length;
  process.stdout.write(`\nendpoint replacement: ${during.length} delivery attempts from the start of the rotation, ${twice} events delivered by both endpoints and applied once, all 200\n`);
}, 120_000);
