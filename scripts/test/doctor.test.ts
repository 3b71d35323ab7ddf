/**
 * `npm run doctor` as a real process against real ones: the service (its own port), the local Stripe and
 * its deliveries, PostgreSQL, and Debian's nginx (nginx -t on the config the deployment renders, and a
 * running nginx for TLS). A healthy setup passes every check; each broken variant is found by its own check,
 * with the fix it needs.
 */
import { chmod, mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Stripe from 'stripe';
import { startLocalStripe, type LocalStripe, type WebhookEndpointWithSecret } from '../../localStripe';
import { charge, dispute, stripeEvent } from '../../localStripe/objects';
import { edgeConfig } from '../../infra/test/support/edge';
import { startDnsServer, type DnsServer } from '../../infra/test/support/dnsServer';
import { startNginx, type NginxProcess } from '../../infra/test/support/nginxProcess';
import { connectDatabase } from '../../service/db';
import { freePort } from '../../service/freePort';
import { createLogger } from '../../service/logger';
import { stripeApiVersion } from '../../service/stripeApi';
import { runScript, type ScriptRun } from '../../service/test/support/scriptProcess';
import { buildService, startServiceProcess, waitUntil, type ServiceProcess } from '../../service/test/support/serviceProcess';
import { createTestDatabase, databaseUrl, testServerUrl, type TestDatabase } from '../../service/test/support/testDatabase';
import { HANDLED_EVENT_TYPES } from '../../service/webhook/handledEventTypes';
import { fingerprintSecret } from '../../service/webhook/secretFingerprint';

const endpointSecret = `whsec_doctorEndpoint${Math.random().toString(36).slice(2)}`;
const otherSecret = `whsec_doctorOther${Math.random().toString(36).slice(2)}`;
const testKey = 'sk_test_doctorKey0123456789';
const liveKey = 'sk_live_doctorKey0123456789';
const nginxContainer = 'stripe-credits-test-nginx';

interface Check {
  id: string;
  title: string;
  status: 'ok' | 'failed' | 'skipped';
  detail: string;
  fix?: string;
  items?: string[];
  data?: unknown;
}

let dir: string;
let database: TestDatabase;
let stripe: LocalStripe;
let client: Stripe;
let service: ServiceProcess;
let endpoint: WebhookEndpointWithSecret;
let secretFile: string;
let keyFile: string;
let nginxConfigFile: string;
let fakeDocker: string;
let dockerCalls: string;
let stackOutputsFile: string;
const outputs: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'doctor-'));
  const secrets = path.join(dir, 'secrets');
  await mkdir(secrets, { mode: 0o700 });
  secretFile = path.join(secrets, 'stripe_webhook_secret');
  await writeFile(secretFile, `${endpointSecret}\n`, { mode: 0o600 });
  keyFile = path.join(secrets, 'stripe_api_key');
  await writeFile(keyFile, `${testKey}\n`, { mode: 0o600 });

  database = await createTestDatabase();
  stripe = await startLocalStripe({ delivery: { retryDelaysMillis: [30, 60], jitterMillis: 10 } });
  client = new Stripe(testKey, { ...stripe.stripeConfig, maxNetworkRetries: 0 });
  service = await startServiceProcess({
    name: 'service under the doctor',
    fromSources: true,
    databaseUrl: database.url,
    webhookSecretFile: secretFile,
    env: { STRIPE_API_BASE: stripe.baseUrl, STRIPE_API_KEY: testKey },
  });
  endpoint = stripe.addWebhookEndpoint({ url: service.webhookUrl, enabledEvents: [...HANDLED_EVENT_TYPES], secret: endpointSecret, apiVersion: stripeApiVersion });

  // The nginx config exactly as the deployment renders it, to be tested with nginx -t (not run here).
  const nginxDir = path.join(dir, 'nginx');
  await mkdir(nginxDir);
  nginxConfigFile = path.join(nginxDir, 'nginx.conf');
  await writeFile(nginxConfigFile, edgeConfig(nginxDir, { https: 18443, http: 18080 }, `billing-api:${service.port}`, '127.0.0.1:5353'));

  // Stands in for the docker client: `docker -H HOST exec CONTAINER COMMAND…` runs COMMAND here, the nginx
  // container's `nginx -t` on the rendered config, a replica's command as in its container (working directory
  // holding the built dist/, the replica's PORT and secret file). It refuses any other call, so a wrong command
  // line fails the check.
  const appDir = path.join(dir, 'app');
  await mkdir(appDir);
  await symlink(path.dirname(path.dirname(await buildService())), path.join(appDir, 'dist'));
  dockerCalls = path.join(dir, 'docker-calls.log');
  fakeDocker = path.join(dir, 'docker');
  await writeFile(
    fakeDocker,
    `#!/bin/bash
set -euo pipefail
echo "$*" >> ${dockerCalls}
[ "$1" = "-H" ] && [ "$2" = "ssh://deploy@docker-test.example.com" ] || { echo "fake docker: expected -H ssh://deploy@docker-test.example.com" >&2; exit 64; }
shift 2
[ "$1" = "exec" ] || { echo "fake docker: only exec" >&2; exit 64; }
container=$2; shift 2
case "$container" in
  ${nginxContainer}) [ "$*" = "nginx -t" ] || exit 64; exec /usr/sbin/nginx -t -p ${nginxDir} -c ${nginxConfigFile} ;;
  api-0) cd ${appDir} && exec env PORT=${service.port} STRIPE_WEBHOOK_SECRET_FILE=${secretFile} "$@" ;;
  *) echo "Error response from daemon: No such container: $container" >&2; exit 1 ;;
esac
`,
    { mode: 0o755 },
  );
  stackOutputsFile = path.join(dir, 'stack-outputs.json');
  await writeFile(
    stackOutputsFile,
    JSON.stringify({
      mode: 'test',
      webhookUrl: service.webhookUrl,
      webhookEndpointId: endpoint.id,
      webhookSecretFingerprint: fingerprintSecret(endpointSecret),
      nginxContainer,
      serviceContainers: ['api-0'],
    }),
  );

  // Alice buys 500 credits on the local Stripe's checkout; its events are delivered to the service.
  const price = stripe.createPrice({ productName: '500 credits', unitAmount: 450 });
  await purchase('alice', price.id);
}, 90_000);

