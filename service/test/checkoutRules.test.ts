/**
 * What a one-off Checkout session does to credits: who receives them, how many, and when a delayed
 * payment settles. Real deliveries to the real app on a real database; line items come from the local Stripe.
 */
import { randomUUID } from 'node:crypto';
import { parseCatalog } from '../credits/catalog';
import { createStripeClient, lineItemsFetcher } from '../stripeApi';
import { startLocalStripe, type LocalStripe } from '../../localStripe';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import { checkoutSession, stripeEvent, stripeId } from './support/stripeFixtures';
import { deliver, startTestApp, type TestApp } from './support/testApp';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';
import { eventRecord } from './support/records';

const packagePrice = 'price_pack_100_credits';
const packageCredits = 100;
const catalog = parseCatalog({ packages: { [packagePrice]: { credits: packageCredits, name: '100 credits' } } }, 'checkoutRules test catalog');

let database: TestDatabase;
let fakeStripe: LocalStripe;
let app: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  fakeStripe = await startLocalStripe();
  const stripe = createStripeClient('sk_test_checkout_rules', new URL(fakeStripe.baseUrl));
  app = await startTestApp(database.db, { eventContext: { catalog, fetchLineItems: lineItemsFetcher(stripe) } });
});
afterAll(async () => {
  await app.close();
  await fakeStripe.close();
  await database.drop();
});

const newUser = () => `user_${randomUUID()}`;

async function purchaseOf(sessionId: string) {
  const { rows } = await database.db.query<{ userId: string; status: string; credits: number }>(
    'SELECT user_id AS "userId", status, credits FROM credit_purchases WHERE stripe_checkout_session_id = $1',
    [sessionId],
  );
  return rows[0];
}

async function ledgerOf(userId: string) {
  const { rows } = await database.db.query<{ bucket: string; delta: number; reason: string; sourceId: string }>(
    'SELECT bucket, delta, reason, source_id AS "sourceId" FROM credit_ledger WHERE user_id = $1 ORDER BY id',
    [userId],
  );
  return rows;
}

async function usersNamed(...userIds: string[]) {
  const { rows } = await database.db.query<{ userId: string }>('SELECT user_id AS "userId" FROM service_subscriptions WHERE user_id = ANY($1)', [userIds]);
  return rows.map((row) => row.userId);
}

describe('who receives the credits', () => {
  test('metadata.user_id receives the credits when client_reference_id is absent', async () => {
    const user = newUser();
    const session = checkoutSession({ client_reference_id: null, metadata: { user_id: user, credits: '120' } });
    const response = await deliver(app.webhookUrl, stripeEvent('checkout.session.completed', session));
    expect(response.body).toEqual({ received: true, status: 'processed' });
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 120, subscription: 0 });
    expect(await ledgerOf(user)).toEqual([{ bucket: 'purchased', delta: 120, reason: 'credit_purchase', sourceId: session.id }]);
  });

  test('client_reference_id wins over metadata.user_id, which receives nothing', async () => {
    const referenced = newUser();
    const inMetadata = newUser();
    const session = checkoutSession({ client_reference_id: referenced, metadata: { user_id: inMetadata, credits: '80' } });
    await deliver(app.webhookUrl, stripeEvent('checkout.session.completed', session));
    expect(await balanceOf(database.db, referenced)).toEqual({ purchased: 80, subscription: 0 });
    expect(await usersNamed(inMetadata)).toEqual([]);
    expect(await ledgerOf(inMetadata)).toEqual([]);
  });

  test('a session without any user is unmatched, credits nobody and stores and logs the reason', async () => {
    const session = checkoutSession({ client_reference_id: null, metadata: { credits: '500' } });
    const event = stripeEvent('checkout.session.completed', session);
    const response = await deliver(app.webhookUrl, event);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ received: true, status: 'unmatched' });
    expect(await eventRecord(database.db, event.id)).toEqual({
      type: 'checkout.session.completed',
      status: 'unmatched',
      error: 'session has no client_reference_id or metadata.user_id',
    });
    expect(await purchaseOf(session.id)).toBeUndefined();
    const { rows } = await database.db.query('SELECT 1 FROM credit_ledger WHERE source_id = $1', [session.id]);
    expect(rows).toEqual([]);
    const logged = app.logLines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.eventId === event.id);
    expect(logged).toContainEqual(expect.objectContaining({ reason: 'session has no client_reference_id or metadata.user_id', level: 40 }));
  });

  test('a blank client_reference_id is not a user: metadata.user_id receives the credits', async () => {
    const user = newUser();
    const session = checkoutSession({ client_reference_id: '   ', metadata: { user_id: user, credits: '15' } });
    await deliver(app.webhookUrl, stripeEvent('checkout.session.completed', session));
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 15, subscription: 0 });
  });
});

