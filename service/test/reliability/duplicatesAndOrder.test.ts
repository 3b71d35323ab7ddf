/**
 * Duplicates and order: Stripe delivers at least once, in any order, to any replica, and the recovery
 * script may apply the same event at the same moment. The final state must not care.
 */
import fc from 'fast-check';
import { emptyCatalog } from '../../credits/catalog';
import { processEvent } from '../../webhook/processEvent';
import type { StripeEvent } from '../../webhook/stripeEvent';
import { checkDeliveryInvariants, deliveryInvariantsHold } from '../support/deliveryInvariants';
import { balanceOf } from '../support/invariants';
import { spendCredits } from '../support/records';
import { findLogLeaks } from '../support/logScan';
import { allServiceLogLines, startServiceProcess, stopAllServiceProcesses, type ServiceProcess } from '../support/serviceProcess';
import { postSigned } from '../support/stripeSender';
import { charge, checkoutSession, dispute, invoice, refund, stripeEvent, stripeId, subscription, type RefundStatus } from '../support/stripeFixtures';
import { monthlyPeriod, planPrice, SubscriptionStory } from '../support/subscriptionStory';
import { createTestDatabase, type TestDatabase } from '../support/testDatabase';
import { newFigures, reportFigures } from './figures';

const secret = 'whsec_reliability_order_5f0c1e2d3b4a59687766554433221100';
const figures = newFigures();
const acknowledged: string[] = [];

let database: TestDatabase;
let reference: TestDatabase;
let replicaA: ServiceProcess;
let replicaB: ServiceProcess;
let inOrder: ServiceProcess;

beforeAll(async () => {
  [database, reference] = await Promise.all([createTestDatabase(), createTestDatabase()]);
  // Two replicas on one database; a third service applies each history in order on a database of its own.
  [replicaA, replicaB, inOrder] = await Promise.all([
    startServiceProcess({ databaseUrl: database.url, webhookSecret: secret, name: 'replica A' }),
    startServiceProcess({ databaseUrl: database.url, webhookSecret: secret, name: 'replica B' }),
    startServiceProcess({ databaseUrl: reference.url, webhookSecret: secret, name: 'in-order reference' }),
  ]);
});
afterAll(async () => {
  await stopAllServiceProcesses();
  await Promise.all([database?.drop(), reference?.drop()]);
  reportFigures('duplicatesAndOrder', figures);
});

async function send(service: ServiceProcess, event: { id: string }): Promise<{ status: number; outcome?: string }> {
  figures.deliveriesSent++;
  const answer = await postSigned(service.webhookUrl, event, [secret]);
  if (answer.status >= 200 && answer.status < 300) acknowledged.push(event.id);
  return { status: answer.status, outcome: answer.status === 200 ? (JSON.parse(answer.body) as { status: string }).status : undefined };
}

const purchase = (userId: string, credits: number, paymentIntent = stripeId('pi')) =>
  stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, payment_intent: paymentIntent, metadata: { credits: String(credits) } }));

test('the same event delivered 50 times concurrently to two replicas is applied once', async () => {
  figures.scenarios++;
  const paymentIntent = stripeId('pi');
  const sub = subscription({ metadata: { user_id: 'user_dup_sub' } }, { monthlyCredits: 70 });
  const events = [
    purchase('user_dup_purchase', 250, paymentIntent),
    stripeEvent('charge.refunded', charge({ payment_intent: paymentIntent, amount: 1000, amount_refunded: 400 })),
    stripeEvent('customer.subscription.created', sub),
    stripeEvent('invoice.paid', invoice({}, { subscription: sub })),
  ];
  for (const event of events) {
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => send(i % 2 ? replicaA : replicaB, event)));
    expect(answers.filter((answer) => answer.status !== 200)).toEqual([]);
    expect(answers.filter((answer) => answer.outcome !== 'duplicate')).toHaveLength(1);
  }
  // 250 bought, 40 % refunded (100 credits); the subscription's user is in its metadata: 70 a month, its invoice paid.
  expect(await balanceOf(database.db, 'user_dup_purchase')).toEqual({ purchased: 150, subscription: 0 });
  expect(await balanceOf(database.db, 'user_dup_sub')).toEqual({ purchased: 0, subscription: 70 });
  const { rows } = await database.db.query<{ count: number }>('SELECT count(*)::int AS count FROM stripe_events WHERE id = ANY($1)', [events.map((e) => e.id)]);
  expect(rows[0]!.count).toBe(events.length);
});