afterAll(async () => {
  await service?.stop();
  await stripe?.close();
  await database?.drop();
  await rm(dir, { recursive: true, force: true });
});

async function purchase(userId: string, priceId: string): Promise<void> {
  const session = await client.checkout.sessions.create({
    mode: 'payment',
    line_items: [{ price: priceId, quantity: 1 }],
    success_url: 'https://app.example.com/billing/?checkout=success',
    client_reference_id: userId,
    metadata: { credits: '500' },
  });
  stripe.completeCheckout(session.id, 'pay');
  await stripe.deliveriesSettled();
}

function doctor(args: string[], env: Record<string, string> = {}): Promise<ScriptRun> {
  const settings = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? os.tmpdir(),
    STRIPE_API_KEY_FILE: keyFile,
    STRIPE_API_BASE: stripe.baseUrl,
    STRIPE_WEBHOOK_SECRET_FILE: secretFile,
    DATABASE_URL: database.url,
    ...env,
  };
  return runScript('scripts/doctor.ts', args, settings).then((run) => {
    outputs.push(run.stdout, run.stderr);
    return run;
  });
}

/** A local run's settings, as the test's shell has them, plus `args`; --json parsed. */
async function doctorJson(args: string[], env: Record<string, string> = {}): Promise<{ code: number; checks: Map<string, Check>; stderr: string }> {
  const run = await doctor(['--json', ...args], env);
  let report: { checks: Check[] };
  try {
    report = JSON.parse(run.stdout) as { checks: Check[] };
  } catch {
    throw new Error(`doctor printed no JSON (exit ${run.code}):\n${run.stdout}\n${run.stderr}`);
  }
  return { code: run.code, checks: new Map(report.checks.map((check) => [check.id, check])), stderr: run.stderr };
}

const local = () => ['--service-url', service.url, '--nginx-config', nginxConfigFile, '--pending-after', '0s'];

const allLocalChecks = [
  'webhook-url',
  'nginx-config',
  'stripe-key',
  'endpoint-found',
  'endpoint-enabled',
  'endpoint-url',
  'endpoint-events',
  'endpoint-api-version',
  'pending-deliveries',
  'secret-file',
  'service-secrets',
  'database-reachable',
  'database-migrated',
  'recent-events',
  'events-not-applied',
  'user-balance',
];

