/**
 * `npm run replay-events` as a real process, against real databases, the local Stripe and the real app over
 * HTTP: an outage healed by a replay gives what uninterrupted delivery gives; kill -9 in the middle and a second
 * run apply everything exactly once; Stripe's rate limit is waited out; one event by id; the 25-day warning;
 * exit codes.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Stripe from 'stripe';
import { startLocalStripe, type LocalStripe } from '../../localStripe';
import { parseCatalog } from '../../service/credits/catalog';
import type { Queryable } from '../../service/db';
import { readReplayCursor } from '../../service/replay/cursor';
import { createStripeClient, stripeReaders } from '../../service/stripeApi';
import { HANDLED_EVENT_TYPES } from '../../service/webhook/handledEventTypes';
import { checkInvariants, invariantsHold } from '../../service/test/support/invariants';
import { runScript, startScript } from '../../service/test/support/scriptProcess';
import { waitUntil } from '../../service/test/support/serviceProcess';
import { checkoutSession, stripeEvent, unixSeconds } from '../../service/test/support/stripeFixtures';
import { startTestApp, testWebhookSecret, type TestApp } from '../../service/test/support/testApp';
import { createTestDatabase, type TestDatabase } from '../../service/test/support/testDatabase';
import { holdEventOnLock } from '../../service/test/support/advisoryLock';

const packageId = 'price_replay_credits_500';
const planId = 'price_replay_plan_pro';
const catalogJson = { packages: { [packageId]: { credits: 500, name: '500 credits' } }, plans: { [planId]: { monthlyCredits: 3000, name: 'Pro' } } };
const scriptDeadlineMillis = 60_000;

let local: LocalStripe;
let stripe: Stripe;
let workDir: string;
let catalogFile: string;
const databases: TestDatabase[] = [];
const apps: TestApp[] = [];

beforeAll(async () => {
  local = await startLocalStripe({ delivery: { retryDelaysMillis: [], jitterMillis: 20 } });
  stripe = createStripeClient('sk_test_replay_script', new URL(local.baseUrl));
  workDir = await mkdtemp(path.join(os.tmpdir(), 'replay-events-'));
  catalogFile = path.join(workDir, 'catalog.json');
  await writeFile(catalogFile, JSON.stringify(catalogJson));
});
// Each test sees only its own events.
beforeEach(() => {
  local.reset();
  local.createPrice({ id: packageId, productName: '500 credits', unitAmount: 450 });
  local.createPrice({ id: planId, productName: 'Pro', unitAmount: 2900, recurring: true });
});
afterAll(async () => {
  await Promise.all(apps.map((app) => app.close()));
  await local.close();
  await Promise.all(databases.map((database) => database.drop()));
  await rm(workDir, { recursive: true, force: true });
});

async function freshDatabase(): Promise<TestDatabase> {
  const database = await createTestDatabase({ poolMax: 4 });
  databases.push(database);
  return database;
}

/** The service's environment for the script, and nothing of this process's. */
function scriptEnv(database: TestDatabase, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: os.tmpdir(),
    DATABASE_URL: database.url,
    STRIPE_API_KEY: 'sk_test_replay_script',
    STRIPE_API_BASE: local.baseUrl,
    STRIPE_MODE: 'test',
    CREDIT_CATALOG_FILE: catalogFile,
    ...extra,
  };
}

const replay = (database: TestDatabase, args: string[], extra?: Record<string, string>) => runScript('scripts/replay-events.ts', args, scriptEnv(database, extra), scriptDeadlineMillis);

