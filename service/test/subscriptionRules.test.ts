/**
 * What subscription events do to a user's subscription credits: linking, one allowance per billing
 * period, expiry, cancellation, and the newest state winning whatever order Stripe delivers in.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { parseCatalog } from '../credits/catalog';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import {
  checkoutSession,
  DEFAULT_BILLING_PERIOD_SECONDS,
  stripeEvent,
  stripeId,
  subscription,
  subscriptionCheckoutSession,
  unixSeconds,
  type SubscriptionShape,
} from './support/stripeFixtures';
import { deliver, startTestApp, type DeliveryResponse, type TestApp } from './support/testApp';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';
import { bucketLedger, eventRecord, spendCredits } from './support/records';

const catalogPlanPrice = 'price_catalog_pro_monthly';
const catalog = parseCatalog({ plans: { [catalogPlanPrice]: { monthlyCredits: 5000, name: 'Pro' } } }, 'subscriptionRules test catalog');

let database: TestDatabase;
let app: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  app = await startTestApp(database.db, { eventContext: { catalog, fetchLineItems: undefined } });
});
afterAll(async () => {
  await app.close();
  await database.drop();
});

/** Period n of every test subscription: 30-day periods starting 120 days ago. */
const firstPeriodStart = unixSeconds() - 4 * DEFAULT_BILLING_PERIOD_SECONDS;
const periodStart = (n: number) => firstPeriodStart + n * DEFAULT_BILLING_PERIOD_SECONDS;
const periodEnd = (n: number) => periodStart(n + 1);
/** Event times: strictly after every period start used here, so "newer" is never confused with "later period". */
const eventTime = (offsetSeconds: number) => periodStart(3) + offsetSeconds;

type SubscriptionEventType = 'customer.subscription.created' | 'customer.subscription.updated' | 'customer.subscription.deleted';

interface TestSubscription {
  user: string;
  id: string;
  customer: string;
}

const newSubscription = (): TestSubscription => ({ user: `user_${randomUUID()}`, id: stripeId('sub'), customer: stripeId('cus') });

interface StateOptions {
  period: number;
  monthlyCredits?: number;
  priceId?: string;
  status?: 'active' | 'trialing' | 'past_due' | 'unpaid' | 'canceled';
  shape?: SubscriptionShape;
  metadata?: Record<string, string>;
}

function subscriptionState(sub: TestSubscription, options: StateOptions) {
  const fields = {
    priceId: options.priceId ?? 'price_basic_monthly',
    monthlyCredits: options.monthlyCredits ?? 100,
    periodStart: periodStart(options.period),
    periodEnd: periodEnd(options.period),
    status: options.status ?? 'active',
  };
  const overrides = { id: sub.id, customer: sub.customer, created: periodStart(0), metadata: options.metadata ?? {} };
  return options.shape === 'legacy' ? subscription(overrides, { ...fields, shape: 'legacy' }) : subscription(overrides, fields);
}

function subscriptionEvent(type: SubscriptionEventType, sub: TestSubscription, options: StateOptions & { created: number; id?: string }) {
  const state = subscriptionState(sub, options);
  return stripeEvent(type, type === 'customer.subscription.deleted' ? { ...state, status: 'canceled' } : state, { created: options.created, id: options.id });
}

const linkingCheckout = (sub: TestSubscription, options: { id?: string; created?: number } = {}) =>
  stripeEvent('checkout.session.completed', subscriptionCheckoutSession({ client_reference_id: sub.user, customer: sub.customer, subscription: sub.id }), options);

async function send(event: object): Promise<DeliveryResponse['body']> {
  const response = await deliver(app.webhookUrl, event);
  expect(response.status).toBe(200);
  return response.body;
}

interface AccountRow {
  subscriptionCredits: number;
  purchasedCredits: number;
  plan: string | null;
  status: string | null;
  periodStart: number | null;
  periodEnd: number | null;
  customerId: string | null;
  subscriptionId: string | null;
}

async function accountOf(user: string): Promise<AccountRow | undefined> {
  const { rows } = await database.db.query<Omit<AccountRow, 'periodStart' | 'periodEnd'> & { periodStart: Date | null; periodEnd: Date | null }>(
    `SELECT credits_remaining AS "subscriptionCredits", purchased_credits_balance AS "purchasedCredits", plan, status,
            current_period_start AS "periodStart", current_period_end AS "periodEnd",
            stripe_customer_id AS "customerId", stripe_subscription_id AS "subscriptionId"
     FROM service_subscriptions WHERE user_id = $1`,
    [user],
  );
  const row = rows[0];
  if (!row) return undefined;
  const seconds = (date: Date | null) => (date ? date.getTime() / 1000 : null);
  return { ...row, periodStart: seconds(row.periodStart), periodEnd: seconds(row.periodEnd) };
}

