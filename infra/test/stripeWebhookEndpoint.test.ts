import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import Module from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type * as pulumi from '@pulumi/pulumi';
import { startLocalStripe, type LocalStripe } from '../../localStripe';
import { openStripeEndpoints } from '../../scripts/rotation/stripeEndpoints';
import {
  webhookEndpointProvider as provider,
  type WebhookEndpointInputs,
  type WebhookEndpointOutputs,
} from '../stripeWebhookEndpoint';

type Provider = pulumi.dynamic.ResourceProvider<WebhookEndpointInputs, WebhookEndpointOutputs>;

const testKey = 'sk_test_infraProviderKey';
const liveKey = 'sk_live_infraProviderKey';
const apiVersion = '2025-03-31.basil';

let fake: LocalStripe;

beforeAll(async () => {
  fake = await startLocalStripe();
});
afterAll(() => fake.close());
beforeEach(() => fake.reset());

function inputs(overrides: Partial<WebhookEndpointInputs> = {}): WebhookEndpointInputs {
  return {
    apiBase: fake.baseUrl,
    apiKey: testKey,
    mode: 'test',
    url: 'https://billing.example.com/api/v1/billing/stripe/webhook',
    enabledEvents: ['checkout.session.completed', 'customer.subscription.updated'],
    apiVersion,
    description: 'stripe-credits (test stack)',
    metadata: { project: 'stripe-credits', stack: 'test' },
    disabled: false,
    adoptId: '',
    suppliedSecret: '',
    ...overrides,
  };
}

/** An endpoint made directly through the API, as someone clicking in the Dashboard would (or an interrupted run). */
async function createOutsidePulumi(
  version = apiVersion,
  { url = 'https://old.example.com/hook', metadata = { owner: 'dashboard' } }: { url?: string; metadata?: Record<string, string> } = {},
): Promise<{ id: string; secret: string }> {
  const response = await fetch(`${fake.baseUrl}/v1/webhook_endpoints`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${testKey}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      url,
      'enabled_events[0]': 'charge.refunded',
      api_version: version,
      ...Object.fromEntries(Object.entries(metadata).map(([key, value]) => [`metadata[${key}]`, value])),
    }).toString(),
  });
  return (await response.json()) as { id: string; secret: string };
}

function required<K extends keyof Provider>(name: K): NonNullable<Provider[K]> {
  const method = provider[name];
  if (!method) throw new Error(`the provider has no ${String(name)}`);
  return method as NonNullable<Provider[K]>;
}

const create = required('create');
const read = required('read');
const update = required('update');
const diff = required('diff');
const remove = required('delete');
const check = required('check');

test('create registers the endpoint with the given events, pinned API version and metadata, and returns its signing secret', async () => {
  const { id, outs } = await create(inputs());

  const [endpoint] = fake.webhookEndpoints();
  expect(endpoint).toMatchObject({
    id,
    url: 'https://billing.example.com/api/v1/billing/stripe/webhook',
    enabled_events: ['checkout.session.completed', 'customer.subscription.updated'],
    api_version: apiVersion,
    description: 'stripe-credits (test stack)',
    metadata: { project: 'stripe-credits', stack: 'test' },
    status: 'enabled',
    livemode: false,
  });
  expect(outs?.secret).toBe(endpoint?.secret);
  expect(outs?.secret).toMatch(/^whsec_/);
});

test('a test stack refuses a live key, and a live stack a test key, before any call to Stripe', async () => {
  await expect(create(inputs({ apiKey: liveKey }))).rejects.toThrow(/live-mode key.*test-mode endpoint/);
  await expect(create(inputs({ mode: 'live' }))).rejects.toThrow(/test-mode key.*live-mode endpoint/);
  expect(fake.requests).toHaveLength(0);

  const { failures } = await check(inputs(), inputs({ apiKey: liveKey }));
  expect(failures).toEqual([expect.objectContaining({ property: 'apiKey' })]);
  expect(JSON.stringify(failures)).not.toContain(liveKey);
});