function jsonSummary(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

/** Every user's balances and ledger, in an order that does not depend on when entries were written. */
async function creditsState(db: Queryable) {
  const balances = await db.query('SELECT user_id, purchased_credits_balance, credits_remaining, plan, status, stripe_customer_id, stripe_subscription_id, current_period_start, current_period_end FROM service_subscriptions ORDER BY user_id');
  const ledger = await db.query('SELECT user_id, bucket, delta, reason, stripe_event_id, source_id FROM credit_ledger ORDER BY user_id, bucket, source_id, reason, delta, stripe_event_id');
  return { balances: balances.rows, ledger: ledger.rows };
}

async function openSession(user: string, mode: 'payment' | 'subscription') {
  return stripe.checkout.sessions.create({
    mode,
    line_items: [{ price: mode === 'payment' ? packageId : planId, quantity: 1 }],
    success_url: 'https://shop.example.com/billing/?checkout=success',
    cancel_url: 'https://shop.example.com/billing/?checkout=cancelled',
    client_reference_id: user,
    metadata: { user_id: user },
    ...(mode === 'subscription' ? { subscription_data: { metadata: { user_id: user } } } : {}),
  });
}

async function appOn(database: TestDatabase): Promise<TestApp> {
  const app = await startTestApp(database.db, { eventContext: { catalog: parseCatalog(catalogJson, 'test catalog'), ...stripeReaders(stripe) } });
  apps.push(app);
  return app;
}

test('after an outage, a replay gives the same balances and ledger as uninterrupted delivery, and a second replay changes nothing', async () => {
  // Two deployments see the same Stripe account: one receives every delivery, the other's endpoint is disabled.
  const delivered = await freshDatabase();
  const missed = await freshDatabase();
  local.addWebhookEndpoint({ url: (await appOn(delivered)).webhookUrl, enabledEvents: [...HANDLED_EVENT_TYPES], secret: testWebhookSecret });
  const missedEndpoint = local.addWebhookEndpoint({ url: (await appOn(missed)).webhookUrl, enabledEvents: [...HANDLED_EVENT_TYPES], secret: testWebhookSecret });
  await stripe.webhookEndpoints.update(missedEndpoint.id, { disabled: true });

  // What buyers do during the outage: one-off purchases (one paid later), and subscriptions.
  for (const user of ['user_outage_a', 'user_outage_b']) local.completeCheckout((await openSession(user, 'payment')).id, 'pay');
  const later = await openSession('user_outage_c', 'payment');
  local.completeCheckout(later.id, 'pay_later');
  local.settleDelayedPayment(later.id, 'succeeded');
  for (const user of ['user_outage_d', 'user_outage_e']) local.completeCheckout((await openSession(user, 'subscription')).id, 'pay');
  await local.deliveriesSettled();
  const uninterrupted = await creditsState(delivered.db);
  expect(uninterrupted.balances.length).toBe(5);
  expect(await creditsState(missed.db)).toEqual({ balances: [], ledger: [] });

  const run = await replay(missed, ['--json']);
  expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: expect.any(String) });
  const summary = jsonSummary(run.stdout);
  expect(summary).toMatchObject({ failed: 0, unmatched: 0, mode_mismatch: 0, not_applied: [], warnings: [], exit_code: 0 });
  expect(summary.processed).toBe(summary.listed);
  expect(await creditsState(missed.db)).toEqual(uninterrupted);
  expect(await checkInvariants(missed.db)).toEqual(invariantsHold);

  const again = jsonSummary((await replay(missed, ['--json', '--since', '1h'])).stdout);
  expect(again).toMatchObject({ processed: 0, duplicate: summary.listed });
  expect(await creditsState(missed.db)).toEqual(uninterrupted);
}, 60_000);

test('killed with SIGKILL in the middle, a second run applies the rest: every event once, the cursor at the last', async () => {
  const database = await freshDatabase();
  const now = unixSeconds();
  const events = Array.from({ length: 30 }, (_, index) =>
    stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: `user_resume_${index % 3}`, metadata: { credits: '10' } }), { created: now - 900 + index * 10 }),
  );
  for (const event of events) local.addEvent(event);
  // The 12th event's transaction waits on a lock this test holds: the script has applied 11 and is in the
  // middle of the 12th when it is killed.
  const lockKey = 0x7e57_12;
  const lock = await holdEventOnLock(database.db, events[11]!.id, lockKey);

  const first = startScript('scripts/replay-events.ts', ['--since', '1h'], scriptEnv(database), scriptDeadlineMillis);
  const waitingBackends = async () =>
    // Whatever statement applies it (a transaction's INSERT or one function call): the one waiting on the test's lock.
    (await database.db.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'")).rows.map((row) => row.pid);
  await waitUntil(async () => (await waitingBackends()).length === 1, 30_000, 'the replay to wait inside the 12th event');
  const [blockedBackend] = await waitingBackends();
  first.kill('SIGKILL');
  expect((await first.finished).code).toBe(-1);
  lock.release();
  await lock.done;
  // The killed script's backend ends once its statement is done and it finds the client gone.
  await waitUntil(async () => (await database.db.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [blockedBackend])).rowCount === 0, 30_000, 'the killed replay’s backend to end');
  await lock.unhold();

  // A new paid session is applied by one autocommit call (issue 12): once the lock is released that statement
  // completes and commits, its client gone or not. The script died before it could move the cursor past it.
  expect(await readReplayCursor(database.db, false)).toMatchObject({ eventId: events[10]!.id });
  expect((await database.db.query('SELECT 1 FROM stripe_events')).rowCount).toBe(12);

  const second = await replay(database, ['--json']);
  expect(second.code).toBe(0);
  // From the cursor (60 s of overlap: the 11th event and the 6 before it, up to exactly 60 s, are listed again,
  // as duplicates, and so is the 12th, which the killed run's last statement applied).
  expect(jsonSummary(second.stdout)).toMatchObject({ processed: 18, duplicate: 8, failed: 0, cursor: { event_id: events[29]!.id } });
  const { rows } = await database.db.query<{ user_id: string; total: number; entries: number }>(
    'SELECT user_id, sum(delta)::bigint AS total, count(*)::bigint AS entries FROM credit_ledger GROUP BY user_id ORDER BY user_id',
  );
  expect(rows).toEqual([0, 1, 2].map((index) => ({ user_id: `user_resume_${index}`, total: 100, entries: 10 })));
  expect((await database.db.query("SELECT 1 FROM stripe_events WHERE status = 'processed'")).rowCount).toBe(30);
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
}, 90_000);

