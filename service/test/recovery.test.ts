import { createStripeClient } from '../stripeApi';
import { emptyCatalog, parseCatalog } from '../credits/catalog';
import { recoverMissedEvents } from '../recovery';
import { parseSince } from '../../scripts/recover-missed-events';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';
import { deliver, startTestApp, type TestApp } from './support/testApp';
import { startLocalStripe, type LocalStripe } from '../../localStripe';
import { checkoutSession, stripeEvent, unixSeconds } from './support/stripeFixtures';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import { eventRecord } from './support/records';
import { monthlyPeriod, SubscriptionStory } from './support/subscriptionStory';

let database: TestDatabase;
let fake: LocalStripe;
let app: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  fake = await startLocalStripe();
  app = await startTestApp(database.db);
});
afterAll(async () => {
  await app.close();
  await fake.close();
  await database.drop();
});

const purchase = (userId: string, credits: number, created: number, livemode = false) =>
  stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, livemode, metadata: { credits: String(credits) } }), { created });

test('missed events are applied from Stripe\'s event list, and delivered ones are not applied again', async () => {
  const now = unixSeconds();
  const delivered = purchase('user_recovered', 10, now - 3600);
  const missed = purchase('user_recovered', 20, now - 1800);
  const tooOld = purchase('user_recovered', 40, now - 5 * 86400);
  const otherMode = purchase('user_recovered', 80, now - 60, true);
  for (const event of [delivered, missed, tooOld, otherMode]) fake.addEvent(event);
  expect((await deliver(app.webhookUrl, delivered)).body.status).toBe('processed');

  const stripe = createStripeClient('sk_test_recovery', new URL(fake.baseUrl));
  const options = { db: database.db, stripe, stripeMode: 'test' as const, eventContext: { catalog: emptyCatalog(), fetchLineItems: undefined }, sinceSeconds: now - 86400 };

  const dryRun = await recoverMissedEvents({ ...options, dryRun: true });
  expect(dryRun.listed).toBe(2); // the test key sees test-mode events only, and only those since the cut-off
  expect(await balanceOf(database.db, 'user_recovered')).toEqual({ purchased: 10, subscription: 0 });

  const first = await recoverMissedEvents(options);
  expect(first).toMatchObject({ listed: 2, processed: 1, duplicate: 1, failed: 0 });
  expect(await balanceOf(database.db, 'user_recovered')).toEqual({ purchased: 30, subscription: 0 });

  const again = await recoverMissedEvents(options);
  expect(again).toMatchObject({ listed: 2, processed: 0, duplicate: 2 });
  expect(await balanceOf(database.db, 'user_recovered')).toEqual({ purchased: 30, subscription: 0 });
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});

test('an event that fails keeps its reason in stripe_events.error and in the report, and a later run applies it (defect 11)', async () => {
  const now = unixSeconds();
  const failing = purchase('user_recovery_fault', 7, now - 600);
  fake.addEvent(failing);
  // A real database fault where the purchase is written: the ledger refuses this user's entries.
  await database.db.query(`
    CREATE FUNCTION test_refuse_recovered() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.user_id = 'user_recovery_fault' THEN RAISE EXCEPTION 'injected recovery fault'; END IF; RETURN NEW; END $$;
    CREATE TRIGGER test_refuse_recovered BEFORE INSERT ON credit_ledger FOR EACH ROW EXECUTE FUNCTION test_refuse_recovered();`);
  const stripe = createStripeClient('sk_test_recovery', new URL(fake.baseUrl));
  const reported: Array<[string, string, string | undefined]> = [];
  const options = {
    db: database.db,
    stripe,
    stripeMode: 'test' as const,
    eventContext: { catalog: emptyCatalog(), fetchLineItems: undefined },
    sinceSeconds: now - 700,
    onApplied: (event: { id: string }, outcome: string, reason?: string) => reported.push([event.id, outcome, reason]),
  };
  try {
    expect(await recoverMissedEvents(options)).toMatchObject({ failed: 1 });
    expect(reported).toContainEqual([failing.id, 'failed', 'injected recovery fault']);
    expect(await eventRecord(database.db, failing.id)).toEqual({ type: 'checkout.session.completed', status: 'failed', error: 'injected recovery fault' });
  } finally {
    await database.db.query('DROP TRIGGER test_refuse_recovered ON credit_ledger');
  }
  expect(await recoverMissedEvents(options)).toMatchObject({ processed: 1, failed: 0 });
  expect(await balanceOf(database.db, 'user_recovery_fault')).toEqual({ purchased: 7, subscription: 0 });
});

test('an unmatched event is applied by a replay once its cause is fixed (here a plan added to the catalog), and grants once', async () => {
  const now = unixSeconds();
  const story = new SubscriptionStory({ createdSeconds: now - 3000 });
  const state = { period: monthlyPeriod(now - 3000, 0), plan: { priceId: 'price_recovery_plan', monthlyCredits: 0, unitAmount: 900 } };
  const events = [
    story.signUp({ created: now - 3000 }),
    story.event('customer.subscription.created', { ...state, created: now - 3000 }),
    story.paidInvoice({ ...state, billingReason: 'subscription_create', created: now - 3000 }),
  ];
  for (const event of events) {
    fake.addEvent(event);
    await deliver(app.webhookUrl, event);
  }
  expect(await eventRecord(database.db, events[2]!.id)).toMatchObject({ status: 'unmatched' });
  const stripe = createStripeClient('sk_test_recovery', new URL(fake.baseUrl));
  const fixed = parseCatalog({ plans: { price_recovery_plan: { monthlyCredits: 900 } } }, 'fixed catalog');
  const options = { db: database.db, stripe, stripeMode: 'test' as const, eventContext: { catalog: fixed, fetchLineItems: undefined }, sinceSeconds: now - 3600 };
  expect(await recoverMissedEvents(options)).toMatchObject({ unmatched: 0 });
  expect(await recoverMissedEvents(options)).toMatchObject({ processed: 0, unmatched: 0 });
  expect(await balanceOf(database.db, story.user)).toEqual({ purchased: 0, subscription: 900 });
});

test('--since accepts hours, days and ISO dates, and refuses anything else', () => {
  const now = 1_800_000_000;
  expect(parseSince('72h', now)).toBe(now - 72 * 3600);
  expect(parseSince('3d', now)).toBe(now - 3 * 86400);
  expect(parseSince('2027-01-15T00:00:00Z', now)).toBe(Date.parse('2027-01-15T00:00:00Z') / 1000);
  expect(() => parseSince('yesterday', now)).toThrow('--since must look like');
});