describe('linking a subscription to its user', () => {
  test('a subscription checkout session links the Stripe customer and subscription to its user', async () => {
    const sub = newSubscription();
    expect(await send(linkingCheckout(sub))).toEqual({ received: true, status: 'processed' });
    expect(await accountOf(sub.user)).toMatchObject({ customerId: sub.customer, subscriptionId: sub.id, subscriptionCredits: 0 });

    // The subscription event carries no user: the link finds it.
    expect((await send(subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0) }))).status).toBe('processed');
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 100, status: 'active', plan: 'price_basic_monthly' });
  });

  test('subscription events before the link are unmatched, kept, and applied when the checkout session links the user', async () => {
    const sub = newSubscription();
    const created = subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0) });
    const renewed = subscriptionEvent('customer.subscription.updated', sub, { period: 1, monthlyCredits: 150, priceId: 'price_plus_monthly', created: eventTime(10) });
    expect((await send(created)).status).toBe('unmatched');
    expect((await send(renewed)).status).toBe('unmatched');
    expect(await eventRecord(database.db, renewed.id)).toMatchObject({ status: 'unmatched', error: expect.stringContaining('no known user yet') });
    expect(await accountOf(sub.user)).toBeUndefined();

    expect((await send(linkingCheckout(sub))).status).toBe('processed');
    expect(await accountOf(sub.user)).toMatchObject({
      subscriptionCredits: 150,
      plan: 'price_plus_monthly',
      status: 'active',
      periodStart: periodStart(1),
      periodEnd: periodEnd(1),
      subscriptionId: sub.id,
    });
    expect(await bucketLedger(database.db, sub.user, 'subscription')).toEqual([{ delta: 150, reason: 'subscription_period_allowance' }]);
  });

  test('metadata.user_id on the subscription links it without a checkout session', async () => {
    const sub = newSubscription();
    const created = subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0), metadata: { user_id: sub.user } });
    expect(await send(created)).toEqual({ received: true, status: 'processed' });
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 100, customerId: sub.customer, subscriptionId: sub.id, status: 'active' });
  });
});