const hour = 3600;
const day = 24 * hour;
const t0 = 1_760_000_000;
const plans = [planPrice(100), planPrice(300)] as const;

/** One billing period of a generated history: its plan, how its renewal goes, plan switches within it. */
interface PeriodHistory {
  plan: 0 | 1;
  /** The renewal's first charge fails (past_due) before it is paid, or the period is never paid. */
  payment: 'paid' | 'failed_then_paid' | 'never_paid';
  switches: Array<0 | 1>;
}

interface HistoryOptions {
  periods: PeriodHistory[];
  cancel: boolean;
  /** The second of the purchase's two refunds fails afterwards. */
  refundFails: boolean;
  dispute: 'none' | 'won' | 'lost';
}

const historyOptions: fc.Arbitrary<HistoryOptions> = fc.record({
  periods: fc.array(
    fc.record({
      plan: fc.constantFrom<0 | 1>(0, 1),
      payment: fc.constantFrom<PeriodHistory['payment']>('paid', 'failed_then_paid', 'never_paid'),
      switches: fc.array(fc.constantFrom<0 | 1>(0, 1), { maxLength: 2 }),
    }),
    { minLength: 1, maxLength: 3 },
  ),
  cancel: fc.boolean(),
  refundFails: fc.boolean(),
  dispute: fc.constantFrom<HistoryOptions['dispute']>('none', 'won', 'lost'),
});

/**
 * One user's history as Stripe sends it, every event with a random id: a Checkout sign-up (four events in one
 * second), renewals paid, failed then retried, or never paid, plan switches within periods, maybe the end;
 * and a purchase of 80 credits with two refunds (one may fail later) and maybe a dispute.
 * Also what the rules make of it: the largest total the subscription may ever grant (each paid period's
 * high-water allowance), and the state it must end in.
 */
function history(options: HistoryOptions) {
  const story = new SubscriptionStory({ user: stripeId('user'), createdSeconds: t0 });
  const period = (n: number) => monthlyPeriod(t0, n);
  const events: Array<{ id: string }> = [];
  let mayGrant = 0;
  let finalCredits = 0;
  let finalStatus = 'active';
  const last = options.periods.length - 1;
  options.periods.forEach((entry, n) => {
    const state = { period: period(n), plan: plans[entry.plan] };
    const start = period(n).start;
    // A Checkout sign-up is paid (or it never starts); a renewal left unpaid ends the story.
    const payment = n === 0 ? 'paid' : n < last && entry.payment === 'never_paid' ? 'failed_then_paid' : entry.payment;
    if (n === 0) {
      events.push(
        story.event('customer.subscription.created', { ...state, status: 'incomplete', created: start }),
        story.signUp({ created: start }),
      );
    } else {
      events.push(story.event('customer.subscription.updated', { ...state, created: start }));
    }
    if (payment !== 'paid') events.push(story.event('customer.subscription.updated', { ...state, status: 'past_due', created: start + hour }));
    if (payment === 'never_paid') {
      finalCredits = 0;
      finalStatus = 'past_due';
      return;
    }
    const paidAt = payment === 'paid' ? (n === 0 ? start : start + hour) : start + 3 * day;
    events.push(story.paidInvoice({ ...state, billingReason: n === 0 ? 'subscription_create' : 'subscription_cycle', created: paidAt }));
    if (n === 0 || payment !== 'paid') events.push(story.event('customer.subscription.updated', { ...state, created: paidAt }));
    let highWater = plans[entry.plan].monthlyCredits;
    entry.switches.forEach((plan, k) => {
      events.push(story.event('customer.subscription.updated', { ...state, plan: plans[plan], created: start + (5 + k) * day }));
      highWater = Math.max(highWater, plans[plan].monthlyCredits);
    });
    mayGrant += highWater;
    finalCredits = highWater;
    finalStatus = 'active';
  });
  if (options.cancel) {
    events.push(story.event('customer.subscription.deleted', { period: period(last), plan: plans[0], created: period(last).start + 20 * day }));
    finalCredits = 0;
    finalStatus = 'canceled';
  }

  const paymentIntent = stripeId('pi');
  const chargeId = stripeId('ch');
  const refunds = [stripeId('re'), stripeId('re')];
  const refundOf = (index: number, amount: number, status: RefundStatus) => refund({ id: refunds[index], amount, status, charge: chargeId, payment_intent: paymentIntent });
  events.push(
    stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: story.user, payment_intent: paymentIntent, amount_total: 1000, metadata: { credits: '80' } }), { created: t0 + 5 }),
    stripeEvent('refund.created', refundOf(0, 250, 'succeeded'), { created: t0 + 6 }),
    stripeEvent('charge.refunded', charge({ id: chargeId, payment_intent: paymentIntent, amount: 1000, amount_refunded: 250 }), { created: t0 + 6 }),
    stripeEvent('refund.created', refundOf(1, 250, 'pending'), { created: t0 + 7 }),
    stripeEvent('charge.refunded', charge({ id: chargeId, payment_intent: paymentIntent, amount: 1000, amount_refunded: 500 }), { created: t0 + 7 }),
  );
  if (options.refundFails) events.push(stripeEvent('refund.failed', refundOf(1, 250, 'failed'), { created: t0 + 9 * day }));
  const refunded = options.refundFails ? 250 : 500;
  let disputed = 0;
  if (options.dispute !== 'none') {
    // The cardholder disputes what was not refunded.
    const id = stripeId('dp');
    const of = (status: 'needs_response' | 'won' | 'lost', created: number) => dispute({ id, amount: 500, status, charge: chargeId, payment_intent: paymentIntent, created });
    events.push(
      stripeEvent('charge.dispute.created', of('needs_response', t0 + 10 * day), { created: t0 + 10 * day }),
      stripeEvent('charge.dispute.closed', of(options.dispute, t0 + 40 * day), { created: t0 + 40 * day }),
    );
    if (options.dispute === 'lost') disputed = 500;
  }
  const purchased = 80 - Math.floor((80 * Math.min(refunded + disputed, 1000)) / 1000);
  return { story, userId: story.user, subscriptionId: story.id, paymentIntent, events, mayGrant, expected: { subscription: finalCredits, purchased, status: finalStatus } };
}

