/**
 * What disputes (chargebacks) do to credits: an open or lost dispute takes back the disputed share of the
 * purchase's credits, a won one gives it back, and refunds and disputes together never take back more than the
 * purchase; whatever order the events arrive in.
 */
import { randomUUID } from 'node:crypto';
import { HANDLED_EVENT_TYPES } from '../webhook/handledEventTypes';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import { bucketLedger, eventRecord, spendCredits } from './support/records';
import { checkoutSession, dispute, invoicePayment, refund, stripeEvent, stripeId, unixSeconds } from './support/stripeFixtures';
import { monthlyPeriod, planPrice, SubscriptionStory } from './support/subscriptionStory';
import { deliver, type DeliveryResponse, useAppOnFreshDatabase } from './support/testApp';

const service = useAppOnFreshDatabase();

const eventsStart = unixSeconds() - 30 * 24 * 3600;

async function send(event: object): Promise<DeliveryResponse['body']> {
  const response = await deliver(service.webhookUrl, event);
  expect(response.status).toBe(200);
  return response.body;
}

/** A paid one-off purchase of `credits` for `amountCents`, and the events of its payment's disputes. */
function purchaseOf(credits: number, amountCents = 1000) {
  const user = `user_${randomUUID()}`;
  const paymentIntent = stripeId('pi');
  const chargeId = stripeId('ch');
  const completed = stripeEvent(
    'checkout.session.completed',
    checkoutSession({ client_reference_id: user, payment_intent: paymentIntent, amount_total: amountCents, metadata: { credits: String(credits) } }),
    { created: eventsStart },
  );
  const disputeEvent = (type: 'charge.dispute.created' | 'charge.dispute.closed', options: { id: string; amount: number; status: string; created: number }) =>
    stripeEvent(type, dispute({ id: options.id, amount: options.amount, status: options.status as never, charge: chargeId, payment_intent: paymentIntent }), {
      created: options.created,
    });
  return { user, paymentIntent, chargeId, completed, disputeEvent };
}

test('disputes are among the event types registered with Stripe (defect 5)', () => {
  expect(HANDLED_EVENT_TYPES).toEqual(expect.arrayContaining(['charge.dispute.created', 'charge.dispute.closed']));
});

test('an opened dispute takes back the disputed share; a lost one keeps it taken, even if the credits were spent (defect 5)', async () => {
  const purchase = purchaseOf(100);
  await send(purchase.completed);
  await spendCredits(service.db, purchase.user, 'purchased', 90);
  const id = stripeId('dp');
  await send(purchase.disputeEvent('charge.dispute.created', { id, amount: 1000, status: 'needs_response', created: eventsStart + 100 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: -90, subscription: 0 });
  await send(purchase.disputeEvent('charge.dispute.closed', { id, amount: 1000, status: 'lost', created: eventsStart + 5000 }));
  expect(await bucketLedger(service.db, purchase.user, 'purchased')).toEqual([
    { delta: 100, reason: 'credit_purchase' },
    { delta: -90, reason: 'usage' },
    { delta: -100, reason: 'dispute' },
  ]);
});

test.each([
  ['a won dispute', 'needs_response', 'won', 400],
  ['an inquiry closed without a chargeback', 'warning_needs_response', 'warning_closed', 1000],
] as const)('%s gives back the credits its opening took', async (_name, opened, closed, amount) => {
  const purchase = purchaseOf(100);
  await send(purchase.completed);
  const id = stripeId('dp');
  await send(purchase.disputeEvent('charge.dispute.created', { id, amount, status: opened, created: eventsStart + 100 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 100 - amount / 10, subscription: 0 });
  await send(purchase.disputeEvent('charge.dispute.closed', { id, amount, status: closed, created: eventsStart + 5000 }));
  expect(await bucketLedger(service.db, purchase.user, 'purchased')).toEqual([
    { delta: 100, reason: 'credit_purchase' },
    { delta: -amount / 10, reason: 'dispute' },
    { delta: amount / 10, reason: 'dispute_won' },
  ]);
});

test.each([
  ['closed (won) first, then created, then the purchase', ['closed', 'created', 'purchase']],
  ['created, then the purchase, then closed (won)', ['created', 'purchase', 'closed']],
  ['the purchase, then closed (won), then created', ['purchase', 'closed', 'created']],
] as const)('the newest report of a dispute decides whatever the order: %s leaves all credits', async (_name, order) => {
  const purchase = purchaseOf(100);
  const id = stripeId('dp');
  const events = {
    purchase: purchase.completed,
    created: purchase.disputeEvent('charge.dispute.created', { id, amount: 1000, status: 'needs_response', created: eventsStart + 100 }),
    closed: purchase.disputeEvent('charge.dispute.closed', { id, amount: 1000, status: 'won', created: eventsStart + 5000 }),
  };
  for (const name of order) await send(events[name]);
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 100, subscription: 0 });
});

test('a dispute arriving before its purchase is kept (unmatched) and applied when the purchase arrives', async () => {
  const purchase = purchaseOf(100);
  const opened = purchase.disputeEvent('charge.dispute.created', { id: stripeId('dp'), amount: 250, status: 'needs_response', created: eventsStart + 100 });
  expect((await send(opened)).status).toBe('unmatched');
  await send(purchase.completed);
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 75, subscription: 0 });
});

test('refunds and a dispute of one charge never take back more than the purchase; the refund part first', async () => {
  const purchase = purchaseOf(100);
  await send(purchase.completed);
  await send(stripeEvent('refund.created', refund({ amount: 600, charge: purchase.chargeId, payment_intent: purchase.paymentIntent }), { created: eventsStart + 50 }));
  await send(purchase.disputeEvent('charge.dispute.created', { id: stripeId('dp'), amount: 1000, status: 'needs_response', created: eventsStart + 100 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 0, subscription: 0 });
  const { rows } = await service.db.query('SELECT credits_refunded AS refunded, credits_disputed AS disputed FROM credit_purchases WHERE payment_intent = $1', [purchase.paymentIntent]);
  expect(rows).toEqual([{ refunded: 60, disputed: 40 }]);
});

test('a dispute of a subscription invoice’s payment is processed with a note and leaves the subscription credits', async () => {
  const story = new SubscriptionStory({ createdSeconds: eventsStart });
  const state = { period: monthlyPeriod(eventsStart, 0), plan: planPrice(300) };
  const paid = story.paidInvoice({ ...state, billingReason: 'subscription_create', created: eventsStart });
  const payment = invoicePayment(paid.data.object);
  for (const event of [story.signUp({ created: eventsStart }), story.event('customer.subscription.created', { ...state, created: eventsStart }), paid]) await send(event);
  await send(stripeEvent('invoice_payment.paid', payment, { created: eventsStart }));
  const opened = stripeEvent('charge.dispute.created', dispute({ amount: 3000, payment_intent: payment.payment.payment_intent as string }), { created: eventsStart + 100 });
  expect((await send(opened)).status).toBe('processed');
  expect(await eventRecord(service.db, opened.id)).toMatchObject({ error: expect.stringContaining('subscription credits are not taken back') });
  expect(await balanceOf(service.db, story.user)).toEqual({ purchased: 0, subscription: 300 });
});

test('every balance equals its ledger, no session is granted twice, no grant lacks a paid purchase', async () => {
  expect(await checkInvariants(service.db)).toEqual(invariantsHold);
});