describe('one allowance per billing period', () => {
  test('created grants the monthly allowance once; a duplicate delivery and updates in the same period grant nothing more, even after spending', async () => {
    const sub = newSubscription();
    await send(linkingCheckout(sub));
    const created = subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0) });
    expect((await send(created)).status).toBe('processed');
    expect((await send(created)).status).toBe('duplicate');
    await spendCredits(database.db, sub.user, 'subscription', 30);
    expect((await send(subscriptionEvent('customer.subscription.updated', sub, { period: 0, created: eventTime(5) }))).status).toBe('processed');
    expect((await send(subscriptionEvent('customer.subscription.updated', sub, { period: 0, status: 'trialing', created: eventTime(6) }))).status).toBe(
      'processed',
    );
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 70, status: 'trialing', periodStart: periodStart(0) });
    expect(await bucketLedger(database.db, sub.user, 'subscription')).toEqual([
      { delta: 100, reason: 'subscription_period_allowance' },
      { delta: -30, reason: 'usage' },
    ]);
  });

  test('a new billing period resets the credits to the allowance; the ledger records what was topped up after spending', async () => {
    const sub = newSubscription();
    await send(linkingCheckout(sub));
    await send(subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0) }));
    await spendCredits(database.db, sub.user, 'subscription', 30);
    expect(await balanceOf(database.db, sub.user)).toEqual({ purchased: 0, subscription: 70 });

    await send(subscriptionEvent('customer.subscription.updated', sub, { period: 1, created: eventTime(10) }));
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 100, periodStart: periodStart(1), periodEnd: periodEnd(1) });
    expect(await bucketLedger(database.db, sub.user, 'subscription')).toEqual([
      { delta: 100, reason: 'subscription_period_allowance' },
      { delta: -30, reason: 'usage' },
      { delta: 30, reason: 'subscription_period_allowance' },
    ]);
  });

  test('unused credits expire at a new period: a smaller plan leaves only its allowance and the ledger records the difference', async () => {
    const sub = newSubscription();
    await send(linkingCheckout(sub));
    await send(subscriptionEvent('customer.subscription.created', sub, { period: 0, monthlyCredits: 100, created: eventTime(0) }));
    await send(subscriptionEvent('customer.subscription.updated', sub, { period: 1, monthlyCredits: 40, priceId: 'price_small_monthly', created: eventTime(10) }));
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 40, plan: 'price_small_monthly' });
    expect(await bucketLedger(database.db, sub.user, 'subscription')).toEqual([
      { delta: 100, reason: 'subscription_period_allowance' },
      { delta: -60, reason: 'subscription_period_allowance' },
    ]);
  });

  test.each([
    ['in order', ['created', 'pastDue', 'recovered']],
    ['renewal first', ['pastDue', 'created', 'recovered']],
  ] as const)(
    'a failed renewal (past_due) expires the last period’s credits and the successful retry grants the new allowance (%s)',
    async (_name, order) => {
      const sub = newSubscription();
      await send(linkingCheckout(sub));
      const events = {
        created: subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0) }),
        pastDue: subscriptionEvent('customer.subscription.updated', sub, { period: 1, status: 'past_due', created: eventTime(10) }),
        recovered: subscriptionEvent('customer.subscription.updated', sub, { period: 1, status: 'active', created: eventTime(20) }),
      };
      await send(events[order[0]]);
      await send(events[order[1]]);
      expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 0, status: 'past_due', periodStart: periodStart(1) });
      await send(events[order[2]]);
      expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 100, status: 'active', periodStart: periodStart(1) });
    },
  );

  test('deleted expires the remaining subscription credits and sets status canceled', async () => {
    const sub = newSubscription();
    await send(linkingCheckout(sub));
    await send(subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0) }));
    await spendCredits(database.db, sub.user, 'subscription', 10);
    expect((await send(subscriptionEvent('customer.subscription.deleted', sub, { period: 0, created: eventTime(20) }))).status).toBe('processed');
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 0, status: 'canceled' });
    expect((await bucketLedger(database.db, sub.user, 'subscription')).at(-1)).toEqual({ delta: -90, reason: 'subscription_ended' });
  });

  test('a plan in the credit catalog grants its monthly credits by price and carries its name', async () => {
    const sub = newSubscription();
    await send(linkingCheckout(sub));
    // The catalog is the merchant's source of truth: it wins over a stale metadata.monthly_credits on the price.
    await send(subscriptionEvent('customer.subscription.created', sub, { period: 0, priceId: catalogPlanPrice, monthlyCredits: 7, created: eventTime(0) }));
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 5000, plan: 'Pro' });
  });

  test.each<SubscriptionShape>(['legacy', 'items'])('the %s API shape: the period is read where that shape keeps it', async (shape) => {
    const sub = newSubscription();
    await send(linkingCheckout(sub));
    await send(subscriptionEvent('customer.subscription.created', sub, { period: 0, shape, created: eventTime(0) }));
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 100, periodStart: periodStart(0), periodEnd: periodEnd(0) });
    await spendCredits(database.db, sub.user, 'subscription', 25);
    await send(subscriptionEvent('customer.subscription.updated', sub, { period: 1, shape, created: eventTime(10) }));
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 100, periodStart: periodStart(1), periodEnd: periodEnd(1) });
  });

  test('purchased credits are never touched by subscription grants, resets or cancellation', async () => {
    const sub = newSubscription();
    await send(stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: sub.user, metadata: { credits: '250' } })));
    await send(linkingCheckout(sub));
    await send(subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0) }));
    await spendCredits(database.db, sub.user, 'subscription', 60);
    await send(subscriptionEvent('customer.subscription.updated', sub, { period: 1, monthlyCredits: 20, priceId: 'price_small_monthly', created: eventTime(10) }));
    expect(await balanceOf(database.db, sub.user)).toEqual({ purchased: 250, subscription: 20 });
    await send(subscriptionEvent('customer.subscription.deleted', sub, { period: 1, created: eventTime(20) }));
    expect(await balanceOf(database.db, sub.user)).toEqual({ purchased: 250, subscription: 0 });
    const { rows } = await database.db.query("SELECT delta, reason FROM credit_ledger WHERE user_id = $1 AND bucket = 'purchased'", [sub.user]);
    expect(rows).toEqual([{ delta: 250, reason: 'credit_purchase' }]);
  });
});

