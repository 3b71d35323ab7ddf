/**
 * Rotating the Stripe API key while the service runs (README, Operations): the key is rolled in Stripe
 * (both valid for a while), the new one written into STRIPE_API_KEY_FILE, and the old one expires. The
 * service as a child process reads line items from the local Stripe for every purchase without
 * metadata.credits, so each purchase shows which key it used: the local Stripe accepts only the keys valid
 * at that moment.
 */
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startLocalStripe, type LocalStripe } from '../../localStripe';
import { fingerprintSecret } from '../webhook/secretFingerprint';
import { startServiceProcess, stopAllServiceProcesses, type ServiceProcess } from './support/serviceProcess';
import { checkoutSession, signedDelivery, stripeEvent } from './support/stripeFixtures';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

const webhookSecret = 'whsec_apiKeyRotationSecret';
const firstKey = 'sk_test_firstKeyOfTheRotation0001';
const secondKey = 'sk_test_secondKeyOfTheRotation002';
const priceId = 'price_rotation_100_credits';

let database: TestDatabase;
let local: LocalStripe;
let service: ServiceProcess;
let dir: string;
let keyFile: string;

/** As the secret writers do: a temporary file renamed over the old one. */
async function writeKey(key: string): Promise<void> {
  const next = path.join(dir, '.stripe_api_key.new');
  await writeFile(next, `${key}\n`, { mode: 0o600 });
  await rename(next, keyFile);
}

/** A purchase whose credits come from its line items, which the service reads from Stripe with its key. */
async function deliverPurchase(userId: string): Promise<{ status: number; body: string }> {
  const session = checkoutSession({ client_reference_id: userId, metadata: {} });
  local.setCheckoutLineItems(session.id, [{ priceId, quantity: 1 }]);
  const delivery = signedDelivery(stripeEvent('checkout.session.completed', session), [webhookSecret]);
  const response = await fetch(service.webhookUrl, { method: 'POST', headers: delivery.headers, body: delivery.body });
  return { status: response.status, body: await response.text() };
}

async function creditsOf(userId: string): Promise<number> {
  const { rows } = await database.db.query<{ credits: number }>('SELECT coalesce(sum(delta), 0)::int AS credits FROM credit_ledger WHERE user_id = $1', [userId]);
  return rows[0]!.credits;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'api-key-rotation-'));
  keyFile = path.join(dir, 'stripe_api_key');
  await writeKey(firstKey);
  const catalogFile = path.join(dir, 'catalog.json');
  await writeFile(catalogFile, JSON.stringify({ packages: { [priceId]: { credits: 100, name: '100 credits' } } }));
  database = await createTestDatabase();
  local = await startLocalStripe();
  local.acceptOnlyApiKeys([firstKey]);
  service = await startServiceProcess({
    name: 'API key rotation service',
    databaseUrl: database.url,
    webhookSecret,
    env: { STRIPE_API_KEY_FILE: keyFile, STRIPE_API_BASE: local.baseUrl, STRIPE_MODE: 'test', CREDIT_CATALOG_FILE: catalogFile },
  });
}, 60_000);

afterAll(async () => {
  await stopAllServiceProcesses();
  await local?.close();
  await database?.drop();
  await rm(dir, { recursive: true, force: true });
});

test('after the key is rolled and written into STRIPE_API_KEY_FILE, the running service calls Stripe with the new key only', async () => {
  expect(await deliverPurchase('user_before_roll')).toMatchObject({ status: 200 });
  expect(await creditsOf('user_before_roll')).toBe(100);

  // The roll: Stripe accepts both for a while; the new key goes into the file; then the old one expires.
  local.acceptOnlyApiKeys([firstKey, secondKey]);
  await writeKey(secondKey);
  await service.waitForLog((line) => line.includes('Stripe API key reloaded') && line.includes(fingerprintSecret(secondKey)), 10_000);
  local.acceptOnlyApiKeys([secondKey]);

  const requestsBefore = local.requests.length;
  for (let index = 0; index < 3; index++) {
    expect(await deliverPurchase(`user_after_roll_${index}`)).toMatchObject({ status: 200 });
    expect(await creditsOf(`user_after_roll_${index}`)).toBe(100);
  }
  // Each purchase asked Stripe, and Stripe accepted the key each time.
  const after = local.requests.slice(requestsBefore);
  expect(after.length).toBeGreaterThanOrEqual(3);
  expect(after.map((request) => request.status)).toEqual(after.map(() => 200));

  // The old key is refused now: had the service kept it, the purchases above would have failed (500).
  const withOldKey = await fetch(`${local.baseUrl}/v1/checkout/sessions/cs_test_x/line_items`, { headers: { Authorization: `Bearer ${firstKey}` } });
  expect(withOldKey.status).toBe(401);

  const logs = service.logLines.join('\n');
  expect(logs).not.toContain(firstKey);
  expect(logs).not.toContain(secondKey);
});

test('a key of the wrong mode written into the file is refused, and the service keeps the key it had', async () => {
  await writeKey('sk_live_aLiveKeyInATestDeployment0');
  await service.waitForLog((line) => line.includes('Stripe API key: file invalid; keeping the previous value'), 10_000);
  expect(await deliverPurchase('user_after_wrong_key')).toMatchObject({ status: 200 });
  expect(service.logLines.join('\n')).not.toContain('sk_live_aLiveKeyInATestDeployment0');
});