describe('a healthy local setup', () => {
  test('passes every check (TLS skipped for a local http URL), and shows the user\'s credits and ledger', async () => {
    const { code, checks } = await doctorJson([...local(), '--user', 'alice']);

    expect(Object.fromEntries(allLocalChecks.map((id) => [id, checks.get(id)?.status]))).toEqual(Object.fromEntries(allLocalChecks.map((id) => [id, 'ok'])));
    expect(checks.get('webhook-tls')?.status).toBe('skipped');
    expect(code).toBe(0);
    expect(checks.get('webhook-url')?.detail).toMatch(/answered 400/);
    expect(checks.get('endpoint-found')?.detail).toContain(endpoint.id);
    expect(checks.get('recent-events')?.data).toMatchObject({ processed: 1, failed: 0, unmatched: 0 });
    expect(checks.get('user-balance')?.data).toMatchObject({ user_id: 'alice', purchased_credits_balance: 500, credits_remaining: 0 });
    expect(checks.get('user-balance')?.items?.[0]).toMatch(/purchased \+500 credit_purchase evt_/);
    expect(checks.get('service-secrets')?.detail).toContain(fingerprintSecret(endpointSecret));
  });

  test('prints a checklist people read, every line a ✓', async () => {
    const run = await doctor([...local(), '--user', 'alice']);

    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`✓ ${service.webhookUrl} answers 400 to an unsigned POST`);
    expect(run.stdout).toContain('✓ the credits of user alice equal the sum of their ledger: 500 credits: 500 purchased, 0 subscription');
    expect(run.stdout).not.toContain('✗');
    expect(run.stdout).toMatch(/All 16 checks passed\./);
  });

  test("a deployed stack's outputs: nginx -t and the loaded fingerprints are asked inside its containers with docker exec", async () => {
    await rm(dockerCalls, { force: true });
    const { code, checks } = await doctorJson(
      ['--stack-outputs', stackOutputsFile, '--docker-command', fakeDocker, '--docker-host', 'ssh://deploy@docker-test.example.com', '--pending-after', '0s'],
      { STRIPE_WEBHOOK_SECRET_FILE: '' },
    );

    expect(checks.get('nginx-config')).toMatchObject({ status: 'ok', detail: `in container ${nginxContainer}: the configuration test is successful` });
    expect(checks.get('secret-file')).toMatchObject({ status: 'ok', title: 'the webhook secret file in container api-0 exists, parses and only its owner may read it' });
    expect(checks.get('secret-file')?.detail).toBe(`${secretFile}, mode 0600, 1 secret: fingerprint ${fingerprintSecret(endpointSecret)}`);
    expect(checks.get('service-secrets')).toMatchObject({ status: 'ok', detail: `loaded ${fingerprintSecret(endpointSecret)}; the deployment's ${fingerprintSecret(endpointSecret)} among them` });
    expect(checks.get('endpoint-found')?.detail).toContain(endpoint.id);
    expect(code).toBe(0);
  });

  test('--stack asks pulumi for the outputs; pulumi failing is a configuration error (78) saying what to do', async () => {
    const fakePulumi = path.join(dir, 'pulumi');
    await writeFile(
      fakePulumi,
      `#!/bin/bash\n[ "$*" = "stack output --json --stack test" ] && exec cat ${stackOutputsFile}\necho "error: no stack named '$5' found" >&2; exit 255\n`,
      { mode: 0o755 },
    );
    const asPulumi = (stack: string) =>
      doctorJson(['--stack', stack, '--pulumi-command', fakePulumi, '--docker-command', fakeDocker, '--docker-host', 'ssh://deploy@docker-test.example.com', '--pending-after', '0s'], { STRIPE_WEBHOOK_SECRET_FILE: '' });

    const { code, checks } = await asPulumi('test');
    expect(checks.get('endpoint-found')?.detail).toContain(endpoint.id);
    expect(checks.get('service-secrets')?.status).toBe('ok');
    expect(code).toBe(0);

    const missing = await doctor(['--stack', 'nope', '--pulumi-command', fakePulumi]);
    expect(missing.code).toBe(78);
    expect(missing.stderr).toContain("`pulumi stack output --json --stack nope` failed (error: no stack named 'nope' found)");
    expect(missing.stderr).toContain('--stack-outputs FILE');
  });
});