describe('the newest state wins', () => {
  test('an event older than the stored state changes nothing', async () => {
    const sub = newSubscription();
    await send(linkingCheckout(sub));
    await send(subscriptionEvent('customer.subscription.updated', sub, { period: 1, created: eventTime(100) }));
    const older = subscriptionEvent('customer.subscription.created', sub, { period: 0, monthlyCredits: 999, priceId: 'price_old', created: eventTime(0) });
    expect((await send(older)).status).toBe('processed');
    expect(await eventRecord(database.db, older.id)).toEqual({ type: 'customer.subscription.created', status: 'processed', error: 'older than the stored subscription state' });
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 100, plan: 'price_basic_monthly', periodStart: periodStart(1) });
    expect(await bucketLedger(database.db, sub.user, 'subscription')).toEqual([{ delta: 100, reason: 'subscription_period_allowance' }]);
  });

  test('an older update arriving after deleted does not revive the subscription or its credits', async () => {
    const sub = newSubscription();
    await send(linkingCheckout(sub));
    await send(subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0) }));
    await send(subscriptionEvent('customer.subscription.deleted', sub, { period: 0, created: eventTime(200) }));
    await send(subscriptionEvent('customer.subscription.updated', sub, { period: 1, created: eventTime(100) }));
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 0, status: 'canceled', periodStart: periodStart(0) });
  });

  describe('on equal event seconds', () => {
    const sameSecond = eventTime(500);

    test.each([
      ['deleted first', ['deleted', 'updated']],
      ['deleted last', ['updated', 'deleted']],
    ] as const)('an ended subscription stays ended, even against a later billing period (%s)', async (_name, order) => {
      const sub = newSubscription();
      await send(linkingCheckout(sub));
      await send(subscriptionEvent('customer.subscription.created', sub, { period: 0, created: eventTime(0) }));
      const events = {
        deleted: subscriptionEvent('customer.subscription.deleted', sub, { period: 0, created: sameSecond, id: `evt_${randomBytes(8).toString('hex')}_a` }),
        updated: subscriptionEvent('customer.subscription.updated', sub, { period: 1, created: sameSecond, id: `evt_${randomBytes(8).toString('hex')}_z` }),
      };
      for (const name of order) await send(events[name]);
      expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 0, status: 'canceled', periodStart: periodStart(0) });
    });

    test.each([
      ['later period first', [1, 0]],
      ['later period last', [0, 1]],
    ] as const)('the later current_period_end wins (%s)', async (_name, order) => {
      const sub = newSubscription();
      await send(linkingCheckout(sub));
      const byPeriod = [
        // The earlier period carries the greater event id, so only the period can decide.
        subscriptionEvent('customer.subscription.updated', sub, { period: 0, monthlyCredits: 100, created: sameSecond, id: `evt_${randomBytes(8).toString('hex')}_z` }),
        subscriptionEvent('customer.subscription.updated', sub, {
          period: 1,
          monthlyCredits: 200,
          priceId: 'price_double_monthly',
          created: sameSecond,
          id: `evt_${randomBytes(8).toString('hex')}_a`,
        }),
      ];
      for (const index of order) await send(byPeriod[index]!);
      expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 200, plan: 'price_double_monthly', periodStart: periodStart(1) });
    });

    test.each([
      ['greater id first', ['b', 'a']],
      ['greater id last', ['a', 'b']],
    ] as const)('with the same period, the greater event id wins (%s)', async (_name, order) => {
      const sub = newSubscription();
      await send(linkingCheckout(sub));
      const prefix = `evt_${randomBytes(8).toString('hex')}`;
      const events = {
        a: subscriptionEvent('customer.subscription.updated', sub, { period: 0, status: 'past_due', created: sameSecond, id: `${prefix}_a` }),
        b: subscriptionEvent('customer.subscription.updated', sub, { period: 0, status: 'active', created: sameSecond, id: `${prefix}_b` }),
      };
      for (const name of order) await send(events[name]);
      expect(await accountOf(sub.user)).toMatchObject({ status: 'active', subscriptionCredits: 100 });
    });
  });
});