describe('how many credits', () => {
  test.each(['abc', '-5', '0', '1.5', '', '1e3', '10 credits'])('metadata.credits %j is unmatched and grants nothing', async (credits) => {
    const user = newUser();
    const session = checkoutSession({ client_reference_id: user, metadata: { credits } });
    const event = stripeEvent('checkout.session.completed', session);
    const response = await deliver(app.webhookUrl, event);
    expect(response.status).toBe(200);
    expect(response.body.status).toBe('unmatched');
    expect(await eventRecord(database.db, event.id)).toMatchObject({ status: 'unmatched', error: 'metadata.credits is not a positive whole number' });
    expect(await purchaseOf(session.id)).toBeUndefined();
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 0, subscription: 0 });
    expect(await ledgerOf(user)).toEqual([]);
    // Never a fallback to the catalog when the merchant wrote credits by hand and got them wrong.
    expect(fakeStripe.requests.filter((request) => request.path.includes(session.id))).toEqual([]);
  });

  test('catalog credits come from the line items fetched from Stripe, multiplied by quantity, fetched once', async () => {
    const user = newUser();
    const session = checkoutSession({ client_reference_id: user, metadata: {} });
    fakeStripe.setCheckoutLineItems(session.id, [
      { priceId: packagePrice, quantity: 3 },
      { priceId: stripeId('price'), quantity: 2 }, // not in the catalog: sells no credits, does not spoil the rest
    ]);
    const event = stripeEvent('checkout.session.completed', session);
    const response = await deliver(app.webhookUrl, event);
    expect(response.body.status).toBe('processed');
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 3 * packageCredits, subscription: 0 });
    expect(await purchaseOf(session.id)).toEqual({ userId: user, status: 'paid', credits: 3 * packageCredits });
    // A redelivery is answered from the database, without asking Stripe again.
    expect((await deliver(app.webhookUrl, event)).body.status).toBe('duplicate');
    const lineItemRequests = fakeStripe.requests.filter((request) => request.path === `/v1/checkout/sessions/${session.id}/line_items`);
    expect(lineItemRequests.map((request) => request.status)).toEqual([200]);
  });

  test('when Stripe cannot be reached for the line items, the delivery fails with 500 and its retry grants once', async () => {
    const user = newUser();
    const session = checkoutSession({ client_reference_id: user, metadata: {} });
    fakeStripe.setCheckoutLineItems(session.id, [{ priceId: packagePrice, quantity: 1 }]);
    const event = stripeEvent('checkout.session.completed', session);
    fakeStripe.failNext(3, 500); // the first try and stripe-node's two retries
    const failed = await deliver(app.webhookUrl, event);
    expect(failed.status).toBe(500);
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 0, subscription: 0 });
    expect(await eventRecord(database.db, event.id)).toMatchObject({ status: 'failed' });
    expect((await deliver(app.webhookUrl, event)).body.status).toBe('processed');
    expect(await balanceOf(database.db, user)).toEqual({ purchased: packageCredits, subscription: 0 });
  });

  test('a session whose prices are all unknown to the catalog is unmatched and grants nothing', async () => {
    const user = newUser();
    const session = checkoutSession({ client_reference_id: user, metadata: {} });
    fakeStripe.setCheckoutLineItems(session.id, [{ priceId: stripeId('price'), quantity: 5 }]);
    const event = stripeEvent('checkout.session.completed', session);
    const response = await deliver(app.webhookUrl, event);
    expect(response.body.status).toBe('unmatched');
    expect(await eventRecord(database.db, event.id)).toMatchObject({ status: 'unmatched', error: "none of the session's prices is in the credit catalog" });
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 0, subscription: 0 });
    expect(await purchaseOf(session.id)).toBeUndefined();
  });

  test('an unmatched session is applied when it comes again once the catalog is fixed, and grants once (defect 9)', async () => {
    const user = newUser();
    const newPackage = 'price_pack_added_later';
    const session = checkoutSession({ client_reference_id: user, metadata: {} });
    fakeStripe.setCheckoutLineItems(session.id, [{ priceId: newPackage, quantity: 2 }]);
    const event = stripeEvent('checkout.session.completed', session);
    expect((await deliver(app.webhookUrl, event)).body.status).toBe('unmatched');

    // The operator adds the package to the catalog and restarts; Stripe's resend (or the replay) brings the event again.
    const fixed = parseCatalog({ packages: { [newPackage]: { credits: 30 } } }, 'fixed catalog');
    const stripe = createStripeClient('sk_test_checkout_rules', new URL(fakeStripe.baseUrl));
    const afterFix = await startTestApp(database.db, { eventContext: { catalog: fixed, fetchLineItems: lineItemsFetcher(stripe) } });
    try {
      expect((await deliver(afterFix.webhookUrl, event)).body.status).toBe('processed');
      expect((await deliver(afterFix.webhookUrl, event)).body.status).toBe('duplicate');
    } finally {
      await afterFix.close();
    }
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 60, subscription: 0 });
    expect(await eventRecord(database.db, event.id)).toMatchObject({ status: 'processed', error: null });
  });

  test('no_payment_required (a 100% discount) counts as paid and grants the credits', async () => {
    const user = newUser();
    const session = checkoutSession({ client_reference_id: user, payment_status: 'no_payment_required', amount_total: 0, metadata: { credits: '45' } });
    await deliver(app.webhookUrl, stripeEvent('checkout.session.completed', session));
    expect(await purchaseOf(session.id)).toEqual({ userId: user, status: 'paid', credits: 45 });
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 45, subscription: 0 });
  });
});

