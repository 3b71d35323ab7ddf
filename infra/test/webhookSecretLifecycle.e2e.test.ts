/**
 * The signing secret file through every way the endpoint comes to exist: first deployment, replacement
 * (a new API version), recreation after it was deleted in Stripe, adoption, and a rerun after an
 * interrupted `pulumi up`. The endpoint provider runs against the local Stripe in the order Pulumi calls
 * it; after each step the file is written by the writers' script from the provider's `signingSecrets`
 * (as infra/index.ts does), a real service process reloads it, and the local Stripe delivers an event to every
 * endpoint that exists, signed as Stripe signs: each delivery must verify.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type * as pulumi from '@pulumi/pulumi';
import { startLocalStripe, type LocalStripe } from '../../localStripe';
import { startServiceProcess, stopAllServiceProcesses, type ServiceProcess } from '../../service/test/support/serviceProcess';
import { checkoutSession, stripeEvent } from '../../service/test/support/stripeFixtures';
import { createTestDatabase, type TestDatabase } from '../../service/test/support/testDatabase';
import { stripeApiVersion } from '../../service/stripeApi';
import { fingerprintSecret } from '../../service/webhook/secretFingerprint';
import { secretWriterScript, type SecretFile, type SecretWriterOptions } from '../secretFiles';
import { webhookEndpointProvider as provider, type WebhookEndpointInputs, type WebhookEndpointOutputs } from '../stripeWebhookEndpoint';

type Provider = pulumi.dynamic.ResourceProvider<WebhookEndpointInputs, WebhookEndpointOutputs>;

// The writers' script chowns the files to the service's uid, as in the container: it needs root.
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

const testKey = 'sk_test_lifecycleKey';
const webhookSecretFile = { reader: 'service', name: 'stripe_webhook_secret' } as const;

let localStripe: LocalStripe;
let database: TestDatabase;
let service: ServiceProcess;
let dir: string;
let target: string;

function call<K extends keyof Provider>(name: K): NonNullable<Provider[K]> {
  const method = provider[name];
  if (!method) throw new Error(`the provider has no ${String(name)}`);
  return method as NonNullable<Provider[K]>;
}

/** Runs the writers' script as the one-shot container does, with the values as uploaded files. */
function runWriter(files: Array<Pick<SecretFile, 'reader' | 'name'> & { value: string }>, options: SecretWriterOptions): void {
  const uploads = mkdtempSync(path.join(dir, 'uploads-'));
  for (const file of files) {
    mkdirSync(path.join(uploads, file.reader), { recursive: true });
    writeFileSync(path.join(uploads, file.reader, file.name), `${file.value}\n`, { mode: 0o400 });
  }
  const script = path.join(uploads, 'install.sh');
  writeFileSync(script, secretWriterScript(files, options));
  execFileSync('sh', [script, target, uploads]);
}

/** What `pulumi up` and `pulumi refresh` do with the endpoint resource, step by step, state kept between runs. */
class Stack {
  state: { id: string; outs: WebhookEndpointOutputs } | undefined;

  /** `pulumi up` with these inputs; `overlap` runs while a replaced endpoint still exists (deleted at the end). */
  async up(inputs: WebhookEndpointInputs, overlap: () => Promise<void> = async () => undefined): Promise<void> {
    if (!this.state) {
      const created = await call('create')(inputs);
      this.state = { id: created.id, outs: created.outs as WebhookEndpointOutputs };
      await installSecretFile(this.state.outs);
      return;
    }
    const { replaces = [], changes } = await call('diff')(this.state.id, this.state.outs, inputs);
    if (replaces.length > 0) {
      const replaced = this.state;
      const created = await call('create')(inputs);
      this.state = { id: created.id, outs: created.outs as WebhookEndpointOutputs };
      await installSecretFile(this.state.outs); // the file depends on the endpoint: rewritten before the old one goes
      await overlap();
      await call('delete')(replaced.id, replaced.outs);
    } else if (changes) {
      const updated = await call('update')(this.state.id, this.state.outs, inputs);
      this.state = { id: this.state.id, outs: updated.outs as WebhookEndpointOutputs };
      await installSecretFile(this.state.outs);
    }
  }

  async refresh(): Promise<void> {
    if (!this.state) return;
    const read = await call('read')(this.state.id, this.state.outs);
    this.state = read.id ? { id: read.id, outs: read.props as WebhookEndpointOutputs } : undefined;
  }
}

/** The webhook secret writer, with the content infra/index.ts gives it; then waits for the service to load it. */
async function installSecretFile(outs: WebhookEndpointOutputs): Promise<void> {
  runWriter([{ ...webhookSecretFile, value: outs.signingSecrets.join('\n') }], { cleanUp: false });
  const fingerprints = outs.signingSecrets.map(fingerprintSecret);
  await service.waitForLog((line) => line.includes('"msg":"webhook signing secrets reloaded"') && fingerprints.every((fingerprint) => line.includes(fingerprint)));
}

function inputs(overrides: Partial<WebhookEndpointInputs> = {}): WebhookEndpointInputs {
  return {
    apiBase: localStripe.baseUrl,
    apiKey: testKey,
    mode: 'test',
    url: service.webhookUrl,
    enabledEvents: ['checkout.session.completed'],
    apiVersion: stripeApiVersion,
    description: 'stripe-credits (test stack)',
    metadata: { project: 'stripe-credits', stack: 'lifecycle', managed_by: 'pulumi' },
    disabled: false,
    adoptId: '',
    suppliedSecret: '',
    ...overrides,
  };
}

