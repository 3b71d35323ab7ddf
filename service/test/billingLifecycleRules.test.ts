/**
 * Whole billing lifecycles, event by event as Stripe documents them ("Using webhooks with subscriptions",
 * "Subscription invoices", trials, pause payment collection, cancel at period end, prorations, disputes,
 * refunds), delivered signed over HTTP to the real app on a real database. Events the service does not act on
 * (invoice.created, invoice.finalized, invoice.payment_failed, …) are delivered too, as Stripe would.
 */
import fc from 'fast-check';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import { bucketLedger, spendCredits } from './support/records';
import { charge, checkoutSession, dispute, invoice, invoicePayment, refund, stripeEvent, stripeId, unixSeconds } from './support/stripeFixtures';
import { monthlyPeriod, planPrice, SubscriptionStory, type StateOptions } from './support/subscriptionStory';
import { deliver, useAppOnFreshDatabase } from './support/testApp';

const service = useAppOnFreshDatabase();

const hour = 3600;
const day = 24 * hour;
const firstStart = unixSeconds() - 100 * day;
const period = (n: number) => monthlyPeriod(firstStart, n);
const at = (n: number, offsetSeconds = 0) => period(n).start + offsetSeconds;
const basic = planPrice(100);
const pro = planPrice(500);

async function send(...events: object[]): Promise<string[]> {
  const outcomes: string[] = [];
  for (const event of events) {
    const response = await deliver(service.webhookUrl, event);
    expect(response.status).toBe(200);
    outcomes.push(response.body.status!);
  }
  return outcomes;
}

const subscriptionCredits = async (user: string) => (await balanceOf(service.db, user)).subscription;

async function statusOf(user: string) {
  const { rows } = await service.db.query<{ status: string }>('SELECT status FROM service_subscriptions WHERE user_id = $1', [user]);
  return rows[0]?.status;
}

/** An invoice event the service does not act on (draft, finalized, payment failed, voided), as Stripe sends it. */
function invoiceNotice(
  story: SubscriptionStory,
  type: 'invoice.created' | 'invoice.finalized' | 'invoice.payment_failed' | 'invoice.voided',
  state: StateOptions,
  created: number,
) {
  const status = type === 'invoice.created' ? 'draft' : type === 'invoice.voided' ? 'void' : 'open';
  return stripeEvent(type, invoice({ status, billing_reason: 'subscription_cycle', created }, { subscription: story.state(state) }), { created });
}

/** The renewal of period n as Stripe runs it: the period moves on, a draft invoice, an hour later the charge. */
function renewal(story: SubscriptionStory, state: StateOptions, n: number) {
  const paid = story.paidInvoice({ ...state, created: at(n, hour) });
  return {
    moved: [story.event('customer.subscription.updated', { ...state, created: at(n) }), invoiceNotice(story, 'invoice.created', state, at(n))],
    charged: [
      invoiceNotice(story, 'invoice.finalized', state, at(n, hour)),
      paid,
      stripeEvent('invoice_payment.paid', invoicePayment(paid.data.object, { created: at(n, hour) }), { created: at(n, hour) }),
    ],
  };
}

/** Sign-up through Checkout: the subscription starts incomplete, its first invoice is paid, it turns active. */
function checkoutSignUp(story: SubscriptionStory, state: StateOptions, second: number) {
  const paid = story.paidInvoice({ ...state, billingReason: 'subscription_create', created: second });
  return [
    story.event('customer.subscription.created', { ...state, status: 'incomplete', created: second }),
    invoiceNotice(story, 'invoice.finalized', state, second),
    paid,
    stripeEvent('invoice_payment.paid', invoicePayment(paid.data.object, { created: second }), { created: second }),
    story.event('customer.subscription.updated', { ...state, created: second }),
    story.signUp({ created: second }),
  ];
}