test("Stripe's rate limit (429, no Retry-After, as Stripe sends it) is waited out with growing waits, and the replay completes", async () => {
  const database = await freshDatabase();
  const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_rate_limited', metadata: { credits: '5' } }), { created: unixSeconds() - 30 });
  local.addEvent(event);
  const firstRequest = local.requests.length;
  local.rateLimitNext(2);
  const run = await replay(database, ['--since', '5m']);
  expect(run.code).toBe(0);
  expect(run.stderr).toMatch(/Stripe's rate limit \(429, global-rate\) after attempt 1: waiting \d\.\d s/);
  expect(run.stderr).toMatch(/after attempt 2: waiting \d\.\d s/);
  const lists = local.requests.slice(firstRequest).filter((request) => request.path === '/v1/events');
  expect(lists.map((request) => request.status)).toEqual([429, 429, 200]);
  // Jittered between half and the whole of 1 s, then of 2 s: never sooner.
  expect(lists[1]!.receivedAtMillis - lists[0]!.receivedAtMillis).toBeGreaterThanOrEqual(500);
  expect(lists[2]!.receivedAtMillis - lists[1]!.receivedAtMillis).toBeGreaterThanOrEqual(1_000);
  expect((await database.db.query("SELECT 1 FROM stripe_events WHERE id = $1 AND status = 'processed'", [event.id])).rowCount).toBe(1);
}, 60_000);

test('--event applies one event fetched by id (exit 0), an unmatched one exits 1 with its reason, an unknown id exits 1', async () => {
  const database = await freshDatabase();
  const now = unixSeconds();
  const one = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_one', metadata: { credits: '42' } }), { created: now - 60 });
  const noUser = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: null, metadata: { credits: '5' } }), { created: now - 60 });
  local.addEvent(one);
  local.addEvent(noUser);

  const applied = await replay(database, ['--event', one.id, '--json']);
  expect({ code: applied.code, summary: jsonSummary(applied.stdout) }).toMatchObject({ code: 0, summary: { processed: 1 } });
  expect((await database.db.query('SELECT purchased_credits_balance FROM service_subscriptions WHERE user_id = $1', ['user_one'])).rows).toEqual([{ purchased_credits_balance: 42 }]);
  expect(await readReplayCursor(database.db, false)).toBeUndefined();

  const unmatched = await replay(database, ['--event', noUser.id]);
  expect(unmatched.code).toBe(1);
  expect(unmatched.stderr).toContain(`unmatched: ${noUser.id} (checkout.session.completed): `);

  const unknown = await replay(database, ['--event', 'evt_does_not_exist']);
  expect(unknown.code).toBe(1);
  expect(unknown.stderr).toContain('Stripe has no such event');
}, 60_000);

test('a start or a stored cursor older than 25 days is warned about loudly on stderr (and in --json); a dry run lists and applies nothing', async () => {
  const database = await freshDatabase();
  const oldEvent = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_old', metadata: { credits: '1' } }), { created: unixSeconds() - 26 * 86_400 + 3600 });
  local.addEvent(oldEvent);
  const old = await replay(database, ['--since', '26d', '--dry-run', '--json']);
  expect(old.code).toBe(0);
  expect(old.stderr).toMatch(/!{20,}\nWARNING: The start \(.*\) is 26 days old: Stripe lists events of the last 30 days only/);
  expect(jsonSummary(old.stdout)).toMatchObject({ warnings: [expect.stringContaining('is 26 days old')], listed: 1, processed: 0, events: [{ id: oldEvent.id, type: 'checkout.session.completed', created: oldEvent.created }] });
  expect((await database.db.query('SELECT 1 FROM stripe_events')).rowCount).toBe(0); // a dry run applies nothing

  await database.db.query("INSERT INTO replay_cursor (livemode, event_created, event_id) VALUES (false, now() - interval '27 days', 'evt_old_cursor')");
  const fromCursor = await replay(database, ['--dry-run']);
  expect(fromCursor.stderr).toContain('WARNING: The replay cursor (evt_old_cursor,');
  const recent = await replay(database, ['--since', '2d', '--dry-run']);
  expect(recent.stderr).not.toContain('WARNING');
}, 60_000);

test('exit codes: 69 when Stripe or the database cannot be reached, 78 for a key of the other mode, each with what to do', async () => {
  const database = await freshDatabase();
  const noStripe = await replay(database, ['--since', '1h'], { STRIPE_API_BASE: 'http://127.0.0.1:9' });
  expect(noStripe.code).toBe(69);
  expect(noStripe.stderr).toContain('Stripe cannot be reached');
  const noDatabase = await replay(database, ['--since', '1h'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:9/none' });
  expect(noDatabase.code).toBe(69);
  expect(noDatabase.stderr).toContain('The database cannot be reached');
  const wrongMode = await replay(database, ['--since', '1h'], { STRIPE_MODE: 'live' });
  expect(wrongMode.code).toBe(78);
  expect(wrongMode.stderr).toContain('STRIPE_API_KEY is a test-mode key but STRIPE_MODE is "live"');
  for (const run of [noStripe, noDatabase, wrongMode]) expect(run.stderr).not.toContain('sk_test_replay_script');
}, 90_000);
