/**
 * The billing API with real PostgreSQL and the local Stripe: the catalog, Checkout on the local Stripe's
 * hosted page, the webhook granting credits, sync-payment when the webhook is lost (or races it), the
 * ledger, CORS, body validation, and one user never reaching another's purchases.
 */
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import {
  callApi,
  newUser,
  packageCredits,
  packageId,
  planId,
  planMonthlyCredits,
  pressCheckoutButton,
  sessionToken,
  startBillingHarness,
  successUrl,
  type BillingHarness,
} from './support/billingHarness';
import { waitUntil } from './support/serviceProcess';
import { StreamClient } from './support/streamClient';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

let database: TestDatabase;
let harness: BillingHarness;
let base: string;
/** A webhook lost on the way: the endpoint is disabled in the local Stripe, as if it had never been reached. */
async function loseWebhooks(lost: boolean): Promise<void> {
  await harness.stripe.webhookEndpoints.update(harness.endpointId, { disabled: lost });
}

beforeAll(async () => {
  database = await createTestDatabase();
  harness = await startBillingHarness(database, { corsAllowedOrigins: ['https://shop.example.com'] });
  base = harness.app.url;
});
afterAll(async () => {
  await harness.close();
  await database.drop();
});
afterEach(() => loseWebhooks(false));

async function checkout(user: string, body: Record<string, unknown> = { package_id: packageId }, headers: Record<string, string> = {}) {
  return callApi(base, 'POST', '/api/v1/billing/checkout', { user, body, headers });
}

async function buyAndPay(user: string, action: 'pay' | 'pay_later' = 'pay'): Promise<string> {
  const opened = await checkout(user);
  expect(opened.status).toBe(201);
  expect(await pressCheckoutButton(opened.body.url as string, action)).toBe(303);
  return opened.body.session_id as string;
}

async function credits(user: string) {
  return (await callApi(base, 'GET', '/api/v1/billing/credits', { user })).body;
}

async function sync(user: string, body?: Record<string, unknown>, instance = base) {
  return callApi(instance, 'POST', '/api/v1/billing/sync-payment', { user, body });
}

/** The user may sync again at once (the rate limit is tested on its own). */
async function forgetLastSync(user: string): Promise<void> {
  await database.db.query("UPDATE billing_syncs SET last_sync_at = now() - interval '1 hour' WHERE user_id = $1", [user]);
}

async function purchaseGrants(sessionId: string): Promise<number> {
  const { rows } = await database.db.query<{ count: number }>("SELECT count(*)::int AS count FROM credit_ledger WHERE reason = 'credit_purchase' AND source_id = $1", [sessionId]);
  return rows[0]!.count;
}

test('the catalog lists packages and plans with the prices Stripe has for them', async () => {
  const answer = await callApi(base, 'GET', '/api/v1/billing/packages');
  expect(answer.status).toBe(200);
  expect(answer.body).toEqual({
    packages: [{ package_id: packageId, name: '500 credits', credits: packageCredits, unit_amount: 450, currency: 'usd' }],
    plans: [{ plan_id: planId, name: 'Pro', monthly_credits: planMonthlyCredits, unit_amount: 2900, currency: 'usd', interval: 'month' }],
  });
});

