/**
 * replayEvents in process, against a real database and the local Stripe: what is applied, what the cursor
 * records, the warnings, the rate limit. The script as a process (kill -9, exit codes) is tested in
 * scripts/test/replayEvents.test.ts; the service's periodic replay in periodicReplay.test.ts.
 */
import { createStripeClient } from '../stripeApi';
import { emptyCatalog, parseCatalog } from '../credits/catalog';
import { readReplayCursor } from '../replay/cursor';
import { backoffDelayMillis, RateLimitExhaustedError, withRateLimitBackoff, type BackoffOptions } from '../replay/rateLimitBackoff';
import { cursorOverlapSeconds, replayEvents, replayOneEvent, type ReplayOptions } from '../replay/replayEvents';
import { parseSince } from '../../scripts/replay-events';
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
beforeEach(async () => {
  fake.reset();
  await database.db.query('DELETE FROM replay_cursor');
});

const purchase = (userId: string, credits: number, created: number, livemode = false) =>
  stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, livemode, metadata: { credits: String(credits) } }), { created });

/** Waits recorded instead of slept. */
function recordedBackoff(): BackoffOptions & { waits: number[] } {
  const waits: number[] = [];
  return { maxAttempts: 4, baseDelayMillis: 1_000, maxDelayMillis: 8_000, random: () => 0.5, sleep: async (millis) => void waits.push(millis), waits };
}

function options(overrides: Partial<ReplayOptions> = {}): ReplayOptions {
  return {
    db: database.db,
    stripe: createStripeClient('sk_test_replay', new URL(fake.baseUrl)),
    stripeMode: 'test',
    eventContext: { catalog: emptyCatalog(), fetchLineItems: undefined },
    start: { kind: 'since', sinceSeconds: unixSeconds() - 86_400 },
    backoff: recordedBackoff(),
    ...overrides,
  };
}

test("missed events are applied from Stripe's event list, and delivered ones are not applied again", async () => {
  const now = unixSeconds();
  const delivered = purchase('user_recovered', 10, now - 3600);
  const missed = purchase('user_recovered', 20, now - 1800);
  const tooOld = purchase('user_recovered', 40, now - 5 * 86400);
  const otherMode = purchase('user_recovered', 80, now - 60, true);
  for (const event of [delivered, missed, tooOld, otherMode]) fake.addEvent(event);
  expect((await deliver(app.webhookUrl, delivered)).body.status).toBe('processed');

  const dryRun = await replayEvents(options({ dryRun: true }));
  expect(dryRun.listed).toBe(2); // the test key sees test-mode events only, and only those since the start
  expect(await balanceOf(database.db, 'user_recovered')).toEqual({ purchased: 10, subscription: 0 });
  expect(await readReplayCursor(database.db, false)).toBeUndefined();

  const first = await replayEvents(options());
  expect(first).toMatchObject({ listed: 2, processed: 1, duplicate: 1, failed: 0 });
  expect(await balanceOf(database.db, 'user_recovered')).toEqual({ purchased: 30, subscription: 0 });

  const again = await replayEvents(options());
  expect(again).toMatchObject({ listed: 2, processed: 0, duplicate: 2 });
  expect(await balanceOf(database.db, 'user_recovered')).toEqual({ purchased: 30, subscription: 0 });
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});

test('the cursor records the last event applied; a replay from it lists only from a short overlap before it', async () => {
  const now = unixSeconds();
  const events = [0, 1, 2].map((index) => purchase('user_cursor', 5, now - 7200 + index * 1200));
  for (const event of events) fake.addEvent(event);
  const first = await replayEvents(options());
  expect(first).toMatchObject({ processed: 3, cursor: { eventId: events[2]!.id, createdSeconds: events[2]!.created } });
  expect(await readReplayCursor(database.db, false)).toMatchObject({ eventId: events[2]!.id, createdSeconds: events[2]!.created });

  const later = purchase('user_cursor', 7, now - 1);
  fake.addEvent(later);
  const fromCursor = await replayEvents(options({ start: { kind: 'cursor', sinceSecondsWithoutCursor: now - 86_400 } }));
  // The events before the overlap are not listed again: only the cursor's own event (a duplicate) and the new one.
  expect(fromCursor).toMatchObject({ fromSeconds: events[2]!.created - cursorOverlapSeconds, listed: 2, processed: 1, duplicate: 1, cursor: { eventId: later.id } });
  expect(await balanceOf(database.db, 'user_cursor')).toEqual({ purchased: 22, subscription: 0 });
});

