import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseSecrets } from '../webhook/secretStore';
import { spawnServiceProcess, startServiceProcess } from './support/serviceProcess';
import { deliver } from './support/testApp';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';

let dataDir: string;
beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'startup-'));
  // As root the embedded PostgreSQL runs as the `postgres` user: a data dir it can enter keeps the cluster itself.
  await chmod(dataDir, 0o755);
});
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

// The service runs as its own process here, as `npm start` runs it.
const asNpmStartRunsIt = { fromSources: true, startTimeoutMillis: 45_000 } as const;

test('with no settings the service runs on an embedded PostgreSQL with a generated development secret', async () => {
  const service = await startServiceProcess({ ...asNpmStartRunsIt, dataDir });
  const output = () => service.logLines.join('\n');
  const secretFile = path.join(dataDir, 'webhook-secret');
  const [secret] = parseSecrets(await readFile(secretFile, 'utf8'), secretFile);
  expect(output()).toContain(`generated the development secret in ${secretFile}`);
  expect(output()).toContain('npm run send-test-event');
  expect(output()).not.toContain(secret!.value);

  const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_embedded', metadata: { credits: '42' } }));
  const response = await deliver(service.webhookUrl, event, { secrets: [secret!.value] });
  expect(response.body).toEqual({ received: true, status: 'processed' });
  expect(await (await fetch(`${service.url}/readyz`)).json()).toEqual({ status: 'ready', problems: [] });

  expect(await service.stop()).toEqual({ code: 0, signal: null });
}, 60_000);

test('in production a missing setting stops the start with exit code 78 and names the variable', async () => {
  const run = await spawnServiceProcess({ ...asNpmStartRunsIt, env: { NODE_ENV: 'production', STRIPE_MODE: 'test', STRIPE_WEBHOOK_SECRET: 'whsec_x', STRIPE_API_KEY: 'sk_test_hidden_value' } });
  const { code } = await run.exited;
  const output = run.logLines.join('\n');
  expect(code).toBe(78);
  expect(output).toContain('Missing required setting in production: DATABASE_URL or DATABASE_URL_FILE');
  expect(output).not.toContain('sk_test_hidden_value');
}, 30_000);