describe('delivery order does not matter (property)', () => {
  const plans = [
    { priceId: 'price_prop_small', monthlyCredits: 100 },
    { priceId: 'price_prop_large', monthlyCredits: 250 },
  ] as const;

  type Status = 'active' | 'trialing' | 'past_due' | 'unpaid';
  const entitled = (status: Status) => status === 'active' || status === 'trialing';
  const statusArbitrary = fc.constantFrom<Status>('active', 'trialing', 'past_due', 'unpaid');
  const planArbitrary = fc.constantFrom<0 | 1>(0, 1);

  interface Change {
    plan: 0 | 1;
    status: Status;
  }
  interface Period extends Change {
    /** How the period opens (paid, trialling, failed renewal), then changes within it: plan switches, payment recovered or lost. */
    changes: Change[];
  }
  interface History {
    periods: Period[];
    deleted: boolean;
    /** Seconds between consecutive events; 0 makes equal-second ties. */
    gaps: number[];
  }

  const historyArbitrary: fc.Arbitrary<History> = fc.record({
    periods: fc.array(
      fc.record({
        plan: planArbitrary,
        status: statusArbitrary,
        changes: fc.array(fc.record({ plan: planArbitrary, status: statusArbitrary }), { maxLength: 3 }),
      }),
      { minLength: 1, maxLength: 3 },
    ),
    deleted: fc.boolean(),
    gaps: fc.array(fc.constantFrom(0, 1, 3600), { minLength: 16, maxLength: 16 }),
  });

  interface Step {
    type: SubscriptionEventType;
    period: number;
    plan: 0 | 1;
    status: Status;
    created: number;
  }

  /** The subscription's events as Stripe creates them, oldest first (same-second events keep step order by id). */
  function stepsOf(history: History): Step[] {
    const steps: Step[] = [];
    let created = eventTime(1000);
    const push = (step: Omit<Step, 'created'>) => {
      created += steps.length === 0 ? 0 : history.gaps[steps.length % history.gaps.length]!;
      steps.push({ ...step, created });
    };
    history.periods.forEach((period, index) => {
      push({ type: index === 0 ? 'customer.subscription.created' : 'customer.subscription.updated', period: index, plan: period.plan, status: period.status });
      for (const change of period.changes) push({ type: 'customer.subscription.updated', period: index, plan: change.plan, status: change.status });
    });
    const last = history.periods.length - 1;
    if (history.deleted) push({ type: 'customer.subscription.deleted', period: last, plan: history.periods[last]!.plan, status: 'active' });
    return steps;
  }

  /** The linking checkout session first, then the subscription's events; ids sort in step order. */
  function eventsFor(sub: TestSubscription, steps: Step[], idPrefix: string): object[] {
    const id = (index: number) => `${idPrefix}_${String(index).padStart(2, '0')}`;
    return [
      linkingCheckout(sub, { id: id(0), created: steps[0]!.created }),
      ...steps.map((step, index) =>
        subscriptionEvent(step.type, sub, { period: step.period, ...plans[step.plan], status: step.status, created: step.created, id: id(index + 1) }),
      ),
    ];
  }

  const comparable = (row: AccountRow | undefined) =>
    row && { subscriptionCredits: row.subscriptionCredits, status: row.status, plan: row.plan, periodStart: row.periodStart, periodEnd: row.periodEnd };

  test('any permutation, with duplicates, of one subscription history ends in the same row as in-order delivery', async () => {
    const scenario = historyArbitrary.chain((history) => {
      const count = stepsOf(history).length + 1;
      const indices = Array.from({ length: count }, (_, index) => index);
      return fc.record({
        history: fc.constant(history),
        order: fc.shuffledSubarray(indices, { minLength: count, maxLength: count }),
        duplicates: fc.array(fc.record({ event: fc.nat({ max: count - 1 }), position: fc.nat({ max: count }) }), { maxLength: 3 }),
      });
    });

    await fc.assert(
      fc.asyncProperty(scenario, async ({ history, order, duplicates }) => {
        const steps = stepsOf(history);
        const run = randomBytes(6).toString('hex');

        const inOrder = newSubscription();
        for (const event of eventsFor(inOrder, steps, `evt_${run}_inorder`)) expect(['processed']).toContain((await send(event)).status);

        const shuffled = newSubscription();
        const events = eventsFor(shuffled, steps, `evt_${run}_shuffled`);
        const deliveries = order.map((index) => events[index]!);
        for (const { event, position } of duplicates) deliveries.splice(position, 0, events[event]!);
        for (const event of deliveries) expect(['processed', 'unmatched', 'duplicate']).toContain((await send(event)).status);

        const expected = await accountOf(inOrder.user);
        expect(comparable(await accountOf(shuffled.user))).toEqual(comparable(expected));

        // And in-order delivery itself follows the rules: the last state decides.
        const last = steps.at(-1)!;
        expect(comparable(expected)).toEqual({
          subscriptionCredits: history.deleted || !entitled(last.status) ? 0 : plans[last.plan].monthlyCredits,
          status: history.deleted ? 'canceled' : last.status,
          plan: plans[last.plan].priceId,
          periodStart: periodStart(last.period),
          periodEnd: periodEnd(last.period),
        });
      }),
      { numRuns: 25 },
    );
  });
});