test('a replay that finds only duplicates still moves the cursor to the last of them', async () => {
  const now = unixSeconds();
  const events = [0, 1, 2].map((index) => purchase('user_duplicates', 1, now - 600 + index));
  for (const event of events) fake.addEvent(event);
  await replayEvents(options());
  await database.db.query('DELETE FROM replay_cursor');
  expect(await replayEvents(options())).toMatchObject({ processed: 0, duplicate: 3, cursor: { eventId: events[2]!.id } });
  expect(await readReplayCursor(database.db, false)).toMatchObject({ eventId: events[2]!.id });
});

test('without a cursor, a replay from the cursor starts at the given fallback and stores one', async () => {
  const now = unixSeconds();
  const old = purchase('user_fallback', 3, now - 3 * 3600);
  const recent = purchase('user_fallback', 4, now - 600);
  for (const event of [old, recent]) fake.addEvent(event);
  const summary = await replayEvents(options({ start: { kind: 'cursor', sinceSecondsWithoutCursor: now - 3600 } }));
  expect(summary).toMatchObject({ listed: 1, processed: 1, cursor: { eventId: recent.id } });
});

test('a replay --since later than the cursor leaves the cursor where it is, and says so', async () => {
  const now = unixSeconds();
  const early = purchase('user_gap', 1, now - 7200);
  fake.addEvent(early);
  await replayEvents(options({ start: { kind: 'since', sinceSeconds: now - 7300 } }));
  const late = purchase('user_gap', 2, now - 60);
  fake.addEvent(late);
  const skipping = await replayEvents(options({ start: { kind: 'since', sinceSeconds: now - 120 } }));
  expect(skipping).toMatchObject({ processed: 1, cursor: { eventId: early.id } });
  expect(skipping.warnings.join('\n')).toContain('The cursor stays at');
  expect(await readReplayCursor(database.db, false)).toMatchObject({ eventId: early.id });
});

test('events are listed oldest first across days and pages, and each is applied once', async () => {
  const now = unixSeconds();
  // 3 days back, 130 events on the last day (two pages), some in the same second.
  const events = [
    purchase('user_pages', 1, now - 3 * 86_400 + 10),
    purchase('user_pages', 1, now - 2 * 86_400 + 10),
    ...Array.from({ length: 130 }, (_, index) => purchase('user_pages', 1, now - 3600 + Math.floor(index / 3))),
  ];
  for (const event of events) fake.addEvent(event);
  const applied: string[] = [];
  const summary = await replayEvents(options({ start: { kind: 'since', sinceSeconds: now - 3 * 86_400 }, nowSeconds: () => now, onApplied: (event) => applied.push(event.id) }));
  expect(summary).toMatchObject({ listed: 132, processed: 132, cursor: { eventId: events.at(-1)!.id } });
  expect(applied).toEqual(events.map((event) => event.id));
  expect(await balanceOf(database.db, 'user_pages')).toEqual({ purchased: 132, subscription: 0 });
  // One list per day-long window and a second page for the last one.
  const eventLists = fake.requests.filter((request) => request.path === '/v1/events');
  expect(eventLists.length).toBe(4);
  expect(eventLists.at(-1)?.query).toMatchObject({ starting_after: expect.stringMatching(/^evt_/) });
});