describe('delayed payment methods', () => {
  const unpaidSession = (user: string, credits: number) =>
    checkoutSession({ client_reference_id: user, payment_status: 'unpaid', metadata: { credits: String(credits) } });
  const settled = (session: ReturnType<typeof checkoutSession>) => ({ ...session, payment_status: 'paid' as const });

  test('an unpaid session creates a pending purchase; async_payment_succeeded grants it once, a duplicate grants nothing more', async () => {
    const user = newUser();
    const session = unpaidSession(user, 300);
    const completed = await deliver(app.webhookUrl, stripeEvent('checkout.session.completed', session));
    expect(completed.body.status).toBe('processed');
    expect(await purchaseOf(session.id)).toEqual({ userId: user, status: 'pending', credits: 300 });
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 0, subscription: 0 });

    const succeeded = stripeEvent('checkout.session.async_payment_succeeded', settled(session));
    expect((await deliver(app.webhookUrl, succeeded)).body.status).toBe('processed');
    expect(await purchaseOf(session.id)).toEqual({ userId: user, status: 'paid', credits: 300 });
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 300, subscription: 0 });

    // The same delivery again, and another succeeded event for the same session.
    expect((await deliver(app.webhookUrl, succeeded)).body.status).toBe('duplicate');
    expect((await deliver(app.webhookUrl, stripeEvent('checkout.session.async_payment_succeeded', settled(session)))).body.status).toBe('processed');
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 300, subscription: 0 });
    expect(await ledgerOf(user)).toEqual([{ bucket: 'purchased', delta: 300, reason: 'credit_purchase', sourceId: session.id }]);
  });

  test('async_payment_failed marks the pending purchase failed and grants nothing', async () => {
    const user = newUser();
    const session = unpaidSession(user, 90);
    await deliver(app.webhookUrl, stripeEvent('checkout.session.completed', session));
    const failed = await deliver(app.webhookUrl, stripeEvent('checkout.session.async_payment_failed', session));
    expect(failed.body.status).toBe('processed');
    expect(await purchaseOf(session.id)).toEqual({ userId: user, status: 'failed', credits: 90 });
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 0, subscription: 0 });
    expect(await ledgerOf(user)).toEqual([]);
  });

  test('async_payment_succeeded arriving before the unpaid completed event grants exactly once', async () => {
    const user = newUser();
    const session = unpaidSession(user, 64);
    expect((await deliver(app.webhookUrl, stripeEvent('checkout.session.async_payment_succeeded', settled(session)))).body.status).toBe('processed');
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 64, subscription: 0 });
    expect((await deliver(app.webhookUrl, stripeEvent('checkout.session.completed', session))).body.status).toBe('processed');
    expect(await purchaseOf(session.id)).toEqual({ userId: user, status: 'paid', credits: 64 });
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 64, subscription: 0 });
    expect(await ledgerOf(user)).toHaveLength(1);
  });
});

describe('events that sell no credits', () => {
  test("a checkout session in mode 'setup' is ignored and recorded", async () => {
    const user = newUser();
    const session = checkoutSession({ client_reference_id: user, mode: 'setup', payment_status: 'no_payment_required', payment_intent: null, metadata: { credits: '100' } });
    const event = stripeEvent('checkout.session.completed', session);
    const response = await deliver(app.webhookUrl, event);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ received: true, status: 'ignored' });
    expect(await eventRecord(database.db, event.id)).toEqual({ type: 'checkout.session.completed', status: 'ignored', error: 'checkout mode "setup" sells no credits' });
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 0, subscription: 0 });
    expect(await purchaseOf(session.id)).toBeUndefined();
  });

  test('an event type the service does not handle is answered 200 ignored and recorded once', async () => {
    const event = stripeEvent('invoice.payment_succeeded', { id: stripeId('in'), object: 'invoice', livemode: false });
    const response = await deliver(app.webhookUrl, event);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ received: true, status: 'ignored' });
    expect(await eventRecord(database.db, event.id)).toEqual({ type: 'invoice.payment_succeeded', status: 'ignored', error: null });
    expect((await deliver(app.webhookUrl, event)).body).toEqual({ received: true, status: 'duplicate' });
  });
});

describe('during a rollout', () => {
  test("the previous release's purchase call (13 arguments, before migration 006) still grants once", async () => {
    const user = newUser();
    const sessionId = stripeId('cs');
    const eventId = stripeId('evt');
    const call = () =>
      database.db.query<{ result_status: string }>('SELECT result_status FROM credit_event_purchase($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)', [
        eventId, 'checkout.session.completed', false, Math.floor(Date.now() / 1000), null,
        user, sessionId, null, 40, 500, 'usd', false, 'paid',
      ]);
    expect((await call()).rows).toEqual([{ result_status: 'processed' }]);
    expect((await call()).rows).toEqual([{ result_status: 'duplicate' }]);
    expect(await balanceOf(database.db, user)).toEqual({ purchased: 40, subscription: 0 });
  });
});

test('every balance equals its ledger, no session is granted twice, no grant lacks a paid purchase', async () => {
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});