/**
 * Everything the history leaves behind, without surrogate keys and wall-clock timestamps. Left out on
 * purpose: what was granted for periods that are over (a period's renewal arriving after the next period
 * started is never granted, which in-order delivery grants and expires at once: the balance is the same), and
 * which period was credited last once the subscription has ended, since an ended subscription is final.
 */
async function finalState(db: TestDatabase['db'], userId: string, subscriptionId: string, paymentIntent: string) {
  const [user, sub, periods, purchases, refundRows, disputes, ledger] = await Promise.all([
    db.query(
      `SELECT u.credits_remaining, u.purchased_credits_balance, u.stripe_customer_id, u.stripe_subscription_id, u.plan, u.status,
              u.current_period_start, u.current_period_end, CASE WHEN s.ended THEN NULL ELSE u.credited_period_start END AS credited_period_start
       FROM service_subscriptions u LEFT JOIN stripe_subscriptions s ON s.id = u.stripe_subscription_id WHERE u.user_id = $1`,
      [userId],
    ),
    db.query(
      `SELECT customer_id, user_id, status, price_id, plan, monthly_credits, current_period_start, current_period_end, event_created, ended, event_id,
              collection_paused, lifecycle_rank, price_credits
       FROM stripe_subscriptions WHERE id = $1`,
      [subscriptionId],
    ),
    db.query(
      `SELECT p.period_start, p.period_end, p.plan_allowance,
              CASE WHEN NOT s.ended AND p.period_start = max(p.period_start) OVER () THEN p.granted END AS granted_now
       FROM subscription_periods p JOIN stripe_subscriptions s ON s.id = p.subscription_id WHERE p.subscription_id = $1 ORDER BY p.period_start`,
      [subscriptionId],
    ),
    db.query('SELECT status, credits, credits_refunded, credits_disputed, amount_refunded, amount_disputed FROM credit_purchases WHERE user_id = $1', [userId]),
    db.query('SELECT id, amount, status, counted FROM payment_refunds WHERE payment_intent = $1 ORDER BY id', [paymentIntent]),
    db.query('SELECT id, amount, status, counted FROM payment_disputes WHERE payment_intent = $1 ORDER BY id', [paymentIntent]),
    db.query(
      `SELECT COALESCE(sum(delta) FILTER (WHERE bucket = 'purchased'), 0)::bigint AS purchased,
              COALESCE(sum(delta) FILTER (WHERE bucket = 'subscription'), 0)::bigint AS subscription
       FROM credit_ledger WHERE user_id = $1`,
      [userId],
    ),
  ]);
  return { user: user.rows, subscription: sub.rows, periods: periods.rows, purchases: purchases.rows, refunds: refundRows.rows, disputes: disputes.rows, ledger: ledger.rows };
}