describe('each broken variant is found, with its fix', () => {
  test('a wrong secret: the service has not loaded the endpoint\'s fingerprint, and Stripe\'s deliveries stay pending', async () => {
    await replaceFile(secretFile, `${otherSecret}\n`);
    try {
      await waitForLoaded(fingerprintSecret(otherSecret));
      const price = stripe.createPrice({ productName: '500 credits', unitAmount: 450 });
      await purchase('bob', price.id);
      await waitUntil(() => stripe.deliveryAttempts.filter((attempt) => attempt.status === 400).length >= 3, 10_000, 'every attempt refused');
      await stripe.deliveriesSettled();
      const refused = (await client.events.list({ type: 'checkout.session.completed', limit: 1 })).data[0]!;

      const { code, checks } = await doctorJson(['--stack-outputs', stackOutputsFile, '--service-url', service.url, '--pending-after', '0s']);

      const secrets = checks.get('service-secrets');
      expect(secrets?.status).toBe('failed');
      expect(secrets?.detail).toContain(`the deployment recorded fingerprint ${fingerprintSecret(endpointSecret)} for ${endpoint.id}, but the service has loaded ${fingerprintSecret(otherSecret)}`);
      expect(secrets?.fix).toContain('scripts/rotate-webhook-secret.sh add');
      const pending = checks.get('pending-deliveries');
      expect(pending?.status).toBe('failed');
      expect(pending?.items).toContainEqual(expect.stringContaining(`${refused.id} checkout.session.completed`));
      expect(pending?.items).toContainEqual(expect.stringContaining(`npm run replay-events -- --event ${refused.id}`));
      expect(pending?.fix).toMatch(/wrong signing secret/);
      expect(code).toBe(1);

      // Stripe delivers within seconds, retries later: a delivery pending for less than --pending-after (5 min) is no alarm yet.
      const { checks: soon } = await doctorJson(['--stack-outputs', stackOutputsFile, '--service-url', service.url]);
      expect(soon.get('pending-deliveries')).toMatchObject({ status: 'ok', detail: 'none in the last 24 h' });
    } finally {
      await replaceFile(secretFile, `${endpointSecret}\n`);
      await waitForLoaded(fingerprintSecret(endpointSecret));
    }
  });

  test('the endpoint disabled', async () => {
    await client.webhookEndpoints.update(endpoint.id, { disabled: true });
    try {
      const { code, checks } = await doctorJson(local());

      expect(checks.get('endpoint-enabled')).toMatchObject({ status: 'failed', detail: 'status disabled: Stripe sends it nothing' });
      expect(checks.get('endpoint-enabled')?.fix).toContain('pulumi config set stripeWebhookDisabled false && pulumi up');
      expect(code).toBe(1);
    } finally {
      await client.webhookEndpoints.update(endpoint.id, { disabled: false });
    }
  });

  test('an event type missing from the endpoint', async () => {
    await client.webhookEndpoints.update(endpoint.id, { enabled_events: HANDLED_EVENT_TYPES.filter((type) => type !== 'invoice.paid') });
    try {
      const { code, checks } = await doctorJson(local());

      expect(checks.get('endpoint-events')?.status).toBe('failed');
      expect(checks.get('endpoint-events')?.detail).toBe('missing invoice.paid (never delivered: their credits never arrive)');
      expect(checks.get('endpoint-events')?.fix).toContain('`pulumi up` registers exactly HANDLED_EVENT_TYPES');
      expect(code).toBe(1);
    } finally {
      await client.webhookEndpoints.update(endpoint.id, { enabled_events: [...HANDLED_EVENT_TYPES] });
    }
  });

  test('the database down: nothing listens on its port', async () => {
    const closedPort = await freePort();

    const { code, checks } = await doctorJson(local(), { DATABASE_URL: `postgres://postgres@127.0.0.1:${closedPort}/stripe_credits` });

    expect(checks.get('database-reachable')?.status).toBe('failed');
    expect(checks.get('database-reachable')?.detail).toBe(`nothing accepts connections at 127.0.0.1:${closedPort} (connection refused): wrong host or port, or PostgreSQL is not running`);
    expect(checks.get('database-reachable')?.fix).toMatch(/^start PostgreSQL/);
    expect(checks.get('database-migrated')?.status).toBe('skipped');
    expect(code).toBe(1);
  });

  test('a database the service never migrated', async () => {
    const name = `doctor_empty_${Date.now()}`;
    const admin = connectDatabase({ connectionString: testServerUrl, poolMax: 1, logger: createLogger('silent') });
    await admin.query(`CREATE DATABASE ${name}`);
    try {
      const { code, checks } = await doctorJson(local(), { DATABASE_URL: databaseUrl(name) });

      expect(checks.get('database-reachable')?.status).toBe('ok');
      expect(checks.get('database-migrated')).toMatchObject({ status: 'failed', detail: 'no schema_migrations table: the service never started on this database' });
      expect(checks.get('database-migrated')?.fix).toContain('npm run migrate');
      expect(code).toBe(1);
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.close();
    }
  });

  test('the wrong mode: a live key for a test stack', async () => {
    const liveKeyFile = path.join(dir, 'secrets', 'live_key');
    await writeFile(liveKeyFile, `${liveKey}\n`, { mode: 0o600 });

    const { code, checks } = await doctorJson(['--stack-outputs', stackOutputsFile, '--service-url', service.url], { STRIPE_API_KEY_FILE: liveKeyFile });

    expect(checks.get('stripe-key')?.status).toBe('failed');
    expect(checks.get('stripe-key')?.detail).toBe('STRIPE_API_KEY_FILE holds a live-mode key, and the stack runs in test mode: it would see the live-mode endpoints and events only');
    expect(checks.get('stripe-key')?.fix).toMatch(/^put a test-mode key \(sk_test_… or rk_test_…\) into STRIPE_API_KEY_FILE/);
    expect(checks.get('endpoint-found')?.status).toBe('skipped');
    expect(code).toBe(1);
  });

  test('a secret file others may read', async () => {
    await chmod(secretFile, 0o644);
    try {
      const { code, checks } = await doctorJson(local());

      expect(checks.get('secret-file')).toMatchObject({ status: 'failed', detail: `${secretFile} has mode 0644: other users of the machine may read or change the signing secret` });
      expect(checks.get('secret-file')?.fix).toBe(`chmod 600 ${secretFile} (0400 as the deployment writes it); it is read by the service's own user only.`);
      expect(code).toBe(1);
    } finally {
      await chmod(secretFile, 0o600);
    }
  });

  test('a config nginx refuses, with nginx\'s own words', async () => {
    const broken = path.join(dir, 'nginx', 'broken.conf');
    await writeFile(broken, edgeConfigText().replace(/^(\s*)proxy_pass /m, '$1proxy_passs '));

    const { code, checks } = await doctorJson(['--service-url', service.url, '--nginx-config', broken]);

    expect(checks.get('nginx-config')?.status).toBe('failed');
    expect(checks.get('nginx-config')?.items?.join('\n')).toMatch(/unknown directive "proxy_passs"/);
    expect(checks.get('nginx-config')?.fix).toContain('nginx/stripe-credits.conf.template');
    expect(code).toBe(1);
  });

  test('the service has not loaded what the secret file holds (it reads another file)', async () => {
    const elsewhere = path.join(dir, 'secrets', 'another_secret');
    await writeFile(elsewhere, `${otherSecret}\n`, { mode: 0o600 });

    const { code, checks } = await doctorJson(local(), { STRIPE_WEBHOOK_SECRET_FILE: elsewhere });

    expect(checks.get('secret-file')?.status).toBe('ok');
    expect(checks.get('service-secrets')?.status).toBe('failed');
    expect(checks.get('service-secrets')?.detail).toBe(`${elsewhere} holds ${fingerprintSecret(otherSecret)}, which the service has not loaded (it has ${fingerprintSecret(endpointSecret)})`);
    expect(checks.get('service-secrets')?.fix).toMatch(/the service reads another file/);
    expect(code).toBe(1);
  });

  test('an endpoint at another URL and at the account\'s default API version', async () => {
    const stray = stripe.addWebhookEndpoint({ url: 'https://billing.example.com/api/v1/billing/stripe/webhook', enabledEvents: [...HANDLED_EVENT_TYPES] });
    await client.webhookEndpoints.update(stray.id, { disabled: true }); // nothing is delivered to it meanwhile
    try {
      const { code, checks } = await doctorJson([...local(), '--endpoint-id', stray.id]);

      expect(checks.get('endpoint-url')).toMatchObject({ status: 'failed', detail: `it delivers to https://billing.example.com/api/v1/billing/stripe/webhook, not ${service.webhookUrl}` });
      expect(checks.get('endpoint-api-version')).toMatchObject({ status: 'failed', detail: "it is the account's default version: events arrive in another shape than the service reads" });
      expect(checks.get('endpoint-api-version')?.fix).toContain(`Stripe cannot change an endpoint's version in place: let \`pulumi up\` create the endpoint (it pins ${stripeApiVersion})`);
      expect(code).toBe(1);
    } finally {
      await client.webhookEndpoints.del(stray.id);
    }
  });

  test("a user's balance that differs from their ledger, and a user never credited", async () => {
    await database.db.query("UPDATE service_subscriptions SET purchased_credits_balance = purchased_credits_balance + 1 WHERE user_id = 'alice'");
    try {
      const { checks } = await doctorJson([...local(), '--user', 'alice']);
      expect(checks.get('user-balance')?.status).toBe('failed');
      expect(checks.get('user-balance')?.detail).toBe('501 credits: 501 purchased, 0 subscription, but the ledger sums to 500 purchased, 0 subscription');
    } finally {
      await database.db.query("UPDATE service_subscriptions SET purchased_credits_balance = purchased_credits_balance - 1 WHERE user_id = 'alice'");
    }

    const { checks } = await doctorJson([...local(), '--user', 'nobody']);
    expect(checks.get('user-balance')).toMatchObject({ status: 'failed', detail: 'no credits were ever recorded for nobody' });
  });

  test("a stack whose nginx and replica containers are gone", async () => {
    const goneOutputs = path.join(dir, 'gone-outputs.json');
    await writeFile(goneOutputs, JSON.stringify({ mode: 'test', webhookUrl: service.webhookUrl, webhookEndpointId: endpoint.id, nginxContainer: 'gone-nginx', serviceContainers: ['api-9'] }));

    const { code, checks } = await doctorJson(['--stack-outputs', goneOutputs, '--docker-command', fakeDocker, '--docker-host', 'ssh://deploy@docker-test.example.com'], { STRIPE_WEBHOOK_SECRET_FILE: '' });

    expect(checks.get('nginx-config')?.status).toBe('failed');
    expect(checks.get('nginx-config')?.items).toContainEqual('Error response from daemon: No such container: gone-nginx');
    expect(checks.get('nginx-config')?.fix).toMatch(/^the nginx container is not running: `docker start gone-nginx`/);
    expect(checks.get('service-secrets')).toMatchObject({ status: 'failed', title: "container api-9 has loaded the endpoint's signing secret" });
    expect(checks.get('service-secrets')?.fix).toContain('docker logs api-9');
    expect(checks.get('secret-file')?.status).toBe('failed');
    expect(code).toBe(1);
  });

  test('failed and unmatched events are listed with their reason and the command that re-applies each', async () => {
    // A dispute of a payment that bought nothing is unmatched; a refund fails on a real database fault.
    const unmatched = stripeEvent('charge.dispute.created', dispute({ payment_intent: `pi_doctor_unknown_${Date.now()}` }));
    await database.db.query(`CREATE FUNCTION doctor_fail_refunds() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected fault: refunds fail'; END $$`);
    await database.db.query('CREATE TRIGGER doctor_fail_refunds BEFORE INSERT ON charge_refunds FOR EACH ROW EXECUTE FUNCTION doctor_fail_refunds()');
    const failing = stripeEvent('charge.refunded', charge({ refunded: true, amount_refunded: 450, amount: 450 }));
    try {
      expect((await stripe.deliver(unmatched, service.webhookUrl)).status).toBe(200);
      expect((await stripe.deliver(failing, service.webhookUrl)).status).toBe(500);

      const { code, checks } = await doctorJson(local());

      const listed = checks.get('events-not-applied');
      expect(listed?.status).toBe('failed');
      expect(listed?.detail).toBe('2 events not applied');
      const line = (id: string) => listed?.items?.find((item) => item.startsWith(id)) ?? '';
      expect(line(unmatched.id)).toMatch(new RegExp(`^${unmatched.id} charge.dispute.created unmatched .+: .+ → npm run replay-events -- --event ${unmatched.id}$`));
      expect(line(failing.id)).toMatch(new RegExp(`^${failing.id} charge.refunded failed .+: .*injected fault: refunds fail.* → npm run replay-events -- --event ${failing.id}$`));
      expect(checks.get('recent-events')?.data).toMatchObject({ unmatched: 1, failed: 1 });
      expect(code).toBe(1);
    } finally {
      await database.db.query('DROP TRIGGER doctor_fail_refunds ON charge_refunds');
      await database.db.query('DROP FUNCTION doctor_fail_refunds()');
    }
  });
});