describe('subscriptions', () => {
  test('sign-up through Checkout: its six events within one second, in any order, grant the first period once and leave it active', async () => {
    await fc.assert(
      fc.asyncProperty(fc.shuffledSubarray([0, 1, 2, 3, 4, 5], { minLength: 6, maxLength: 6 }), async (order) => {
        const story = new SubscriptionStory({ createdSeconds: at(0) });
        const events = checkoutSignUp(story, { period: period(0), plan: basic }, at(0));
        await send(...order.map((index) => events[index]!));
        expect(await subscriptionCredits(story.user)).toBe(100);
        expect(await statusOf(story.user)).toBe('active');
      }),
      { numRuns: 20 },
    );
  });

  test('a paid renewal: the period moves on, the leftover expires, and the new period is granted when its invoice is paid', async () => {
    const story = new SubscriptionStory({ createdSeconds: at(0) });
    await send(...checkoutSignUp(story, { period: period(0), plan: basic }, at(0)));
    await spendCredits(service.db, story.user, 'subscription', 70);
    const next = renewal(story, { period: period(1), plan: basic }, 1);
    await send(...next.moved);
    expect(await subscriptionCredits(story.user)).toBe(0);
    await send(...next.charged);
    expect(await subscriptionCredits(story.user)).toBe(100);
  });

  test('a renewal whose first payment fails is past_due with no credits until the retry pays it', async () => {
    const story = new SubscriptionStory({ createdSeconds: at(0) });
    await send(...checkoutSignUp(story, { period: period(0), plan: basic }, at(0)));
    const state = { period: period(1), plan: basic };
    const next = renewal(story, state, 1);
    await send(
      ...next.moved,
      invoiceNotice(story, 'invoice.finalized', state, at(1, hour)),
      invoiceNotice(story, 'invoice.payment_failed', state, at(1, hour)),
      story.event('customer.subscription.updated', { ...state, status: 'past_due', created: at(1, hour) }),
    );
    expect([await subscriptionCredits(story.user), await statusOf(story.user)]).toEqual([0, 'past_due']);
    // Smart Retries, three days later: the invoice is paid and the subscription active again.
    await send(story.paidInvoice({ ...state, created: at(1, 3 * day) }), story.event('customer.subscription.updated', { ...state, created: at(1, 3 * day) }));
    expect([await subscriptionCredits(story.user), await statusOf(story.user)]).toEqual([100, 'active']);
  });

  test.each(['canceled', 'unpaid'] as const)('retries exhausted, the subscription %s: the unpaid period never has credits', async (outcome) => {
    const story = new SubscriptionStory({ createdSeconds: at(0) });
    await send(...checkoutSignUp(story, { period: period(0), plan: basic }, at(0)));
    const state = { period: period(1), plan: basic };
    await send(
      ...renewal(story, state, 1).moved,
      invoiceNotice(story, 'invoice.payment_failed', state, at(1, hour)),
      story.event('customer.subscription.updated', { ...state, status: 'past_due', created: at(1, hour) }),
      invoiceNotice(story, 'invoice.payment_failed', state, at(1, 15 * day)),
      outcome === 'canceled'
        ? story.event('customer.subscription.deleted', { ...state, created: at(1, 15 * day) })
        : story.event('customer.subscription.updated', { ...state, status: 'unpaid', created: at(1, 15 * day) }),
    );
    expect([await subscriptionCredits(story.user), await statusOf(story.user)]).toEqual([0, outcome]);
    // Unpaid: the next periods' invoices stay drafts, so they grant nothing either.
    if (outcome === 'unpaid') {
      await send(story.event('customer.subscription.updated', { period: period(2), plan: basic, status: 'unpaid', created: at(2) }));
      expect(await subscriptionCredits(story.user)).toBe(0);
    }
  });

  test('an upgrade invoiced at once (always_invoice) grants the difference; a downgrade (prorated on the renewal) counts from the next period', async () => {
    const story = new SubscriptionStory({ createdSeconds: at(0) });
    await send(...checkoutSignUp(story, { period: period(0), plan: basic }, at(0)));
    const change = at(0, 10 * day);
    const remaining = { start: change, end: period(0).end };
    await send(
      story.event('customer.subscription.updated', { period: period(0), plan: pro, created: change }),
      story.paidInvoice({
        period: period(0),
        plan: pro,
        billingReason: 'subscription_update',
        lines: [
          { priceId: basic.priceId, amount: -667, proration: true, period: remaining },
          { priceId: pro.priceId, amount: 3333, proration: true, period: remaining },
        ],
        created: change,
      }),
    );
    expect(await subscriptionCredits(story.user)).toBe(500);
    // Downgrade with the default create_prorations: no invoice now; the credit for unused time rides on the renewal.
    const downgrade = at(0, 20 * day);
    await send(story.event('customer.subscription.updated', { period: period(0), plan: basic, created: downgrade }));
    expect(await subscriptionCredits(story.user)).toBe(500);
    await send(
      story.event('customer.subscription.updated', { period: period(1), plan: basic, created: at(1) }),
      story.paidInvoice({
        period: period(1),
        plan: basic,
        lines: [{ priceId: pro.priceId, amount: -1667, proration: true, period: { start: downgrade, end: period(0).end } }, {}],
        created: at(1, hour),
      }),
    );
    expect(await subscriptionCredits(story.user)).toBe(100);
  });

  test('pause_collection: the paused renewal’s invoice is voided and grants nothing; after resuming, a paid renewal grants again', async () => {
    const story = new SubscriptionStory({ createdSeconds: at(0) });
    await send(...checkoutSignUp(story, { period: period(0), plan: basic }, at(0)));
    const paused = { period: period(1), plan: basic, collectionPaused: true };
    await send(
      story.event('customer.subscription.updated', { period: period(0), plan: basic, collectionPaused: true, created: at(0, 20 * day) }),
      story.event('customer.subscription.updated', { ...paused, created: at(1) }),
      invoiceNotice(story, 'invoice.created', paused, at(1)),
      invoiceNotice(story, 'invoice.voided', paused, at(1, hour)),
    );
    expect([await subscriptionCredits(story.user), await statusOf(story.user)]).toEqual([0, 'active']);
    await send(story.event('customer.subscription.updated', { period: period(1), plan: basic, created: at(1, 20 * day) }));
    const next = renewal(story, { period: period(2), plan: basic }, 2);
    await send(...next.moved, ...next.charged);
    expect(await subscriptionCredits(story.user)).toBe(100);
  });

  test('a trial: the $0 invoice grants the trial’s allowance, trial_will_end changes nothing, the first paid period grants again', async () => {
    const story = new SubscriptionStory({ createdSeconds: at(0) });
    const trialEnd = at(0, 14 * day);
    const trial = { period: { start: at(0), end: trialEnd }, plan: pro, status: 'trialing' as const, trialEnd };
    await send(
      story.event('customer.subscription.created', { ...trial, created: at(0) }),
      story.paidInvoice({ ...trial, billingReason: 'subscription_create', lines: [{ amount: 0 }], created: at(0) }),
      story.signUp({ created: at(0) }),
    );
    expect(await subscriptionCredits(story.user)).toBe(500);
    await spendCredits(service.db, story.user, 'subscription', 200);
    const paidPeriod = { period: { start: trialEnd, end: trialEnd + 30 * day }, plan: pro };
    await send(
      stripeEvent('customer.subscription.trial_will_end', story.state(trial), { created: trialEnd - 3 * day }),
      story.event('customer.subscription.updated', { ...paidPeriod, created: trialEnd }),
      story.paidInvoice({ ...paidPeriod, created: trialEnd + hour }),
    );
    expect([await subscriptionCredits(story.user), await statusOf(story.user)]).toEqual([500, 'active']);
  });

  test('cancel at period end: the paid period keeps its credits until the subscription is deleted at its end', async () => {
    const story = new SubscriptionStory({ createdSeconds: at(0) });
    const state = { period: period(0), plan: basic };
    await send(...checkoutSignUp(story, state, at(0)));
    await send(story.event('customer.subscription.updated', { ...state, cancelAtPeriodEnd: true, created: at(0, 5 * day) }));
    expect(await subscriptionCredits(story.user)).toBe(100);
    await send(story.event('customer.subscription.deleted', { ...state, cancelAtPeriodEnd: true, created: period(0).end }));
    expect([await subscriptionCredits(story.user), await statusOf(story.user)]).toEqual([0, 'canceled']);
  });
});

