import { createStripeClient } from '../stripeApi';
import { emptyCatalog } from '../credits/catalog';
import { recoverMissedEvents } from '../recovery';
import { parseSince } from '../../scripts/recover-missed-events';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';
import { deliver, startTestApp, type TestApp } from './support/testApp';
import { startLocalStripe, type LocalStripe } from '../../localStripe';
import { checkoutSession, stripeEvent, unixSeconds } from './support/stripeFixtures';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';

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

test('--since accepts hours, days and ISO dates, and refuses anything else', () => {
  const now = 1_800_000_000;
  expect(parseSince('72h', now)).toBe(now - 72 * 3600);
  expect(parseSince('3d', now)).toBe(now - 3 * 86400);
  expect(parseSince('2027-01-15T00:00:00Z', now)).toBe(Date.parse('2027-01-15T00:00:00Z') / 1000);
  expect(() => parseSince('yesterday', now)).toThrow('--since must look like');
});