describe('HTTPS through nginx', () => {
  let nginx: NginxProcess | undefined;
  let dns: DnsServer | undefined;
  let httpsUrl: string;
  let caFile: string;

  beforeAll(async () => {
    const edgeDir = path.join(dir, 'edge');
    await mkdir(edgeDir);
    dns = await startDnsServer('billing-api', ['127.0.0.1']);
    const ports = { https: await freePort(), http: await freePort() };
    nginx = await startNginx(edgeDir, edgeConfig(edgeDir, ports, `billing-api:${service.port}`, dns.address, 'localhost'));
    caFile = path.join(edgeDir, 'tls.crt'); // edgeConfig's certificate
    httpsUrl = `https://localhost:${ports.https}/api/v1/billing/stripe/webhook`;
  }, 30_000);

  afterAll(async () => {
    await nginx?.stop();
    await dns?.close();
  });

  test('a certificate Node does not trust is refused, and the fix says how to get one Stripe accepts', async () => {
    const { code, checks } = await doctorJson(['--webhook-url', httpsUrl, '--service-url', service.url]);

    expect(checks.get('webhook-tls')?.status).toBe('failed');
    expect(checks.get('webhook-tls')?.detail).toMatch(/self.signed certificate \(DEPTH_ZERO_SELF_SIGNED_CERT\)/);
    expect(checks.get('webhook-tls')?.fix).toContain('pass its CA with --ca-file');
    expect(checks.get('webhook-url')?.status).toBe('skipped');
    expect(code).toBe(1);
  });

  test('with its CA trusted, the unsigned POST reaches the service through nginx and is answered 400', async () => {
    const { checks } = await doctorJson(['--webhook-url', httpsUrl, '--service-url', service.url, '--ca-file', caFile]);

    expect(checks.get('webhook-tls')).toMatchObject({ status: 'ok' });
    expect(checks.get('webhook-tls')?.detail).toMatch(/^valid for localhost, expires in [0-9] days/);
    expect(checks.get('webhook-url')).toMatchObject({ status: 'ok', detail: 'answered 400: it reaches the service, which refuses what Stripe did not sign' });
  });
});