describe('one-off purchases', () => {
  function purchase(credits: number) {
    const user = `user_${stripeId('life')}`;
    const paymentIntent = stripeId('pi');
    const chargeId = stripeId('ch');
    const completed = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: user, payment_intent: paymentIntent, metadata: { credits: String(credits) } }));
    return { user, paymentIntent, chargeId, completed };
  }

  test.each([
    ['won', 100],
    ['lost', 0],
  ] as const)('a dispute opened, funds withdrawn, evidence submitted, then %s', async (outcome, credits) => {
    const bought = purchase(100);
    const id = stripeId('dp');
    const of = (status: string, created: number) => dispute({ id, status: status as never, charge: bought.chargeId, payment_intent: bought.paymentIntent, created });
    const opened = unixSeconds() - 10 * day;
    await send(
      bought.completed,
      stripeEvent('charge.dispute.created', of('needs_response', opened), { created: opened }),
      stripeEvent('charge.dispute.funds_withdrawn', of('needs_response', opened), { created: opened }),
    );
    expect((await balanceOf(service.db, bought.user)).purchased).toBe(0);
    await send(stripeEvent('charge.dispute.updated', of('under_review', opened + 3 * day), { created: opened + 3 * day }));
    await send(stripeEvent('charge.dispute.closed', of(outcome, opened + 9 * day), { created: opened + 9 * day }));
    expect((await balanceOf(service.db, bought.user)).purchased).toBe(credits);
  });

  test('a refund that fails after succeeding: charge.refunded, refund.created, then refund.failed and charge.refund.updated give the credits back', async () => {
    const bought = purchase(100);
    const refundId = stripeId('re');
    const refundOf = (status: 'succeeded' | 'failed') => refund({ id: refundId, amount: 1000, status, charge: bought.chargeId, payment_intent: bought.paymentIntent });
    const refundedAt = unixSeconds() - day;
    await send(
      bought.completed,
      stripeEvent('charge.refunded', charge({ id: bought.chargeId, amount: 1000, amount_refunded: 1000, payment_intent: bought.paymentIntent }), { created: refundedAt }),
      stripeEvent('refund.created', refundOf('succeeded'), { created: refundedAt }),
    );
    expect((await balanceOf(service.db, bought.user)).purchased).toBe(0);
    await send(
      stripeEvent('refund.failed', refundOf('failed'), { created: refundedAt + 2 * day }),
      stripeEvent('charge.refund.updated', refundOf('failed'), { created: refundedAt + 2 * day }),
    );
    expect(await bucketLedger(service.db, bought.user, 'purchased')).toEqual([
      { delta: 100, reason: 'credit_purchase' },
      { delta: -100, reason: 'refund' },
      { delta: 100, reason: 'refund_failed' },
    ]);
  });
});

test('every balance equals its ledger, no session is granted twice, no grant lacks a paid purchase', async () => {
  expect(await checkInvariants(service.db)).toEqual(invariantsHold);
});