describe('checkout', () => {
  test('checkout → hosted page → webhook → balance: the stream shows the credits, the pending purchase comes and goes', async () => {
    const user = newUser();
    const stream = await StreamClient.open(`${base}/api/v1/billing/credits/stream`, { authorization: `Bearer ${await sessionToken(user)}` });
    try {
      expect(await stream.nextBalance()).toMatchObject({ total_credits: 0, pending_purchases: [] });
      const opened = await checkout(user);
      expect(opened.status).toBe(201);
      expect(opened.body.url).toMatch(new RegExp(`/c/pay/${opened.body.session_id}$`));
      const pending = await stream.balanceWhere((view) => (view.pending_purchases as unknown[]).length === 1);
      expect(pending.pending_purchases).toEqual([expect.objectContaining({ session_id: opened.body.session_id, package_id: packageId, credits: packageCredits, status: 'awaiting_payment' })]);

      const session = await harness.stripe.checkout.sessions.retrieve(opened.body.session_id as string);
      expect(session).toMatchObject({ mode: 'payment', client_reference_id: user, metadata: { user_id: user, credits: String(packageCredits) }, success_url: successUrl });

      expect(await pressCheckoutButton(opened.body.url as string, 'pay')).toBe(303);
      const paid = await stream.balanceWhere((view) => view.purchased_credits_balance === packageCredits);
      expect(paid).toMatchObject({ total_credits: packageCredits, pending_purchases: [] });
    } finally {
      stream.close();
    }
    const { rows } = await database.db.query<{ status: string }>('SELECT status FROM checkout_sessions WHERE user_id = $1', [user]);
    expect(rows).toEqual([{ status: 'complete' }]);
  });

  test('the same Idempotency-Key opens the same session once; reused for another purchase it is refused', async () => {
    const user = newUser();
    const first = await checkout(user, { package_id: packageId }, { 'idempotency-key': 'click-1' });
    const again = await checkout(user, { package_id: packageId }, { 'idempotency-key': 'click-1' });
    expect(again.body.session_id).toBe(first.body.session_id);
    // Another user's identical key is another key: nobody replays someone else's session.
    const other = await checkout(newUser(), { package_id: packageId }, { 'idempotency-key': 'click-1' });
    expect(other.body.session_id).not.toBe(first.body.session_id);
    const reused = await checkout(user, { plan_id: planId }, { 'idempotency-key': 'click-1' });
    expect(reused.status).toBe(409);
    expect(reused.body.error).toBe('idempotency_key_reused');
    const { rows } = await database.db.query('SELECT 1 FROM checkout_sessions WHERE user_id = $1', [user]);
    expect(rows).toHaveLength(1);
  });

  test('bad bodies get a 4xx that says what is wrong, and open nothing', async () => {
    const user = newUser();
    const cases: Array<[string, Parameters<typeof callApi>[3], number, string]> = [
      ['unknown package', { body: { package_id: 'price_nope' } }, 400, 'unknown_package'],
      ['unknown plan', { body: { plan_id: 'price_nope' } }, 400, 'unknown_plan'],
      ['both', { body: { package_id: packageId, plan_id: planId } }, 400, 'invalid_body'],
      ['neither', { body: {} }, 400, 'invalid_body'],
      ['no body', {}, 400, 'invalid_body'],
      ['a number for an id', { body: { package_id: 5 } }, 400, 'invalid_field'],
      ['another field (a user id)', { body: { package_id: packageId, user_id: 'someone_else' } }, 400, 'unknown_field'],
      ['not JSON', { rawBody: '{"package_id":', headers: { 'content-type': 'application/json' } }, 400, 'invalid_json'],
      ['an array', { rawBody: '[]', headers: { 'content-type': 'application/json' } }, 400, 'invalid_body'],
      ['a form', { rawBody: `package_id=${packageId}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415, 'unsupported_media_type'],
      ['too large', { rawBody: JSON.stringify({ package_id: 'x'.repeat(20_000) }), headers: { 'content-type': 'application/json' } }, 413, 'body_too_large'],
      ['a bad Idempotency-Key', { body: { package_id: packageId }, headers: { 'idempotency-key': 'a'.repeat(300) } }, 400, 'invalid_idempotency_key'],
    ];
    for (const [name, options, status, error] of cases) {
      const answer = await callApi(base, 'POST', '/api/v1/billing/checkout', { user, ...options });
      expect({ name, status: answer.status, error: answer.body.error }).toEqual({ name, status, error });
      expect(typeof answer.body.message).toBe('string');
    }
    const { rows } = await database.db.query('SELECT 1 FROM checkout_sessions WHERE user_id = $1', [user]);
    expect(rows).toEqual([]);
    expect((await callApi(base, 'POST', '/api/v1/billing/checkout', { body: { package_id: packageId } })).status).toBe(401);
  });

  test('Stripe failing is a 503 with Retry-After, Stripe refusing the key a 502 that quotes nothing of it; nothing is recorded', async () => {
    const user = newUser();
    harness.local.failNext(3, 500); // the first try and stripe-node's two retries
    const unavailable = await checkout(user);
    expect(unavailable.status).toBe(503);
    expect(unavailable.body.error).toBe('stripe_unavailable');
    expect(Number(unavailable.headers.get('retry-after'))).toBeGreaterThan(0);
    harness.local.failNext(1, 401);
    const refused = await checkout(user);
    expect(refused.status).toBe(502);
    expect(refused.body.message).toContain('STRIPE_API_KEY');
    expect(JSON.stringify(refused.body)).not.toMatch(/sk_test/);
    const { rows } = await database.db.query('SELECT 1 FROM checkout_sessions WHERE user_id = $1', [user]);
    expect(rows).toEqual([]);
  });

  test('a plan sells a subscription: its credits arrive through the webhook, and a second plan is refused while it runs', async () => {
    const user = newUser();
    const opened = await checkout(user, { plan_id: planId });
    expect(opened.status).toBe(201);
    expect(await pressCheckoutButton(opened.body.url as string, 'pay')).toBe(303);
    // Every event of the sign-up delivered, in whatever order: the plan's credits, the plan and its status.
    await harness.local.deliveriesSettled();
    expect(await credits(user)).toMatchObject({ credits_remaining: planMonthlyCredits, plan: 'Pro', subscription_status: 'active', current_period_end: expect.any(String) });
    // Closed by the sign-up's checkout.session.completed, in its own transaction.
    const { rows } = await database.db.query<{ status: string }>('SELECT status FROM checkout_sessions WHERE session_id = $1', [opened.body.session_id]);
    expect(rows).toEqual([{ status: 'complete' }]);
    const second = await checkout(user, { plan_id: planId });
    expect(second.status).toBe(409);
    expect(second.body.error).toBe('already_subscribed');
  });
});

describe('sync-payment', () => {
  test('a lost webhook: sync brings the credits, once, and the late webhook changes nothing', async () => {
    const user = newUser();
    await loseWebhooks(true);
    const sessionId = await buyAndPay(user);
    expect(await credits(user)).toMatchObject({ total_credits: 0, pending_purchases: [expect.objectContaining({ session_id: sessionId })] });

    const synced = await sync(user);
    expect(synced.status).toBe(200);
    expect(synced.body).toMatchObject({ user_id: user, purchased_credits_balance: packageCredits, pending_purchases: [], synced: { sessions: [{ session_id: sessionId, status: 'applied' }] } });
    // A read from Stripe names no event: the ledger says so, where a webhook's entry names its event.
    const { rows } = await database.db.query('SELECT stripe_event_id FROM credit_ledger WHERE source_id = $1', [sessionId]);
    expect(rows).toEqual([{ stripe_event_id: null }]);
    await forgetLastSync(user);
    expect((await sync(user)).body).toMatchObject({ purchased_credits_balance: packageCredits });

    // The webhook arrives after all (Stripe retried it): nothing more.
    await loseWebhooks(false);
    const [completed] = (await harness.stripe.events.list({ type: 'checkout.session.completed', limit: 100 })).data.filter((event) => (event.data.object as { id: string }).id === sessionId);
    expect((await harness.local.deliver(completed!, harness.app.webhookUrl)).status).toBe(200);
    expect(await balanceOf(database.db, user)).toEqual({ purchased: packageCredits, subscription: 0 });
    expect(await purchaseGrants(sessionId)).toBe(1);
  });

  test('the webhook and sync at the same moment grant once', async () => {
    await loseWebhooks(true);
    for (let round = 0; round < 5; round++) {
      const user = newUser();
      const sessionId = await buyAndPay(user);
      const [completed] = (await harness.stripe.events.list({ type: 'checkout.session.completed', limit: 100 })).data.filter((event) => (event.data.object as { id: string }).id === sessionId);
      const [delivered, synced] = await Promise.all([harness.local.deliver(completed!, harness.app.webhookUrl), sync(user)]);
      expect([delivered.status, synced.status]).toEqual([200, 200]);
      expect(await balanceOf(database.db, user)).toEqual({ purchased: packageCredits, subscription: 0 });
      expect(await purchaseGrants(sessionId)).toBe(1);
    }
  });

  test('a purchase paid later shows as processing until its payment arrives, which sync then brings', async () => {
    const user = newUser();
    await loseWebhooks(true);
    const sessionId = await buyAndPay(user, 'pay_later');
    const first = await sync(user);
    expect(first.body).toMatchObject({ total_credits: 0, synced: { sessions: [{ session_id: sessionId, status: 'processing' }] } });
    expect(first.body.pending_purchases).toEqual([expect.objectContaining({ session_id: sessionId, status: 'processing' })]);
    harness.local.settleDelayedPayment(sessionId, 'succeeded');
    await forgetLastSync(user);
    expect((await sync(user)).body).toMatchObject({ purchased_credits_balance: packageCredits, pending_purchases: [] });
  });

  test('a subscription bought while webhooks were lost is brought by sync', async () => {
    const user = newUser();
    await loseWebhooks(true);
    const opened = await checkout(user, { plan_id: planId });
    expect(await pressCheckoutButton(opened.body.url as string, 'pay')).toBe(303);
    const synced = await sync(user);
    expect(synced.body).toMatchObject({ credits_remaining: planMonthlyCredits, plan: 'Pro', subscription_status: 'active', synced: { subscription: { status: 'active' } } });
  });

  test('a subscription’s sign-up events and sync at the same moment grant its month once', async () => {
    await loseWebhooks(true);
    for (let round = 0; round < 3; round++) {
      const user = newUser();
      const opened = await checkout(user, { plan_id: planId });
      expect(await pressCheckoutButton(opened.body.url as string, 'pay')).toBe(303);
      const { subscription } = await harness.stripe.checkout.sessions.retrieve(opened.body.session_id as string);
      const signUp = (await harness.stripe.events.list({ limit: 100 })).data.filter((event) => JSON.stringify(event.data.object).includes(subscription as string));
      expect(signUp.map((event) => event.type)).toEqual(expect.arrayContaining(['checkout.session.completed', 'customer.subscription.created', 'invoice.paid']));

      const answers = await Promise.all([sync(user), ...signUp.map((event) => harness.local.deliver(event, harness.app.webhookUrl))]);
      expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 200));
      expect(await balanceOf(database.db, user)).toEqual({ purchased: 0, subscription: planMonthlyCredits });
      const { rows } = await database.db.query<{ reason: string }>("SELECT reason FROM credit_ledger WHERE user_id = $1 AND bucket = 'subscription'", [user]);
      expect(rows).toEqual([{ reason: 'subscription_period_allowance' }]);
    }
  });

  test('a pending session Stripe does not know (its Stripe was replaced) is closed as expired, not synced forever', async () => {
    const user = newUser();
    await database.db.query(
      "INSERT INTO checkout_sessions (session_id, user_id, mode, price_id, credits, livemode, expires_at) VALUES ($1, $2, 'payment', $3, 5, false, now() + interval '1 hour')",
      ['cs_test_forgotten_by_stripe', user, packageId],
    );
    expect((await credits(user)).pending_purchases).toHaveLength(1);
    const synced = await sync(user);
    expect(synced.status).toBe(200);
    expect(synced.body).toMatchObject({ pending_purchases: [], synced: { sessions: [{ session_id: 'cs_test_forgotten_by_stripe', status: 'expired' }] } });
  });

  test('one sync per user per interval, across replicas: then 429 with Retry-After', async () => {
    const user = newUser();
    const replica = await harness.startReplica();
    expect((await sync(user)).status).toBe(200);
    for (const instance of [base, replica.url]) {
      const limited = await sync(user, undefined, instance);
      expect(limited.status).toBe(429);
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(limited.body.error).toBe('rate_limited');
    }
    // Another user is not held back.
    expect((await sync(newUser(), undefined, replica.url)).status).toBe(200);
  });

  test('another user’s session id is answered like an unknown one, and nothing is applied', async () => {
    const owner = newUser();
    const intruder = newUser();
    await loseWebhooks(true);
    const sessionId = await buyAndPay(owner);
    const answer = await sync(intruder, { session_id: sessionId });
    expect(answer.status).toBe(404);
    expect(answer.body.error).toBe('unknown_session');
    await forgetLastSync(intruder);
    expect((await sync(intruder, { session_id: 'cs_test_does_not_exist' })).status).toBe(404);
    expect(await balanceOf(database.db, intruder)).toEqual({ purchased: 0, subscription: 0 });
    expect(await balanceOf(database.db, owner)).toEqual({ purchased: 0, subscription: 0 });
    // The owner's own sync of that session grants it to the owner.
    expect((await sync(owner, { session_id: sessionId })).body).toMatchObject({ user_id: owner, purchased_credits_balance: packageCredits });
  });
});

describe('ledger', () => {
  test('newest first, in pages joined by a cursor; another user’s cursor or id shows nothing of theirs', async () => {
    const user = newUser();
    const other = newUser();
    for (let i = 0; i < 3; i++) await buyAndPay(user);
    await buyAndPay(other);
    await waitUntil(async () => (await balanceOf(database.db, user)).purchased === 3 * packageCredits && (await balanceOf(database.db, other)).purchased === packageCredits, 10_000, 'the purchases');

    const first = await callApi(base, 'GET', '/api/v1/billing/ledger?limit=2', { user });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ object: 'list', has_more: true });
    const second = await callApi(base, 'GET', `/api/v1/billing/ledger?limit=2&starting_after=${first.body.next_cursor}`, { user });
    expect(second.body).toMatchObject({ has_more: false, next_cursor: null });
    const entries = [...(first.body.data as Array<Record<string, unknown>>), ...(second.body.data as Array<Record<string, unknown>>)];
    expect(entries.map((entry) => [entry.delta, entry.reason, entry.bucket])).toEqual(Array(3).fill([packageCredits, 'credit_purchase', 'purchased']));
    const ids = entries.map((entry) => Number(entry.id));
    expect([...ids].sort((a, b) => b - a)).toEqual(ids);

    const otherLedger = await callApi(base, 'GET', '/api/v1/billing/ledger', { user: other });
    const otherFirstId = (otherLedger.body.data as Array<{ id: string }>)[0]!.id;
    for (const query of [`?user_id=${other}`, `?starting_after=${Number(otherFirstId) + 1}`]) {
      const mine = await callApi(base, 'GET', `/api/v1/billing/ledger${query}&limit=100`.replace('ledger&', 'ledger?'), { user });
      expect(JSON.stringify(mine.body)).not.toContain(otherFirstId === undefined ? '-' : `"id":"${otherFirstId}"`);
    }
    for (const query of ['?limit=0', '?limit=101', '?limit=abc', '?starting_after=-1']) {
      expect((await callApi(base, 'GET', `/api/v1/billing/ledger${query}`, { user })).status).toBe(400);
    }
    expect((await callApi(base, 'GET', '/api/v1/billing/ledger')).status).toBe(401);
  });
});

describe('CORS for the product’s pages', () => {
  test('an allowed origin gets itself back and a preflight answer; others get no CORS headers and a 403 preflight', async () => {
    const preflight = await fetch(`${base}/api/v1/billing/checkout`, {
      method: 'OPTIONS',
      headers: { origin: 'https://shop.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://shop.example.com');
    expect(preflight.headers.get('access-control-allow-headers')).toMatch(/Authorization/);
    expect(preflight.headers.get('access-control-allow-credentials')).toBeNull();

    const simple = await fetch(`${base}/api/v1/billing/packages`, { headers: { origin: 'https://shop.example.com' } });
    expect(simple.headers.get('access-control-allow-origin')).toBe('https://shop.example.com');
    expect(simple.headers.get('vary')).toMatch(/Origin/);

    const foreign = await fetch(`${base}/api/v1/billing/packages`, { headers: { origin: 'https://evil.example.com' } });
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
    const foreignPreflight = await fetch(`${base}/api/v1/billing/credits`, { method: 'OPTIONS', headers: { origin: 'https://evil.example.com', 'access-control-request-method': 'GET' } });
    expect(foreignPreflight.status).toBe(403);

    // Servers only: the webhook and spending never answer to a browser's origin.
    const consume = await fetch(`${base}/api/v1/billing/credits/consume`, { method: 'OPTIONS', headers: { origin: 'https://shop.example.com', 'access-control-request-method': 'POST' } });
    expect(consume.headers.get('access-control-allow-origin')).toBeNull();
  });
});

test('another user’s id in the path, query or body of any route reaches nothing of theirs', async () => {
  const owner = newUser();
  const intruder = newUser();
  await buyAndPay(owner);
  await waitUntil(async () => (await balanceOf(database.db, owner)).purchased === packageCredits, 10_000, 'the owner’s purchase');
  const attempts: Array<[string, string, Parameters<typeof callApi>[3]]> = [
    ['GET', `/api/v1/billing/credits/${owner}`, {}],
    ['GET', `/api/v1/billing/ledger/${owner}`, {}],
    ['GET', `/api/v1/billing/credits?user_id=${owner}`, {}],
    ['GET', `/api/v1/billing/ledger?user_id=${owner}`, {}],
    ['POST', '/api/v1/billing/sync-payment', { body: { user_id: owner } }],
    ['POST', '/api/v1/billing/checkout', { body: { package_id: packageId, user_id: owner } }],
    ['POST', `/api/v1/billing/credits/stream-ticket?user_id=${owner}`, {}],
  ];
  for (const [method, path, options] of attempts) {
    const answer = await callApi(base, method, path, { user: intruder, ...options });
    // A 404 may echo the path it did not find; what must never appear is the owner's data.
    const text = JSON.stringify(answer.body);
    expect({ path, leaked: text.includes(`"user_id":"${owner}"`) || text.includes(`:${packageCredits}`) || text.includes('cs_test_') }).toEqual({ path, leaked: false });
  }
  // The ticket asked for with the owner's id in the query is the intruder's own.
  const issued = await callApi(base, 'POST', `/api/v1/billing/credits/stream-ticket?user_id=${owner}`, { user: intruder });
  const stream = await StreamClient.open(`${base}/api/v1/billing/credits/stream?ticket=${issued.body.ticket as string}`);
  try {
    expect(await stream.nextBalance()).toMatchObject({ user_id: intruder, total_credits: 0 });
  } finally {
    stream.close();
  }
  expect(await balanceOf(database.db, intruder)).toEqual({ purchased: 0, subscription: 0 });
});

test('every balance equals its ledger, no session is granted twice, no grant lacks a paid purchase', async () => {
  await harness.local.deliveriesSettled();
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});