/** What the subscription granted in all, and how the user's account reads. */
async function grantsAndAccount(db: TestDatabase['db'], userId: string) {
  const { rows } = await db.query<{ granted: number; subscription: number; purchased: number; status: string | null }>(
    `SELECT (SELECT COALESCE(sum(delta), 0)::bigint FROM credit_ledger WHERE user_id = $1 AND bucket = 'subscription'
               AND reason IN ('subscription_period_allowance', 'subscription_allowance_raised')) AS granted,
            COALESCE(u.credits_remaining, 0) AS subscription, COALESCE(u.purchased_credits_balance, 0) AS purchased, u.status
     FROM (SELECT 1) one LEFT JOIN service_subscriptions u ON u.user_id = $1`,
    [userId],
  );
  return rows[0]!;
}

/** The product spending up to `credits` (subscription credits first) between two deliveries, with its ledger rows. */
async function spend(db: TestDatabase['db'], userId: string, credits: number): Promise<number> {
  const balance = await balanceOf(db, userId);
  const fromSubscription = Math.min(credits, Math.max(balance.subscription, 0));
  const fromPurchased = Math.min(credits - fromSubscription, Math.max(balance.purchased, 0));
  if (fromSubscription > 0) await spendCredits(db, userId, 'subscription', fromSubscription);
  if (fromPurchased > 0) await spendCredits(db, userId, 'purchased', fromPurchased);
  return fromSubscription + fromPurchased;
}

const propertyRuns = 30;

test('any order of a subscription and purchase history, with redeliveries and spending between deliveries, follows the rules; without spending it ends as in-order delivery does', async () => {
  figures.scenarios++;
  await fc.assert(
    fc.asyncProperty(
      historyOptions.chain((options) => {
        const n = history(options).events.length;
        return fc.record({
          options: fc.constant(options),
          order: fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n }),
          redeliveries: fc.array(fc.nat({ max: n - 1 }), { maxLength: 3 }),
          delivery: fc.constantFrom('one by one', 'one by one, spending between deliveries', 'all at once'),
          spending: fc.array(fc.nat({ max: 120 }), { minLength: n + 3, maxLength: n + 3 }),
        });
      }),
      async ({ options, order, redeliveries, delivery, spending }) => {
        const built = history(options);
        for (const event of built.events) expect((await send(inOrder, event)).status).toBe(200);
        const deliveries = [...order, ...redeliveries].map((index, position) => () => send(position % 2 ? replicaA : replicaB, built.events[index]!));
        let spent = 0;
        if (delivery === 'all at once') {
          // Stripe delivers in parallel, to both replicas.
          const answers = await Promise.all(deliveries.map((deliver) => deliver()));
          expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 200));
        } else {
          for (const [position, deliver] of deliveries.entries()) {
            expect((await deliver()).status).toBe(200);
            if (delivery !== 'one by one') spent += await spend(database.db, built.userId, spending[position]!);
          }
        }
        const account = await grantsAndAccount(database.db, built.userId);
        // Never more granted than each paid period's high-water allowance, whatever the order and the spending.
        expect(account.granted).toBeLessThanOrEqual(built.mayGrant);
        expect(account.subscription).toBeGreaterThanOrEqual(0);
        // The status follows the subscription's life, not the order or the ids of its events.
        expect(account.status).toBe(built.expected.status);
        expect((await grantsAndAccount(reference.db, built.userId)).status).toBe(built.expected.status);
        if (spent === 0) {
          expect({ subscription: account.subscription, purchased: account.purchased }).toEqual({ subscription: built.expected.subscription, purchased: built.expected.purchased });
          const expected = await finalState(reference.db, built.userId, built.subscriptionId, built.paymentIntent);
          expect(await finalState(database.db, built.userId, built.subscriptionId, built.paymentIntent)).toEqual(expected);
        }
      },
    ),
    { numRuns: propertyRuns },
  );
  figures.invariantChecks += propertyRuns;
});

