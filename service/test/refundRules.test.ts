/**
 * What refunds take back: purchased credits in proportion to the refunds of the payment that did not fail,
 * tracked one refund at a time (refund.* and charge.refund.updated), or by the cumulative amount of
 * charge.refunded while no refund object is known; once, whatever order the events arrive in.
 */
import { randomUUID } from 'node:crypto';
import type Stripe from 'stripe';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import { charge, checkoutSession, invoicePayment, refund, stripeEvent, stripeId, unixSeconds, type RefundStatus } from './support/stripeFixtures';
import { monthlyPeriod, planPrice, SubscriptionStory } from './support/subscriptionStory';
import { deliver, type DeliveryResponse, useAppOnFreshDatabase } from './support/testApp';
import { bucketLedger, eventRecord, spendCredits } from './support/records';

const service = useAppOnFreshDatabase();

const eventsStart = unixSeconds() - 3600;

interface Purchase {
  user: string;
  paymentIntent: string;
  chargeId: string;
  session: Stripe.Checkout.Session;
}

/** A one-off purchase of `credits` for `amountCents`, paid with one charge. */
function newPurchase(credits: number, amountCents = 1000, overrides: Parameters<typeof checkoutSession>[0] = {}): Purchase {
  const user = `user_${randomUUID()}`;
  const paymentIntent = stripeId('pi');
  const session = checkoutSession({ client_reference_id: user, payment_intent: paymentIntent, amount_total: amountCents, metadata: { credits: String(credits) }, ...overrides });
  return { user, paymentIntent, chargeId: stripeId('ch'), session };
}

const purchaseCompleted = (purchase: Purchase) => stripeEvent('checkout.session.completed', purchase.session, { created: eventsStart });

/** `charge.refunded` as Stripe sends it: the charge with its cumulative `amount_refunded`. */
function refunded(purchase: Purchase, amountRefundedCents: number, options: { created?: number; amountCents?: number } = {}) {
  const amount = options.amountCents ?? purchase.session.amount_total ?? 1000;
  const refundedCharge = charge({
    id: purchase.chargeId,
    payment_intent: purchase.paymentIntent,
    amount,
    amount_refunded: amountRefundedCents,
    refunded: amountRefundedCents >= amount,
  });
  return stripeEvent('charge.refunded', refundedCharge, { created: options.created ?? eventsStart + 60 });
}

async function send(event: object): Promise<DeliveryResponse['body']> {
  const response = await deliver(service.webhookUrl, event);
  expect(response.status).toBe(200);
  return response.body;
}

async function purchaseRow(sessionId: string) {
  const { rows } = await service.db.query<{ creditsRefunded: number; amountRefunded: number; status: string }>(
    'SELECT credits_refunded AS "creditsRefunded", amount_refunded AS "amountRefunded", status FROM credit_purchases WHERE stripe_checkout_session_id = $1',
    [sessionId],
  );
  return rows[0];
}

test('a partial refund takes back its share of the credits, the full refund later takes the rest', async () => {
  const purchase = newPurchase(100);
  await send(purchaseCompleted(purchase));
  expect(await send(refunded(purchase, 250, { created: eventsStart + 60 }))).toEqual({ received: true, status: 'processed' });
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 75, subscription: 0 });
  expect(await purchaseRow(purchase.session.id)).toEqual({ creditsRefunded: 25, amountRefunded: 250, status: 'paid' });

  await send(refunded(purchase, 1000, { created: eventsStart + 120 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 0, subscription: 0 });
  expect(await bucketLedger(service.db, purchase.user, 'purchased')).toEqual([
    { delta: 100, reason: 'credit_purchase' },
    { delta: -25, reason: 'refund' },
    { delta: -75, reason: 'refund' },
  ]);
});

test('the same refund delivered twice, or reported again by another event, takes credits once', async () => {
  const purchase = newPurchase(100);
  await send(purchaseCompleted(purchase));
  const event = refunded(purchase, 500);
  expect((await send(event)).status).toBe('processed');
  expect((await send(event)).status).toBe('duplicate');
  // e.g. charge.refunded re-sent after a refund's metadata changed: same cumulative amount, new event id.
  expect((await send(refunded(purchase, 500, { created: eventsStart + 90 }))).status).toBe('processed');
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 50, subscription: 0 });
  expect(await bucketLedger(service.db, purchase.user, 'purchased')).toEqual([
    { delta: 100, reason: 'credit_purchase' },
    { delta: -50, reason: 'refund' },
  ]);
});