test('an event that fails keeps its reason, stops the cursor before it, and a later run from the cursor applies it', async () => {
  const now = unixSeconds();
  const before = purchase('user_ok_before', 1, now - 900);
  const failing = purchase('user_recovery_fault', 7, now - 600);
  const after = purchase('user_ok_after', 1, now - 300);
  for (const event of [before, failing, after]) fake.addEvent(event);
  // A real database fault where the purchase is written: the ledger refuses this user's entries.
  await database.db.query(`
    CREATE FUNCTION test_refuse_recovered() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.user_id = 'user_recovery_fault' THEN RAISE EXCEPTION 'injected recovery fault'; END IF; RETURN NEW; END $$;
    CREATE TRIGGER test_refuse_recovered BEFORE INSERT ON credit_ledger FOR EACH ROW EXECUTE FUNCTION test_refuse_recovered();`);
  const reported: Array<[string, string, string | undefined]> = [];
  try {
    const summary = await replayEvents(options({ start: { kind: 'cursor', sinceSecondsWithoutCursor: now - 1000 }, onApplied: (event, outcome, reason) => reported.push([event.id, outcome, reason]) }));
    expect(summary).toMatchObject({ processed: 2, failed: 1, cursor: { eventId: before.id } });
    expect(reported).toContainEqual([failing.id, 'failed', 'injected recovery fault']);
    expect(await eventRecord(database.db, failing.id)).toEqual({ type: 'checkout.session.completed', status: 'failed', error: 'injected recovery fault' });
  } finally {
    await database.db.query('DROP TRIGGER test_refuse_recovered ON credit_ledger; DROP FUNCTION test_refuse_recovered()');
  }
  const retry = await replayEvents(options({ start: { kind: 'cursor', sinceSecondsWithoutCursor: now - 1000 } }));
  expect(retry).toMatchObject({ processed: 1, failed: 0, cursor: { eventId: after.id } });
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
  const fixed = parseCatalog({ plans: { price_recovery_plan: { monthlyCredits: 900 } } }, 'fixed catalog');
  const replay = options({ eventContext: { catalog: fixed, fetchLineItems: undefined }, start: { kind: 'since', sinceSeconds: now - 3600 } });
  expect(await replayEvents(replay)).toMatchObject({ unmatched: 0 });
  expect(await replayEvents(replay)).toMatchObject({ processed: 0, unmatched: 0 });
  expect(await balanceOf(database.db, story.user)).toEqual({ purchased: 0, subscription: 900 });
});

test('--event fetches one event by id and applies it once; the cursor does not move', async () => {
  const now = unixSeconds();
  const one = purchase('user_one_event', 9, now - 100);
  fake.addEvent(one);
  const changed: string[] = [];
  expect(await replayOneEvent({ ...options(), onBalanceChanged: (user) => changed.push(user) }, one.id)).toMatchObject({ outcome: 'processed' });
  expect(await replayOneEvent(options(), one.id)).toMatchObject({ outcome: 'duplicate' });
  expect(await replayOneEvent(options({ dryRun: true }), one.id)).toEqual({ event: expect.objectContaining({ id: one.id }) });
  expect(changed).toEqual(['user_one_event']);
  expect(await balanceOf(database.db, 'user_one_event')).toEqual({ purchased: 9, subscription: 0 });
  expect(await readReplayCursor(database.db, false)).toBeUndefined();
  await expect(replayOneEvent(options(), 'evt_unknown')).rejects.toMatchObject({ statusCode: 404 });
});

test('a start older than 25 days is warned about, older than 30 days more so; a recent one is not', async () => {
  const now = unixSeconds();
  const at26Days = await replayEvents(options({ dryRun: true, start: { kind: 'since', sinceSeconds: now - 26 * 86_400 } }));
  expect(at26Days.warnings).toEqual([expect.stringContaining('is 26 days old: Stripe lists events of the last 30 days only')]);
  const at31Days = await replayEvents(options({ dryRun: true, start: { kind: 'since', sinceSeconds: now - 31 * 86_400 } }));
  expect(at31Days.warnings).toEqual([expect.stringContaining('cannot be replayed any more')]);
  expect((await replayEvents(options({ dryRun: true, start: { kind: 'since', sinceSeconds: now - 24 * 86_400 } }))).warnings).toEqual([]);

  // The stored cursor's age counts the same way.
  const old = purchase('user_old_cursor', 1, now - 27 * 86_400);
  fake.addEvent(old);
  await replayEvents(options({ start: { kind: 'since', sinceSeconds: now - 28 * 86_400 } }));
  const fromOldCursor = await replayEvents(options({ dryRun: true, start: { kind: 'cursor', sinceSecondsWithoutCursor: now } }));
  expect(fromOldCursor.warnings).toEqual([expect.stringContaining(`The replay cursor (${old.id}`)]);
});

