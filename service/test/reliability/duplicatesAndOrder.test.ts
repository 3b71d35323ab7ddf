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
import { findLogLeaks } from '../support/logScan';
import { allServiceLogLines, startServiceProcess, stopAllServiceProcesses, type ServiceProcess } from '../support/serviceProcess';
import { postSigned } from '../support/stripeSender';
import { charge, checkoutSession, stripeEvent, stripeId, subscription, subscriptionCheckoutSession } from '../support/stripeFixtures';
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
  ];
  for (const event of events) {
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => send(i % 2 ? replicaA : replicaB, event)));
    expect(answers.filter((answer) => answer.status !== 200)).toEqual([]);
    expect(answers.filter((answer) => answer.outcome !== 'duplicate')).toHaveLength(1);
  }
  // 250 bought, 40 % refunded (100 credits); the subscription's user is in its metadata: 70 a month.
  expect(await balanceOf(database.db, 'user_dup_purchase')).toEqual({ purchased: 150, subscription: 0 });
  expect(await balanceOf(database.db, 'user_dup_sub')).toEqual({ purchased: 0, subscription: 70 });
  const { rows } = await database.db.query<{ count: number }>('SELECT count(*)::int AS count FROM stripe_events WHERE id = ANY($1)', [events.map((e) => e.id)]);
  expect(rows[0]!.count).toBe(3);
});

/** One user's realistic history: a subscription with renewals, a plan change and maybe a cancellation, and a refunded purchase. */
function history(options: { cancel: boolean; upgrade: boolean }) {
  const userId = stripeId('user');
  const customer = stripeId('cus');
  const subscriptionId = stripeId('sub');
  const paymentIntent = stripeId('pi');
  const t0 = 1_760_000_000;
  const month = 30 * 24 * 3600;
  const prices: Record<number, string> = { 100: stripeId('price'), 300: stripeId('price') };
  const state = (periodStart: number, credits: 100 | 300, status: 'active' | 'canceled' = 'active') =>
    subscription({ id: subscriptionId, customer, created: t0, status }, { priceId: prices[credits], monthlyCredits: credits, periodStart, periodEnd: periodStart + month });
  const events: Array<{ id: string }> = [
    stripeEvent('checkout.session.completed', subscriptionCheckoutSession({ client_reference_id: userId, customer, subscription: subscriptionId }), { created: t0 }),
    stripeEvent('customer.subscription.created', state(t0, 100), { created: t0 }),
    stripeEvent('customer.subscription.updated', state(t0 + month, 100), { created: t0 + month }),
  ];
  if (options.upgrade) events.push(stripeEvent('customer.subscription.updated', state(t0 + month, 300), { created: t0 + month + 10 }));
  if (options.cancel) events.push(stripeEvent('customer.subscription.deleted', state(t0 + month, options.upgrade ? 300 : 100, 'canceled'), { created: t0 + month + 20 }));
  events.push(
    stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, payment_intent: paymentIntent, metadata: { credits: '80' } }), { created: t0 + 5 }),
    stripeEvent('charge.refunded', charge({ payment_intent: paymentIntent, amount: 1000, amount_refunded: 250 }), { created: t0 + 6 }),
    stripeEvent('charge.refunded', charge({ payment_intent: paymentIntent, amount: 1000, amount_refunded: 1000 }), { created: t0 + 7 }),
  );
  return { userId, subscriptionId, paymentIntent, events };
}
const historyLength = (options: { cancel: boolean; upgrade: boolean }) => 6 + Number(options.cancel) + Number(options.upgrade);

/**
 * Everything the history leaves behind, without surrogate keys and wall-clock timestamps. Left out on
 * purpose: which period's allowance was granted last (credited_period_start) once the subscription has
 * ended, since an ended subscription is final and that marker then decides nothing.
 */
async function finalState(db: TestDatabase['db'], userId: string, subscriptionId: string, paymentIntent: string) {
  const [user, sub, purchases, refunds, ledger] = await Promise.all([
    db.query(
      `SELECT u.credits_remaining, u.purchased_credits_balance, u.stripe_customer_id, u.stripe_subscription_id, u.plan, u.status,
              u.current_period_start, u.current_period_end, CASE WHEN s.ended THEN NULL ELSE u.credited_period_start END AS credited_period_start
       FROM service_subscriptions u LEFT JOIN stripe_subscriptions s ON s.id = u.stripe_subscription_id WHERE u.user_id = $1`,
      [userId],
    ),
    db.query(
      `SELECT customer_id, user_id, status, price_id, plan, monthly_credits, current_period_start, current_period_end, event_created, ended, event_id
       FROM stripe_subscriptions WHERE id = $1`,
      [subscriptionId],
    ),
    db.query('SELECT status, credits, credits_refunded, amount_refunded FROM credit_purchases WHERE user_id = $1', [userId]),
    db.query('SELECT amount, amount_refunded FROM charge_refunds WHERE payment_intent = $1', [paymentIntent]),
    db.query(
      `SELECT COALESCE(sum(delta) FILTER (WHERE bucket = 'purchased'), 0)::bigint AS purchased,
              COALESCE(sum(delta) FILTER (WHERE bucket = 'subscription'), 0)::bigint AS subscription
       FROM credit_ledger WHERE user_id = $1`,
      [userId],
    ),
  ]);
  return { user: user.rows, subscription: sub.rows, purchases: purchases.rows, refunds: refunds.rows, ledger: ledger.rows };
}

const propertyRuns = 30;

test('any permutation of a subscription history, with redeliveries, sequential or all at once, ends in the state in-order delivery gives', async () => {
  figures.scenarios++;
  await fc.assert(
    fc.asyncProperty(
      fc.record({ cancel: fc.boolean(), upgrade: fc.boolean() }).chain((options) => {
        const n = historyLength(options);
        return fc.record({
          options: fc.constant(options),
          order: fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n }),
          redeliveries: fc.array(fc.nat({ max: n - 1 }), { maxLength: 3 }),
        });
      }),
      fc.boolean(),
      async ({ options, order, redeliveries }, concurrently) => {
        const built = history(options);
        for (const event of built.events) expect((await send(inOrder, event)).status).toBe(200);
        const deliveries = [...order, ...redeliveries].map((index, position) => () => send(position % 2 ? replicaA : replicaB, built.events[index]!));
        // One at a time in the shuffled order, or all at once (Stripe delivers in parallel) to both replicas.
        const answers = concurrently ? await Promise.all(deliveries.map((deliver) => deliver())) : [];
        if (!concurrently) for (const deliver of deliveries) answers.push(await deliver());
        expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 200));
        const expected = await finalState(reference.db, built.userId, built.subscriptionId, built.paymentIntent);
        const actual = await finalState(database.db, built.userId, built.subscriptionId, built.paymentIntent);
        expect(actual).toEqual(expected);
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
  const built = history({ cancel: false, upgrade: true });
  for (const event of built.events) expect((await send(inOrder, event)).status).toBe(200);
  // The upgrade (index 3) first, then the rest in order.
  for (const index of [3, 0, 1, 2, 4, 5, 6]) expect((await send(replicaA, built.events[index]!)).status).toBe(200);
  const expected = await finalState(reference.db, built.userId, built.subscriptionId, built.paymentIntent);
  const actual = await finalState(database.db, built.userId, built.subscriptionId, built.paymentIntent);
  expect(actual).toEqual(expected);
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