test('an older, smaller refund event arriving after a later, larger one takes nothing', async () => {
  const purchase = newPurchase(100);
  await send(purchaseCompleted(purchase));
  await send(refunded(purchase, 600, { created: eventsStart + 120 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 40, subscription: 0 });
  await send(refunded(purchase, 300, { created: eventsStart + 60 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 40, subscription: 0 });
  expect(await purchaseRow(purchase.session.id)).toMatchObject({ creditsRefunded: 60, amountRefunded: 600 });
});

test('refunding credits already spent leaves a negative purchased balance: the debt stays visible in the ledger', async () => {
  const purchase = newPurchase(100);
  await send(purchaseCompleted(purchase));
  await spendCredits(service.db, purchase.user, 'purchased', 80);
  await send(refunded(purchase, 1000));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: -80, subscription: 0 });
  expect(await bucketLedger(service.db, purchase.user, 'purchased')).toEqual([
    { delta: 100, reason: 'credit_purchase' },
    { delta: -80, reason: 'usage' },
    { delta: -100, reason: 'refund' },
  ]);
});

test('a refund arriving before its purchase is kept (unmatched) and applied when the purchase arrives', async () => {
  const purchase = newPurchase(100);
  const early = refunded(purchase, 500);
  expect(await send(early)).toEqual({ received: true, status: 'unmatched' });
  expect(await eventRecord(service.db, early.id)).toMatchObject({ status: 'unmatched', error: expect.stringContaining('no paid credit purchase or subscription invoice for this payment yet') });
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 0, subscription: 0 });

  expect((await send(purchaseCompleted(purchase))).status).toBe('processed');
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 50, subscription: 0 });
  expect(await bucketLedger(service.db, purchase.user, 'purchased')).toEqual([
    { delta: 100, reason: 'credit_purchase' },
    { delta: -50, reason: 'refund' },
  ]);
  // The early event, recorded unmatched, is applied again when it comes again (redelivery, replay): it takes nothing more.
  expect((await send(early)).status).toBe('processed');
  expect((await send(early)).status).toBe('duplicate');
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 50, subscription: 0 });
  await send(refunded(purchase, 500, { created: eventsStart + 300 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 50, subscription: 0 });
});

test('two refunds arriving before the purchase, newest first: the purchase is charged the largest cumulative amount', async () => {
  const purchase = newPurchase(100);
  await send(refunded(purchase, 600, { created: eventsStart + 120 }));
  await send(refunded(purchase, 300, { created: eventsStart + 60 }));
  await send(purchaseCompleted(purchase));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 40, subscription: 0 });
});

test('a refund of a delayed payment that is still pending is applied when the payment succeeds', async () => {
  const purchase = newPurchase(100, 1000, { payment_status: 'unpaid' });
  await send(purchaseCompleted(purchase));
  expect((await send(refunded(purchase, 250))).status).toBe('unmatched');
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 0, subscription: 0 });
  await send(stripeEvent('checkout.session.async_payment_succeeded', { ...purchase.session, payment_status: 'paid' }, { created: eventsStart + 600 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 75, subscription: 0 });
  expect(await purchaseRow(purchase.session.id)).toMatchObject({ status: 'paid', creditsRefunded: 25 });
});

test('a refund for a payment that never bought credits is unmatched and changes no balance', async () => {
  const stranger = newPurchase(100);
  const event = refunded(stranger, 1000);
  expect(await send(event)).toEqual({ received: true, status: 'unmatched' });
  expect(await eventRecord(service.db, event.id)).toMatchObject({ status: 'unmatched' });
  const { rows } = await service.db.query('SELECT 1 FROM credit_ledger WHERE stripe_event_id = $1', [event.id]);
  expect(rows).toEqual([]);
  expect(await balanceOf(service.db, stranger.user)).toEqual({ purchased: 0, subscription: 0 });
});