describe('a user who signs up again', () => {
  /** A second subscription for the same user and customer, started while the first is still active. */
  const replacementOf = (first: TestSubscription): TestSubscription => ({ ...first, id: stripeId('sub') });

  test.each([
    ['after the old one ended', false],
    ['before the old one ended (linked when it ends)', true],
  ])('the new subscription is linked and credited %s', async (_name, newFirst) => {
    const first = newSubscription();
    await send(linkingCheckout(first, { created: eventTime(1) }));
    await send(subscriptionEvent('customer.subscription.created', first, { period: 2, monthlyCredits: 100, created: eventTime(2) }));
    const second = replacementOf(first);
    const deleteFirst = subscriptionEvent('customer.subscription.deleted', first, { period: 2, created: eventTime(3) });
    const signUpAgain = [
      linkingCheckout(second, { created: eventTime(4) }),
      subscriptionEvent('customer.subscription.created', second, { period: 3, monthlyCredits: 300, priceId: 'price_pro', created: eventTime(5) }),
    ];
    if (newFirst) {
      expect((await send(signUpAgain[0]!)).status).toBe('unmatched');
      await send(signUpAgain[1]!);
      await send(deleteFirst);
    } else {
      await send(deleteFirst);
      for (const event of signUpAgain) await send(event);
    }
    expect(await accountOf(first.user)).toMatchObject({ subscriptionId: second.id, subscriptionCredits: 300, status: 'active', plan: 'price_pro' });
  });
});

describe('changes within a billing period', () => {
  test.each([
    ['in order', false],
    ['reversed', true],
  ])('an upgrade mid-period leaves the new plan\'s allowance (%s)', async (_name, reversed) => {
    const sub = newSubscription();
    const events = [
      linkingCheckout(sub, { created: eventTime(1) }),
      subscriptionEvent('customer.subscription.created', sub, { period: 3, monthlyCredits: 100, created: eventTime(2) }),
      subscriptionEvent('customer.subscription.updated', sub, { period: 3, monthlyCredits: 500, priceId: 'price_big', created: eventTime(3) }),
    ];
    for (const event of reversed ? events.reverse() : events) await send(event);
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 500, plan: 'price_big' });
  });

  test.each([
    ['in order', false],
    ['reversed', true],
  ])('losing the payment mid-period withholds the allowance until it is paid again (%s)', async (_name, reversed) => {
    const sub = newSubscription();
    const events = [
      linkingCheckout(sub, { created: eventTime(1) }),
      subscriptionEvent('customer.subscription.created', sub, { period: 3, monthlyCredits: 100, created: eventTime(2) }),
      subscriptionEvent('customer.subscription.updated', sub, { period: 3, monthlyCredits: 100, status: 'unpaid', created: eventTime(3) }),
    ];
    for (const event of reversed ? [...events].reverse() : events) await send(event);
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 0, status: 'unpaid' });
    await send(subscriptionEvent('customer.subscription.updated', sub, { period: 3, monthlyCredits: 100, status: 'active', created: eventTime(4) }));
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 100, status: 'active' });
  });

  test('a downgrade after spending never takes back more than is left', async () => {
    const sub = newSubscription();
    await send(linkingCheckout(sub, { created: eventTime(1) }));
    await send(subscriptionEvent('customer.subscription.created', sub, { period: 3, monthlyCredits: 500, created: eventTime(2) }));
    await spendCredits(database.db, sub.user, 'subscription', 450);
    await send(subscriptionEvent('customer.subscription.updated', sub, { period: 3, monthlyCredits: 100, created: eventTime(3) }));
    expect(await accountOf(sub.user)).toMatchObject({ subscriptionCredits: 0 });
    expect((await bucketLedger(database.db, sub.user, 'subscription')).at(-1)).toEqual({ delta: -50, reason: 'subscription_allowance_lowered' });
  });
});

test('every balance equals its ledger, no session is granted twice, no grant lacks a paid purchase', async () => {
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});