/** One event, delivered by the local Stripe to every enabled endpoint there is, each signing with its own secret. */
async function deliverToEveryEndpoint(): Promise<Array<{ endpointId: string; status: number }>> {
  const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_lifecycle', metadata: { credits: '1' } }));
  const results = await localStripe.deliverToEndpoints(event);
  return results.map((result) => ({ endpointId: result.endpointId, status: result.status }));
}

async function everyEndpointVerifies(): Promise<void> {
  const existing = localStripe.webhookEndpoints().map((endpoint) => endpoint.id);
  const delivered = await deliverToEveryEndpoint();
  expect(delivered.map((result) => result.endpointId).sort()).toEqual(existing.sort());
  expect(delivered).toEqual(existing.map(() => expect.objectContaining({ status: 200 })));
}

asRoot('the secret file verifies what Stripe sends, for the endpoint that exists', () => {
  beforeAll(async () => {
    localStripe = await startLocalStripe();
    database = await createTestDatabase();
    dir = mkdtempSync(path.join(os.tmpdir(), 'secret-lifecycle-'));
    target = path.join(dir, 'host-secrets');
    mkdirSync(target);
    // The first writer, as on a first deployment: a placeholder until the endpoint exists.
    runWriter([], { keep: [webhookSecretFile], placeholder: webhookSecretFile });
    service = await startServiceProcess({
      name: 'lifecycle service',
      databaseUrl: database.url,
      webhookSecretFile: path.join(target, 'service', 'stripe_webhook_secret'),
      env: { STRIPE_API_KEY: testKey },
    });
  }, 120_000);

  afterAll(async () => {
    await stopAllServiceProcesses();
    await localStripe?.close();
    await database?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => localStripe.reset());

  test('first deployment: the endpoint’s own secret replaces the placeholder', async () => {
    const stack = new Stack();
    await stack.up(inputs());
    await everyEndpointVerifies();
  });

  test('replacement (new API version) with a secret supplied for the old endpoint: both verify while both exist, then the new one', async () => {
    const stack = new Stack();
    await stack.up(inputs({ apiVersion: '2024-06-20' }));
    const old = localStripe.webhookEndpoints()[0]?.secret as string;
    await stack.up(inputs({ apiVersion: '2024-06-20', suppliedSecret: old })); // e.g. rolled in the Dashboard, then set in config

    await stack.up(inputs({ suppliedSecret: old }), everyEndpointVerifies);

    expect(localStripe.webhookEndpoints()).toEqual([expect.objectContaining({ api_version: stripeApiVersion })]);
    await everyEndpointVerifies();
  });

  test('replacement without a supplied secret: the new endpoint verifies from the moment the file is rewritten', async () => {
    const stack = new Stack();
    await stack.up(inputs({ apiVersion: '2024-06-20' }));

    await stack.up(inputs(), async () => {
      const [replacement] = localStripe.webhookEndpoints().filter((endpoint) => endpoint.api_version === stripeApiVersion);
      const delivered = await deliverToEveryEndpoint();
      expect(delivered.find((result) => result.endpointId === replacement?.id)).toMatchObject({ status: 200 });
    });

    await everyEndpointVerifies();
  });

  test('recreation after the endpoint was deleted in Stripe and refreshed away, with a supplied secret of the deleted one', async () => {
    const stack = new Stack();
    await stack.up(inputs());
    const deleted = localStripe.webhookEndpoints()[0] as { id: string; secret: string };
    await stack.up(inputs({ suppliedSecret: deleted.secret }));
    await fetch(`${localStripe.baseUrl}/v1/webhook_endpoints/${deleted.id}`, { method: 'DELETE', headers: { Authorization: `Bearer ${testKey}` } });

    await stack.refresh();
    expect(stack.state).toBeUndefined();
    await stack.up(inputs({ suppliedSecret: deleted.secret }));

    expect(localStripe.webhookEndpoints().map((endpoint) => endpoint.id)).not.toContain(deleted.id);
    await everyEndpointVerifies();
  });

  test('adoption of an endpoint made in the Dashboard, with its secret from config', async () => {
    const response = await fetch(`${localStripe.baseUrl}/v1/webhook_endpoints`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${testKey}`, 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ url: service.webhookUrl, 'enabled_events[0]': 'checkout.session.completed', api_version: stripeApiVersion }).toString(),
    });
    const made = (await response.json()) as { id: string; secret: string };

    await new Stack().up(inputs({ adoptId: made.id, suppliedSecret: made.secret }));

    expect(localStripe.webhookEndpoints().map((endpoint) => endpoint.id)).toEqual([made.id]);
    await everyEndpointVerifies();
  });

  test('a rerun after an interrupted `pulumi up` (the endpoint created, its answer lost) gets that endpoint and its secret', async () => {
    const lost = await call('create')(inputs()); // created in Stripe; the state never heard of it

    const stack = new Stack();
    await stack.up(inputs());

    expect(stack.state?.id).toBe(lost.id);
    expect(localStripe.webhookEndpoints().map((endpoint) => endpoint.id)).toEqual([lost.id]);
    await everyEndpointVerifies();
  });
});