test('a refund of a purchase never touches subscription credits', async () => {
  const purchase = newPurchase(100);
  const story = new SubscriptionStory({ user: purchase.user, createdSeconds: eventsStart });
  const state = { period: monthlyPeriod(eventsStart, 0), plan: planPrice(300) };
  await send(story.signUp({ created: eventsStart }));
  await send(story.event('customer.subscription.created', { ...state, created: eventsStart }));
  await send(story.paidInvoice({ ...state, billingReason: 'subscription_create', created: eventsStart }));
  await send(purchaseCompleted(purchase));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 100, subscription: 300 });

  await send(refunded(purchase, 1000));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 0, subscription: 300 });
  const { rows } = await service.db.query("SELECT delta FROM credit_ledger WHERE user_id = $1 AND bucket = 'subscription'", [purchase.user]);
  expect(rows).toEqual([{ delta: 300 }]);
});

test('a partial refund rounds the credits taken down: a third of 100 credits takes 33, and the full refund takes exactly all', async () => {
  const purchase = newPurchase(100, 999);
  await send(purchaseCompleted(purchase));
  await send(refunded(purchase, 333, { created: eventsStart + 60 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 67, subscription: 0 });
  await send(refunded(purchase, 666, { created: eventsStart + 120 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 34, subscription: 0 });
  await send(refunded(purchase, 999, { created: eventsStart + 180 }));
  expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 0, subscription: 0 });
  expect((await bucketLedger(service.db, purchase.user, 'purchased')).map((entry) => entry.delta)).toEqual([100, -33, -33, -34]);
});

/** A refund event as Stripe sends it, for `purchase`'s payment. */
function refundEvent(
  type: 'refund.created' | 'refund.updated' | 'refund.failed' | 'charge.refund.updated',
  purchase: Purchase,
  options: { id: string; amount: number; status: RefundStatus; created?: number },
) {
  const object = refund({ id: options.id, amount: options.amount, status: options.status, charge: purchase.chargeId, payment_intent: purchase.paymentIntent });
  return stripeEvent(type, object, { created: options.created ?? eventsStart + 60 });
}