test('update changes url, events, description, metadata and disabled in place and keeps the secret from create', async () => {
  const { id, outs: created } = await create(inputs());
  const changed = inputs({
    url: 'https://billing2.example.com/api/v1/billing/stripe/webhook',
    enabledEvents: ['charge.refunded'],
    description: 'renamed',
    metadata: { project: 'stripe-credits' },
    disabled: true,
  });
  const olds = created as WebhookEndpointOutputs;

  await expect(diff(id, olds, changed)).resolves.toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  const { outs } = await update(id, olds, changed);

  const endpoints = fake.webhookEndpoints();
  expect(endpoints).toHaveLength(1);
  expect(endpoints[0]).toMatchObject({
    id,
    url: 'https://billing2.example.com/api/v1/billing/stripe/webhook',
    enabled_events: ['charge.refunded'],
    description: 'renamed',
    metadata: { project: 'stripe-credits' },
    status: 'disabled',
  });
  expect(outs).toMatchObject({ disabled: true, secret: olds.secret });
});

test('refresh reads drift from Stripe and carries the secret Stripe no longer shows', async () => {
  const { id, outs } = await create(inputs());
  await fetch(`${fake.baseUrl}/v1/webhook_endpoints/${id}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${testKey}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: 'enabled_events[0]=charge.refunded&disabled=true',
  });

  const refreshed = await read(id, outs as WebhookEndpointOutputs);

  expect(refreshed.id).toBe(id);
  expect(refreshed.props).toMatchObject({ enabledEvents: ['charge.refunded'], disabled: true, secret: outs?.secret });
  const planned = await diff(id, refreshed.props as WebhookEndpointOutputs, inputs());
  expect(planned).toMatchObject({ changes: true, replaces: [] });
});

test('refresh reports an endpoint deleted outside Pulumi as gone', async () => {
  const { id, outs } = await create(inputs());
  await fetch(`${fake.baseUrl}/v1/webhook_endpoints/${id}`, { method: 'DELETE', headers: { Authorization: `Bearer ${testKey}` } });

  await expect(read(id, outs as WebhookEndpointOutputs)).resolves.toEqual({ id: '' });
});

test('after rotate-webhook-secret replaced the endpoint, refresh refuses naming the successor, and adopting it brings the state in line', async () => {
  const { id: oldId, outs } = await create(inputs());
  // What the script does through the Stripe API: a successor like the old endpoint, then the old one deleted.
  const endpoints = openStripeEndpoints({ STRIPE_API_KEY: testKey, STRIPE_API_BASE: fake.baseUrl });
  const old = (await endpoints.retrieve(oldId))!;
  const successor = await endpoints.createLike(old, oldId);
  await endpoints.subscribe(successor.id, old.enabled_events);
  await endpoints.delete(oldId);

  // Dropping the gone endpoint from the state would let the next `pulumi up` create a third one.
  await expect(read(oldId, outs as WebhookEndpointOutputs)).rejects.toThrow(
    new RegExp(`${oldId} was replaced by ${successor.id}.*pulumi config set stripeWebhookEndpointId ${successor.id}.*pulumi up without --refresh`),
  );

  // The steps the script prints: adopt the successor with its secret, then `pulumi up` (replace by adoption).
  const adopting = inputs({ adoptId: successor.id, suppliedSecret: successor.secret });
  await expect(diff(oldId, outs as WebhookEndpointOutputs, adopting)).resolves.toMatchObject({ changes: true, replaces: ['adoptId'], deleteBeforeReplace: false });
  const adopted = await create(adopting);
  await remove(oldId, outs as WebhookEndpointOutputs); // already gone in Stripe: counts as deleted
  expect(adopted.id).toBe(successor.id);
  expect(adopted.outs).toMatchObject({ secret: successor.secret, signingSecrets: [successor.secret], enabledEvents: inputs().enabledEvents, apiVersion });
  expect(fake.webhookEndpoints()).toEqual([expect.objectContaining({ id: successor.id, metadata: { project: 'stripe-credits', stack: 'test' }, secret: successor.secret })]);
  // From now on refresh reads the successor, and the next `pulumi up` changes nothing.
  await expect(read(successor.id, adopted.outs as WebhookEndpointOutputs)).resolves.toMatchObject({ id: successor.id });
  await expect(diff(successor.id, adopted.outs as WebhookEndpointOutputs, adopting)).resolves.toMatchObject({ changes: false });
});

test('diff replaces only for a new API version or mode, and ignores the order of events', async () => {
  const { id, outs } = await create(inputs());
  const olds = outs as WebhookEndpointOutputs;

  await expect(diff(id, olds, inputs({ enabledEvents: ['customer.subscription.updated', 'checkout.session.completed'] }))).resolves.toMatchObject({
    changes: false,
    replaces: [],
  });
  await expect(diff(id, olds, inputs({ apiVersion: '2026-01-28.clover' }))).resolves.toMatchObject({ changes: true, replaces: ['apiVersion'] });
  await expect(diff(id, olds, inputs({ mode: 'live', apiKey: liveKey }))).resolves.toMatchObject({ replaces: ['mode'] });
});

test('adopting an existing endpoint manages it in place with the supplied secret and creates nothing', async () => {
  const existing = await createOutsidePulumi();

  const { id, outs } = await create(inputs({ adoptId: existing.id, suppliedSecret: existing.secret }));

  expect(id).toBe(existing.id);
  expect(outs?.secret).toBe(existing.secret);
  const endpoints = fake.webhookEndpoints();
  expect(endpoints).toHaveLength(1);
  expect(endpoints[0]).toMatchObject({
    id: existing.id,
    url: 'https://billing.example.com/api/v1/billing/stripe/webhook',
    enabled_events: ['checkout.session.completed', 'customer.subscription.updated'],
    metadata: { project: 'stripe-credits', stack: 'test' },
  });
  const adopted = outs as WebhookEndpointOutputs;
  await expect(diff(id, adopted, inputs({ adoptId: existing.id, suppliedSecret: existing.secret }))).resolves.toMatchObject({
    changes: false,
    replaces: [],
  });
  await expect(diff(id, adopted, inputs())).resolves.toMatchObject({ replaces: [] });
});

test('adoption without the endpoint secret, or of an endpoint on another API version, is refused', async () => {
  const existing = await createOutsidePulumi('2024-06-20');

  const { failures } = await check(inputs(), inputs({ adoptId: existing.id }));
  expect(failures).toEqual([expect.objectContaining({ property: 'suppliedSecret' })]);
  await expect(create(inputs({ adoptId: existing.id, suppliedSecret: existing.secret }))).rejects.toThrow(
    /API version 2024-06-20, not 2025-03-31\.basil/,
  );
  expect(fake.webhookEndpoints()).toEqual([expect.objectContaining({ id: existing.id, url: 'https://old.example.com/hook' })]);
});

test('a secret supplied later (rolled in the Dashboard) replaces the stored one without touching the endpoint', async () => {
  const { id, outs } = await create(inputs());
  const olds = outs as WebhookEndpointOutputs;
  const rolled = inputs({ suppliedSecret: 'whsec_rolledInTheDashboard' });

  await expect(diff(id, olds, rolled)).resolves.toMatchObject({ changes: true, replaces: [] });
  const { outs: updated } = await update(id, olds, rolled);

  expect(updated).toMatchObject({ secret: 'whsec_rolledInTheDashboard', signingSecrets: ['whsec_rolledInTheDashboard'], suppliedSecretFor: id });
  expect(fake.webhookEndpoints().map((endpoint) => endpoint.id)).toEqual([id]);
});

describe('creation is idempotent', () => {
  test('a create run again after an interruption gets the first endpoint and its secret back, not a second endpoint', async () => {
    const first = await create(inputs()); // its answer "lost" with the interrupted `pulumi up`
    const again = await create(inputs());

    expect(again.id).toBe(first.id);
    expect(again.outs?.secret).toBe(first.outs?.secret);
    expect(fake.webhookEndpoints().map((endpoint) => [endpoint.id, endpoint.secret])).toEqual([[first.id, first.outs?.secret]]);
    const keys = fake.requests.filter((request) => request.method === 'POST' && request.path === '/v1/webhook_endpoints').map((request) => request.headers['idempotency-key']);
    expect(keys).toEqual([expect.stringMatching(/^webhook-endpoint-create-[0-9a-f]{40}$/), keys[0]]);
  });

  test('a leftover endpoint of this stack whose secret nobody has (older than Stripe keeps keys) is deleted; others are left alone', async () => {
    const leftover = await createOutsidePulumi(apiVersion, { url: inputs().url, metadata: inputs().metadata });
    const otherStack = await createOutsidePulumi(apiVersion, { url: inputs().url, metadata: { ...inputs().metadata, stack: 'live' } });
    const otherVersion = await createOutsidePulumi('2024-06-20', { url: inputs().url, metadata: inputs().metadata });

    const { id } = await create(inputs());

    expect(fake.webhookEndpoints().map((endpoint) => endpoint.id).sort()).toEqual([id, otherStack.id, otherVersion.id].sort());
    expect(id).not.toBe(leftover.id);
  });

  test('recreating an endpoint deleted since its creation makes a new one, even with the same parameters', async () => {
    const first = await create(inputs());
    await remove(first.id, first.outs as WebhookEndpointOutputs); // e.g. pulumi destroy, or deleted in the Dashboard and refreshed

    const recreated = await create(inputs());

    expect(recreated.id).not.toBe(first.id);
    expect(fake.webhookEndpoints()).toEqual([expect.objectContaining({ id: recreated.id, secret: recreated.outs?.secret })]);
  });

  test('a replayed endpoint changed since is brought back to the inputs', async () => {
    const first = await create(inputs());
    await fetch(`${fake.baseUrl}/v1/webhook_endpoints/${first.id}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${testKey}`, 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'disabled=true&description=changed',
    });

    const again = await create(inputs());

    expect(again.id).toBe(first.id);
    expect(fake.webhookEndpoints()).toEqual([expect.objectContaining({ id: first.id, status: 'enabled', description: inputs().description })]);
  });
});

describe('a supplied secret belongs to the endpoint it was given for', () => {
  test('a new endpoint signs with its own secret; a supplied one (of the endpoint before) stays beside it', async () => {
    const { outs } = await create(inputs({ suppliedSecret: 'whsec_rolledForTheEndpointBefore' }));

    const [endpoint] = fake.webhookEndpoints();
    expect(outs).toMatchObject({ secret: endpoint?.secret, suppliedSecretFor: '', signingSecrets: [endpoint?.secret, 'whsec_rolledForTheEndpointBefore'] });
  });

  test('a secret supplied for this endpoint replaces its own; an unchanged supplied secret keeps whom it was given for', async () => {
    const { id, outs } = await create(inputs({ suppliedSecret: 'whsec_ofAnEarlierEndpoint' }));
    const rolled = await update(id, outs as WebhookEndpointOutputs, inputs({ suppliedSecret: 'whsec_rolledForThisOne' }));
    expect(rolled.outs).toMatchObject({ secret: 'whsec_rolledForThisOne', suppliedSecretFor: id, signingSecrets: ['whsec_rolledForThisOne'] });

    const unchanged = await update(id, rolled.outs as WebhookEndpointOutputs, inputs({ suppliedSecret: 'whsec_rolledForThisOne', description: 'again' }));
    expect(unchanged.outs).toMatchObject({ secret: 'whsec_rolledForThisOne', suppliedSecretFor: id });

    const kept = await update(id, outs as WebhookEndpointOutputs, inputs({ suppliedSecret: 'whsec_ofAnEarlierEndpoint', description: 'again' }));
    expect(kept.outs).toMatchObject({ secret: outs?.secret, suppliedSecretFor: '', signingSecrets: [outs?.secret, 'whsec_ofAnEarlierEndpoint'] });
  });

  test('state written before the binding was recorded keeps treating its supplied secret as this endpoint’s', async () => {
    const existing = await createOutsidePulumi();
    const { id, outs } = await create(inputs({ adoptId: existing.id, suppliedSecret: existing.secret }));
    const { suppliedSecretFor: _dropped, signingSecrets: _alsoDropped, ...olderState } = outs as WebhookEndpointOutputs;

    // Unchanged inputs still make an update, which records what the older state lacks.
    await expect(diff(id, olderState as WebhookEndpointOutputs, inputs({ adoptId: existing.id, suppliedSecret: existing.secret }))).resolves.toMatchObject({ changes: true, replaces: [] });
    const updated = await update(id, olderState as WebhookEndpointOutputs, inputs({ adoptId: existing.id, suppliedSecret: existing.secret }));
    const refreshed = await read(id, olderState as WebhookEndpointOutputs);

    expect(updated.outs).toMatchObject({ secret: existing.secret, suppliedSecretFor: id, signingSecrets: [existing.secret] });
    expect(refreshed.props).toMatchObject({ secret: existing.secret, suppliedSecretFor: id });
  });
});

test('delete removes the endpoint, and an endpoint already gone counts as deleted', async () => {
  const { id, outs } = await create(inputs());

  await remove(id, outs as WebhookEndpointOutputs);
  expect(fake.webhookEndpoints()).toHaveLength(0);
  await expect(remove(id, outs as WebhookEndpointOutputs)).resolves.toBeUndefined();
});

test('a Stripe error fails the operation with its status and without the key', async () => {
  fake.failNext(1, 401);

  const failure = create(inputs());

  await expect(failure).rejects.toThrow(/HTTP 401/);
  await expect(failure).rejects.not.toThrow(testKey);
});

/** What Pulumi's dynamic provider host does with `__provider` (require-from-string): compile it as a CommonJS module. */
function loadLikePulumi(text: string, filename: string): { handler: () => Provider } {
  type CompilableModule = Module & { _compile(code: string, filename: string): void };
  const loaded = new Module(filename) as CompilableModule;
  loaded.filename = filename;
  loaded.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(filename));
  loaded._compile(text, filename);
  return loaded.exports as { handler: () => Provider };
}

describe('the provider as Pulumi stores it in the state', () => {
  let dir: string;
  let serialized: { text: string; containsSecrets: boolean };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'serialized-provider-'));
    // Not execFileSync: blocking the event loop for seconds (a busy machine) lets the local Stripe close
    // idle keep-alive connections that fetch has not retired yet, and the next request gets ECONNRESET.
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', path.join(__dirname, 'support', 'serializeProvider.ts')], {
      cwd: path.join(__dirname, '..', '..'),
      encoding: 'utf8',
    });
    serialized = JSON.parse(stdout) as typeof serialized;
  }, 60_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('holds no secret and still creates, updates and deletes an endpoint', async () => {
    expect(serialized.containsSecrets).toBe(false);
    expect(serialized.text).not.toMatch(/require\(/); // self-contained: no module to find at run time
    const restored = loadLikePulumi(serialized.text, path.join(dir, 'provider.js')).handler();

    const created = await restored.create!(inputs());
    const updated = await restored.update!(created.id, created.outs as WebhookEndpointOutputs, inputs({ description: 'again' }));
    expect(fake.webhookEndpoints()).toEqual([expect.objectContaining({ id: created.id, description: 'again' })]);
    expect(updated.outs?.secret).toBe(created.outs?.secret);
    await restored.delete!(created.id, updated.outs as WebhookEndpointOutputs);
    expect(fake.webhookEndpoints()).toHaveLength(0);
  });
});