// Found by the property above before commit 054289c: a plan change within an already credited period
// granted nothing in order, but the new plan's allowance when it arrived before that period's renewal.
test('a mid-period plan change delivered before the renewal leaves the same credits as in-order delivery', async () => {
  figures.scenarios++;
  const built = history({ periods: [{ plan: 0, payment: 'paid', switches: [] }, { plan: 0, payment: 'paid', switches: [1] }], cancel: false, refundFails: false, dispute: 'none' });
  for (const event of built.events) expect((await send(inOrder, event)).status).toBe(200);
  // The plan change (the first event naming the larger plan) first, then the rest in order.
  const change = built.events.findIndex((event) => JSON.stringify(event).includes(plans[1].priceId));
  for (const index of [change, ...[...built.events.keys()].filter((index) => index !== change)]) {
    expect((await send(replicaA, built.events[index]!)).status).toBe(200);
  }
  const expected = await finalState(reference.db, built.userId, built.subscriptionId, built.paymentIntent);
  const actual = await finalState(database.db, built.userId, built.subscriptionId, built.paymentIntent);
  expect(actual).toEqual(expected);
  expect((await grantsAndAccount(database.db, built.userId)).subscription).toBe(300);
});

test('an event applied at the same moment by a webhook delivery and by the recovery path is credited once', async () => {
  figures.scenarios++;
  const context = { catalog: emptyCatalog(), fetchLineItems: undefined };
  const raced = Array.from({ length: 40 }, (_, i) => purchase(`user_race_${i % 10}`, 10 + i));
  const outcomes = await Promise.all(
    raced.map(async (event, i) => {
      const [viaHttp, viaRecovery] = await Promise.all([
        send(i % 2 ? replicaA : replicaB, event),
        processEvent(database.db, event as unknown as StripeEvent, context),
      ]);
      return [viaHttp.outcome, viaRecovery.status];
    }),
  );
  for (const pair of outcomes) expect(pair.sort()).toEqual(['duplicate', 'processed']);
  for (let user = 0; user < 10; user++) {
    const credits = raced.filter((_, i) => i % 10 === user).reduce((sum, _, k) => sum + 10 + user + 10 * k, 0);
    expect(await balanceOf(database.db, `user_race_${user}`)).toEqual({ purchased: credits, subscription: 0 });
  }
  acknowledged.push(...raced.map((event) => event.id));
});

test("a session's completion and its async payment success, racing between webhook and recovery path, credit it once", async () => {
  figures.scenarios++;
  const context = { catalog: emptyCatalog(), fetchLineItems: undefined };
  const sessions = Array.from({ length: 20 }, (_, i) =>
    checkoutSession({ client_reference_id: `user_async_${i}`, payment_status: 'unpaid', metadata: { credits: String(20 + i) } }),
  );
  await Promise.all(
    sessions.map(async (session, i) => {
      const completed = stripeEvent('checkout.session.completed', session);
      const succeeded = stripeEvent('checkout.session.async_payment_succeeded', { ...session, payment_status: 'paid' });
      // Half the time the webhook brings the completion and recovery the success, half the other way round.
      const [viaHttp, viaRecovery] = i % 2 ? [completed, succeeded] : [succeeded, completed];
      const [answer] = await Promise.all([send(i % 4 < 2 ? replicaA : replicaB, viaHttp), processEvent(database.db, viaRecovery as unknown as StripeEvent, context)]);
      expect(answer.status).toBe(200);
      acknowledged.push(viaRecovery.id);
    }),
  );
  for (const [i] of sessions.entries()) expect(await balanceOf(database.db, `user_async_${i}`)).toEqual({ purchased: 20 + i, subscription: 0 });
});

test('after all of the above every acknowledged event is recorded once and the books balance', async () => {
  expect(await checkDeliveryInvariants(database.db, { acknowledged })).toEqual(deliveryInvariantsHold);
  expect(await checkDeliveryInvariants(reference.db, { acknowledged: [] })).toEqual(deliveryInvariantsHold);
  figures.invariantChecks += 2;
});

test('no log line of these services carries a secret or a signature', () => {
  expect(allServiceLogLines().length).toBeGreaterThan(100);
  expect(findLogLeaks(allServiceLogLines(), [secret])).toEqual([]);
  figures.invariantChecks++;
});
