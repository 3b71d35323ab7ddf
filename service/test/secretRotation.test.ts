import { mkdtemp, mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';
import { captureLogger, deliver, startTestApp, type TestApp } from './support/testApp';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';
import { parseSecrets, SecretFileError, watchSecretFile, type SecretStore } from '../webhook/secretStore';
import { fingerprintSecret } from '../webhook/secretFingerprint';
import { verifyStripeSignature } from '../webhook/verifySignature';
import { signedDelivery } from './support/stripeFixtures';

const oldSecret = 'whsec_old_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
const newSecret = 'whsec_new_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'secrets-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Replaces a file the way operators and orchestrators do: write a temporary file, then rename over. */
async function replaceAtomically(filePath: string, content: string): Promise<void> {
  const temporary = `${filePath}.tmp-${process.hrtime.bigint()}`;
  await writeFile(temporary, content, { mode: 0o600 });
  await rename(temporary, filePath);
}

async function waitFor(condition: () => boolean, timeoutMillis = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMillis;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const fingerprints = (store: SecretStore) => store.current().map((secret) => secret.fingerprint);

describe('the secrets file', () => {
  test('holds one secret per line; blank lines, spaces and CRs are ignored; repeats count once', () => {
    const secrets = parseSecrets(`\n  ${oldSecret}\r\n\n${newSecret}  \r\n${oldSecret}\n`, 'test');
    expect(secrets.map((s) => s.value)).toEqual([oldSecret, newSecret]);
  });

  test('a line that is not a whsec_ secret is an error naming the line, never its content', () => {
    const leaked = 'sk_live_do_not_print_me';
    expect(() => parseSecrets(`${oldSecret}\n\n${leaked}\n`, 'the file')).toThrow(SecretFileError);
    try {
      parseSecrets(`${oldSecret}\n\n${leaked}\n`, 'the file');
    } catch (error) {
      expect((error as Error).message).toContain('line 3');
      expect((error as Error).message).not.toContain(leaked);
    }
  });

  test('an empty file is an error', () => {
    expect(() => parseSecrets('\n \n', 'the file')).toThrow(/no webhook signing secret/);
  });
});

describe('which secret a delivery is credited to', () => {
  // The file after `rotate-webhook-secret` added the new secret: the old line first, the new one last.
  const inForce = parseSecrets(`${oldSecret}\n${newSecret}\n`, 'test');
  const creditedFingerprint = (signers: string[]) => {
    const delivery = signedDelivery(stripeEvent('checkout.session.completed', checkoutSession()), signers);
    return verifyStripeSignature({ body: delivery.body, signatureHeader: delivery.headers['stripe-signature'], secrets: inForce, nowMillis: Date.now(), toleranceSeconds: 300 });
  };

  test('a delivery signed with both secrets (a Dashboard roll) counts for the newest, whatever the order of its signatures', () => {
    expect(creditedFingerprint([oldSecret, newSecret])).toBe(fingerprintSecret(newSecret));
    expect(creditedFingerprint([newSecret, oldSecret])).toBe(fingerprintSecret(newSecret));
  });

  test('a delivery signed with the old secret alone counts for the old one: it still needs it', () => {
    expect(creditedFingerprint([oldSecret])).toBe(fingerprintSecret(oldSecret));
    expect(creditedFingerprint([newSecret])).toBe(fingerprintSecret(newSecret));
  });
});

describe('reloading without a restart', () => {
  test('sees a file replaced by an atomic rename', async () => {
    const file = path.join(dir, 'stripe_webhook_secret');
    await writeFile(file, `${oldSecret}\n`);
    const store = await watchSecretFile(file, { logger: captureLogger().logger, pollIntervalMillis: 60_000 });
    try {
      await replaceAtomically(file, `${oldSecret}\n${newSecret}\n`);
      await waitFor(() => store.current().length === 2);
      await replaceAtomically(file, `${newSecret}\n`);
      await waitFor(() => fingerprints(store).join() === fingerprintSecret(newSecret));
    } finally {
      store.close();
    }
  });

  test('sees a Kubernetes-style ..data symlink swap', async () => {
    // <dir>/stripe_webhook_secret -> ..data/stripe_webhook_secret, ..data -> a timestamped folder.
    await mkdir(path.join(dir, 'v1'));
    await writeFile(path.join(dir, 'v1', 'stripe_webhook_secret'), oldSecret);
    await symlink('v1', path.join(dir, '..data'));
    await symlink('..data/stripe_webhook_secret', path.join(dir, 'stripe_webhook_secret'));
    const store = await watchSecretFile(path.join(dir, 'stripe_webhook_secret'), { logger: captureLogger().logger, pollIntervalMillis: 60_000 });
    try {
      await mkdir(path.join(dir, 'v2'));
      await writeFile(path.join(dir, 'v2', 'stripe_webhook_secret'), newSecret);
      await symlink('v2', path.join(dir, '..data_tmp'));
      await rename(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
      await waitFor(() => fingerprints(store).join() === fingerprintSecret(newSecret));
    } finally {
      store.close();
    }
  });

  test('falls back to the timer when no directory event arrives', async () => {
    const file = path.join(dir, 'secret');
    await writeFile(file, oldSecret);
    const store = await watchSecretFile(file, { logger: captureLogger().logger, pollIntervalMillis: 50 });
    try {
      // Same inode, written in place: some filesystems and bind mounts report nothing for this.
      await writeFile(file, newSecret);
      await waitFor(() => fingerprints(store).join() === fingerprintSecret(newSecret));
    } finally {
      store.close();
    }
  });

  test('a reload that yields no valid secret keeps the previous ones and logs an error without the content', async () => {
    const file = path.join(dir, 'secret');
    await writeFile(file, oldSecret);
    const { logger, lines } = captureLogger();
    const store = await watchSecretFile(file, { logger, pollIntervalMillis: 50 });
    try {
      await replaceAtomically(file, 'whsec_ok_but\nnot-a-secret-value\n');
      await waitFor(() => lines.some((line) => line.includes('webhook signing secrets: file invalid; keeping the previous value')));
      expect(fingerprints(store)).toEqual([fingerprintSecret(oldSecret)]);
      expect(lines.join('\n')).not.toContain('not-a-secret-value');
      await replaceAtomically(file, '');
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect(fingerprints(store)).toEqual([fingerprintSecret(oldSecret)]);
    } finally {
      store.close();
    }
  });
});

describe('rotation while deliveries flow', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database.drop();
  });

  test('no delivery is rejected while the file goes old → old+new → new, and per-secret counts show the switch', async () => {
    const file = path.join(dir, 'stripe_webhook_secret');
    await writeFile(file, `${oldSecret}\n`);
    const store = await watchSecretFile(file, { logger: captureLogger().logger, pollIntervalMillis: 100 });
    const app: TestApp = await startTestApp(database.db, { secrets: store });
    try {
      const statuses: number[] = [];
      let sent = 0;
      let flowing = true;
      // Stripe signs with every secret of the endpoint during a roll: both v1 signatures in one header.
      const flow = (async () => {
        while (flowing) {
          const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: `user_rotation_${sent}`, metadata: { credits: '1' } }));
          sent++;
          statuses.push((await deliver(app.webhookUrl, event, { secrets: [oldSecret, newSecret] })).status);
        }
      })();
      await waitFor(() => sent >= 20);
      await replaceAtomically(file, `${oldSecret}\n${newSecret}\n`);
      await waitFor(() => store.current().length === 2);
      await waitFor(() => sent >= 40);
      await replaceAtomically(file, `${newSecret}\n`);
      await waitFor(() => store.current().length === 1 && store.current()[0]!.fingerprint === fingerprintSecret(newSecret));
      const sentAtSwitch = sent;
      await waitFor(() => sent >= sentAtSwitch + 20);
      flowing = false;
      await flow;

      expect(statuses.length).toBeGreaterThanOrEqual(60);
      expect(statuses.filter((status) => status !== 200)).toEqual([]);
      const { rows } = await database.db.query<{ count: number }>("SELECT count(*)::int AS count FROM stripe_events WHERE status = 'processed'");
      expect(rows[0]!.count).toBe(statuses.length);

      // The old secret alone is now refused; metrics show both fingerprints were used.
      const stale = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_stale', metadata: { credits: '1' } }));
      expect((await deliver(app.webhookUrl, stale, { secrets: [oldSecret] })).status).toBe(400);
      const metrics = await (await fetch(`${app.url}/metrics`)).text();
      expect(metrics).toContain(`fingerprint="${fingerprintSecret(oldSecret)}"`);
      expect(metrics).toContain(`fingerprint="${fingerprintSecret(newSecret)}"`);
      expect(metrics).not.toContain(oldSecret);

      // /webhook-secrets: what this process has loaded and verified, by fingerprint only.
      const usageText = await (await fetch(`${app.url}/webhook-secrets`)).text();
      expect(usageText).not.toContain(oldSecret);
      expect(usageText).not.toContain(newSecret);
      const usage = JSON.parse(usageText) as { counting_since: string; fingerprints: { fingerprint: string; loaded: boolean; verified_deliveries: number; last_verified_at: string | null }[] };
      expect(usage.fingerprints.map(({ fingerprint, loaded }) => ({ fingerprint, loaded }))).toEqual([
        { fingerprint: fingerprintSecret(newSecret), loaded: true },
        { fingerprint: fingerprintSecret(oldSecret), loaded: false },
      ]);
      const verified = usage.fingerprints.reduce((total, entry) => total + entry.verified_deliveries, 0);
      expect(verified).toBe(statuses.length);
      expect(usage.fingerprints[0]!.verified_deliveries).toBeGreaterThanOrEqual(20);
      expect(Date.parse(usage.fingerprints[0]!.last_verified_at!)).toBeGreaterThan(Date.now() - 60_000);
      // What a quiet period can be measured from: this process's start, before any delivery it counted.
      expect(Date.parse(usage.counting_since)).toBeLessThanOrEqual(Date.parse(usage.fingerprints[1]!.last_verified_at!));
    } finally {
      await app.close();
      store.close();
    }
  });
});