test("Stripe's rate limit is waited out (Retry-After when given, else exponential with jitter) and the replay completes", async () => {
  const now = unixSeconds();
  fake.addEvent(purchase('user_rate_limited', 2, now - 60));
  fake.rateLimitNext(2);
  fake.rateLimitNext(1, { retryAfterSeconds: 3 });
  const backoff = recordedBackoff();
  expect(await replayEvents(options({ backoff }))).toMatchObject({ processed: 1 });
  expect(backoff.waits).toEqual([750, 1_500, 3_000]); // random 0.5: three quarters of 1 s and 2 s, then Retry-After
  expect(fake.requests.filter((request) => request.path === '/v1/events').map((request) => request.status)).toEqual([429, 429, 429, 200]);

  fake.rateLimitNext(4);
  await expect(replayEvents(options())).rejects.toBeInstanceOf(RateLimitExhaustedError);
});

test('the backoff is exponential, jittered between half and the whole, bounded, and Retry-After is bounded too', () => {
  const bounds = { baseDelayMillis: 1_000, maxDelayMillis: 8_000 };
  expect([1, 2, 3, 4, 5].map((attempt) => backoffDelayMillis(attempt, undefined, { ...bounds, random: () => 0 }))).toEqual([500, 1_000, 2_000, 4_000, 4_000]);
  expect([1, 2, 3, 4, 5].map((attempt) => backoffDelayMillis(attempt, undefined, { ...bounds, random: () => 0.999999 }))).toEqual([1_000, 2_000, 4_000, 8_000, 8_000]);
  expect(backoffDelayMillis(1, '2', { ...bounds, random: () => 0 })).toBe(2_000);
  expect(backoffDelayMillis(1, '3600', { ...bounds, random: () => 0 })).toBe(8_000);
  expect(backoffDelayMillis(1, 'soon', { ...bounds, random: () => 0 })).toBe(500);
});

test('other errors are not retried by the backoff', async () => {
  let calls = 0;
  const failing = () => {
    calls++;
    return Promise.reject(Object.assign(new Error('bad request'), { statusCode: 400 }));
  };
  await expect(withRateLimitBackoff(failing, recordedBackoff())).rejects.toThrow('bad request');
  expect(calls).toBe(1);
});

test('a replay stopped by its signal stops between events, with the cursor at the last one applied', async () => {
  const now = unixSeconds();
  const events = [0, 1, 2, 3].map((index) => purchase('user_stopped', 1, now - 400 + index));
  for (const event of events) fake.addEvent(event);
  const stop = new AbortController();
  const summary = await replayEvents(options({ signal: stop.signal, onApplied: (event) => event.id === events[1]!.id && stop.abort() }));
  expect(summary).toMatchObject({ interrupted: true, processed: 2, cursor: { eventId: events[1]!.id } });
  expect(await balanceOf(database.db, 'user_stopped')).toEqual({ purchased: 2, subscription: 0 });
});

test('--since accepts hours, days and ISO dates, and refuses anything else', () => {
  const now = 1_800_000_000;
  expect(parseSince('72h', now)).toBe(now - 72 * 3600);
  expect(parseSince('3d', now)).toBe(now - 3 * 86400);
  expect(parseSince('2027-01-15T00:00:00Z', now)).toBe(Date.parse('2027-01-15T00:00:00Z') / 1000);
  expect(() => parseSince('yesterday', now)).toThrow('--since must look like');
});