describe('the command line', () => {
  // --help and an unknown option: scripts/test/commandLine.test.ts, for every script.
  test('a duration it cannot read is a usage error (2) naming the option', async () => {
    const badSince = await doctor(['--since', 'yesterday']);
    expect(badSince.code).toBe(2);
    expect(badSince.stderr).toContain('--since must look like 6h or 3d, got "yesterday"');
  });

  test('a secret given as a value, not a file, is a configuration error (78) naming the file form', async () => {
    const run = await doctor(local(), { STRIPE_WEBHOOK_SECRET: endpointSecret });

    expect(run.code).toBe(78);
    expect(run.stderr).toContain('STRIPE_WEBHOOK_SECRET is set as a value: the doctor takes secrets from files only');
    expect(run.stdout).toBe('');
  });

  test('no run printed a secret or a key', () => {
    const printed = outputs.join('\n');
    expect(printed.length).toBeGreaterThan(0);
    for (const secret of [endpointSecret, otherSecret, testKey, liveKey]) expect(printed).not.toContain(secret);
  });
});

/** Replaces a file atomically (rename), as an operator's tool or the deployment does. */
async function replaceFile(file: string, content: string): Promise<void> {
  const next = `${file}.next`;
  await writeFile(next, content, { mode: 0o600 });
  await rename(next, file);
}

async function waitForLoaded(fingerprint: string): Promise<void> {
  await waitUntil(
    async () => {
      const body = (await (await fetch(`${service.url}/webhook-secrets`)).json()) as { fingerprints: { fingerprint: string; loaded: boolean }[] };
      return body.fingerprints.some((entry) => entry.fingerprint === fingerprint && entry.loaded);
    },
    10_000,
    `the service to load ${fingerprint}`,
  );
}

function edgeConfigText(): string {
  return edgeConfig(path.join(dir, 'nginx'), { https: 18443, http: 18080 }, `billing-api:${service.port}`, '127.0.0.1:5353');
}