describe('refunds tracked one by one', () => {
  test('a refund that fails gives its credits back: charge.refunded, then refund.failed (defect 4)', async () => {
    const purchase = newPurchase(100);
    await send(purchaseCompleted(purchase));
    await send(refunded(purchase, 400));
    expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 60, subscription: 0 });
    await send(refundEvent('refund.failed', purchase, { id: stripeId('re'), amount: 400, status: 'failed', created: eventsStart + 600 }));
    expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 100, subscription: 0 });
  });

  test('a refund that fails gives its credits back (refund.created pending, then refund.failed)', async () => {
    const purchase = newPurchase(100);
    await send(purchaseCompleted(purchase));
    const refundId = stripeId('re');
    expect((await send(refundEvent('refund.created', purchase, { id: refundId, amount: 400, status: 'pending' }))).status).toBe('processed');
    expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 60, subscription: 0 });
    await send(refundEvent('refund.failed', purchase, { id: refundId, amount: 400, status: 'failed', created: eventsStart + 600 }));
    expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 100, subscription: 0 });
    expect(await bucketLedger(service.db, purchase.user, 'purchased')).toEqual([
      { delta: 100, reason: 'credit_purchase' },
      { delta: -40, reason: 'refund' },
      { delta: 40, reason: 'refund_failed' },
    ]);
  });

  test.each([
    ['the failure first', true],
    ['the failure last', false],
  ])('of two refunds, only the one that did not fail takes credits, whatever the order (%s)', async (_name, failureFirst) => {
    const purchase = newPurchase(100);
    const [kept, failed] = [stripeId('re'), stripeId('re')];
    const events = [
      refundEvent('refund.created', purchase, { id: kept, amount: 300, status: 'succeeded' }),
      refundEvent('refund.created', purchase, { id: failed, amount: 500, status: 'pending' }),
      stripeEvent('charge.refunded', charge({ id: purchase.chargeId, payment_intent: purchase.paymentIntent, amount: 1000, amount_refunded: 800 }), { created: eventsStart + 61 }),
      // A card refund that had succeeded can still fail later: charge.refund.updated reports it.
      refundEvent('charge.refund.updated', purchase, { id: failed, amount: 500, status: 'failed', created: eventsStart + 900 }),
    ];
    const order = failureFirst ? [events[3]!, purchaseCompleted(purchase), ...events.slice(0, 3)] : [purchaseCompleted(purchase), ...events];
    for (const event of order) await send(event);
    expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 70, subscription: 0 });
  });

  test('charge.refunded’s cumulative amount counts until refund objects are known; then they decide', async () => {
    const purchase = newPurchase(100);
    await send(purchaseCompleted(purchase));
    const refundId = stripeId('re');
    await send(stripeEvent('charge.refunded', charge({ id: purchase.chargeId, payment_intent: purchase.paymentIntent, amount: 1000, amount_refunded: 1000 })));
    expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 0, subscription: 0 });
    await send(refundEvent('refund.failed', purchase, { id: refundId, amount: 1000, status: 'failed', created: eventsStart + 600 }));
    expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 100, subscription: 0 });
  });

  test('older API versions list the refunds on charge.refunded: each is kept', async () => {
    const purchase = newPurchase(100);
    await send(purchaseCompleted(purchase));
    const refunds = [refund({ amount: 200, charge: purchase.chargeId, payment_intent: purchase.paymentIntent }), refund({ amount: 300, status: 'failed', charge: purchase.chargeId })];
    const legacyCharge = { ...charge({ id: purchase.chargeId, payment_intent: purchase.paymentIntent, amount: 1000, amount_refunded: 200 }), refunds: { object: 'list', data: refunds, has_more: false } };
    await send(stripeEvent('charge.refunded', legacyCharge, { apiVersion: '2020-08-27' }));
    expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 80, subscription: 0 });
    const { rows } = await service.db.query('SELECT id, counted FROM payment_refunds WHERE payment_intent = $1 ORDER BY amount', [purchase.paymentIntent]);
    expect(rows).toEqual([
      { id: refunds[0]!.id, counted: true },
      { id: refunds[1]!.id, counted: false },
    ]);
  });

  test('credits taken back are computed in exact integers: a full refund of 999,999,999,999,999 credits bought for $11.53 takes them all (defect 12)', async () => {
    const credits = 999_999_999_999_999;
    const purchase = newPurchase(credits, 1153);
    await send(purchaseCompleted(purchase));
    await send(refunded(purchase, 1153));
    expect(await balanceOf(service.db, purchase.user)).toEqual({ purchased: 0, subscription: 0 });
    const third = newPurchase(123_456_789_012_345, 3541);
    await send(purchaseCompleted(third));
    await send(refundEvent('refund.created', third, { id: stripeId('re'), amount: 1180, status: 'succeeded' }));
    // ⌊123,456,789,012,345 × 1180 ÷ 3541⌋ = 41,140,641,354,014 (floating point makes it …015).
    expect(await balanceOf(service.db, third.user)).toEqual({ purchased: 123_456_789_012_345 - 41_140_641_354_014, subscription: 0 });
  });

  test('a refund of a subscription invoice’s payment is processed with a note and leaves the subscription credits', async () => {
    const story = new SubscriptionStory({ createdSeconds: eventsStart });
    const state = { period: monthlyPeriod(eventsStart, 0), plan: planPrice(300) };
    const paid = story.paidInvoice({ ...state, billingReason: 'subscription_create', created: eventsStart });
    const payment = invoicePayment(paid.data.object);
    const paymentIntent = payment.payment.payment_intent as string;
    for (const event of [story.signUp({ created: eventsStart }), story.event('customer.subscription.created', { ...state, created: eventsStart }), paid]) await send(event);
    await send(stripeEvent('invoice_payment.paid', payment, { created: eventsStart }));
    const refunded = stripeEvent('refund.created', refund({ amount: 3000, payment_intent: paymentIntent }), { created: eventsStart + 60 });
    expect((await send(refunded)).status).toBe('processed');
    expect(await eventRecord(service.db, refunded.id)).toMatchObject({ error: `payment of subscription invoice ${paid.data.object.id}: subscription credits are not taken back by refunds or disputes` });
    expect(await balanceOf(service.db, story.user)).toEqual({ purchased: 0, subscription: 300 });
  });
});

test('every balance equals its ledger, no session is granted twice, no grant lacks a paid purchase', async () => {
  expect(await checkInvariants(service.db)).toEqual(invariantsHold);
});
