/**
 * The local Stripe's objects are the ones the service has to read: complete Stripe shapes of API
 * 2025-03-31.basil (and the legacy shapes where the service reads both), coherent with each other,
 * with fresh ids each time.
 */
import Stripe from 'stripe';
import { readSubscription } from '../../service/stripe/subscription';
import { balanceOf, checkInvariants, invariantsHold } from '../../service/test/support/invariants';
import { deliver, useAppOnFreshDatabase } from '../../service/test/support/testApp';
import { parseStripeEvent } from '../../service/webhook/stripeEvent';
import {
  charge,
  checkoutSession,
  dispute,
  invoice,
  invoicePayment,
  price,
  refund,
  stripeEvent,
  subscription,
  subscriptionCheckoutSession,
  subscriptionItem,
  webhookEndpoint,
} from '../objects';

/** One object of every kind, as each builder makes it by default. */
const everyBuilder = {
  checkoutSession,
  subscriptionCheckoutSession,
  price: () => price(),
  subscriptionItem: () => subscriptionItem(),
  subscription: () => subscription(),
  legacySubscription: () => subscription({}, { shape: 'legacy' }),
  invoice: () => invoice(),
  legacyInvoice: () => invoice({}, { shape: 'legacy' }),
  invoicePayment: () => invoicePayment(invoice()),
  charge,
  refund,
  dispute,
  webhookEndpoint,
} satisfies Record<string, () => { id: string }>;

describe('every builder', () => {
  it.each(Object.entries(everyBuilder))('%s travels as plain JSON: what the service receives is what was built', (_name, build) => {
    const built = build();
    expect(JSON.parse(JSON.stringify(built))).toStrictEqual(built);
  });

  it.each(Object.entries(everyBuilder))('%s makes an event the service accepts as a Stripe event after the signature check', (_name, build) => {
    const object = build();
    const event = stripeEvent('local.builder.test', object);

    const body = JSON.stringify(event, null, 2);
    const parsed = parseStripeEvent(body);

    expect(parsed).toMatchObject({ id: event.id, type: 'local.builder.test', livemode: false, data: { object: { id: object.id } } });
  });

  it.each(Object.entries(everyBuilder))('%s gives fresh ids on every call', (_name, build) => {
    expect(build().id).not.toBe(build().id);
  });
});

describe('checkout sessions', () => {
  it('builds a paid one-off checkout session by default and a subscription one on request', () => {
    const oneOff = checkoutSession();
    expect(oneOff).toMatchObject({
      object: 'checkout.session',
      mode: 'payment',
      payment_status: 'paid',
      status: 'complete',
      amount_total: 1000,
      currency: 'usd',
      client_reference_id: null,
      metadata: {},
      subscription: null,
      livemode: false,
    });
    expect(oneOff.id).toMatch(/^cs_test_[0-9a-f]{24}$/);
    expect(oneOff.payment_intent).toMatch(/^pi_/);

    const signUp = subscriptionCheckoutSession({ metadata: { user_id: 'u1' } });
    expect(signUp).toMatchObject({
      mode: 'subscription',
      payment_status: 'paid',
      payment_intent: null,
      metadata: { user_id: 'u1' },
    });
    expect(signUp.customer).toMatch(/^cus_/);
    expect(signUp.subscription).toMatch(/^sub_/);
  });

  it('never shares nested objects between two sessions', () => {
    const [a, b] = [checkoutSession(), checkoutSession()];
    expect(a.payment_intent).not.toBe(b.payment_intent);
    a.metadata = { changed: 'yes' };
    a.customer_details!.email = 'changed@example.com';
    expect(b.metadata).toEqual({});
    expect(b.customer_details?.email).toBe('jenny.rosen@example.com');
  });
});

describe('subscriptions', () => {
  it('puts the billing period on the subscription item in the items shape, and only there', () => {
    const sub = subscription({}, { priceId: 'price_pro', monthlyCredits: 500, periodStart: 1_000, periodEnd: 2_000 });
    const item = sub.items.data[0];

    expect(item).toMatchObject({
      current_period_start: 1_000,
      current_period_end: 2_000,
      subscription: sub.id,
      price: { id: 'price_pro', metadata: { monthly_credits: '500' } },
    });
    expect(sub).not.toHaveProperty('current_period_start');
    expect(sub).not.toHaveProperty('current_period_end');
  });

  it('puts the billing period on the subscription in the legacy shape, and not on items', () => {
    const sub = subscription({ status: 'past_due' }, { shape: 'legacy', periodStart: 1_000, periodEnd: 2_000 });

    expect(sub).toMatchObject({ current_period_start: 1_000, current_period_end: 2_000, status: 'past_due' });
    expect(sub.items.data[0]).not.toHaveProperty('current_period_start');
    expect(sub.items.data[0]).not.toHaveProperty('current_period_end');
  });

  it('is read by the service with the same plan, credits and period in both API shapes', () => {
    const options = { priceId: 'price_team', monthlyCredits: 300, periodStart: 1_700_000_000, periodEnd: 1_702_592_000 };
    const expected = {
      items: [{ price: { id: 'price_team', metadata: { monthly_credits: '300' } }, quantity: 1 }],
      period: { start: 1_700_000_000, end: 1_702_592_000 },
      status: 'active',
    };

    expect(readSubscription(subscription({}, options) as unknown as Record<string, unknown>)).toMatchObject(expected);
    expect(readSubscription(subscription({}, { ...options, shape: 'legacy' }) as unknown as Record<string, unknown>)).toMatchObject(expected);
  });

  it('has ended now, at the customer request, once canceled', () => {
    const before = Math.floor(Date.now() / 1000);
    const ended = subscription({ status: 'canceled' });

    expect(ended.ended_at).toBeGreaterThanOrEqual(before);
    expect(ended.canceled_at).toBe(ended.ended_at);
    expect(ended.cancellation_details?.reason).toBe('cancellation_requested');
    expect(subscription()).toMatchObject({ ended_at: null, canceled_at: null, cancellation_details: { reason: null } });
  });
});

describe('invoices', () => {
  it('name their subscription, item, price and period where API 2025-03-31.basil puts them, and only there', () => {
    const sub = subscription({}, { priceId: 'price_pro', periodStart: 1_000, periodEnd: 2_000 });
    const paid = invoice({}, { subscription: sub });
    const [line] = paid.lines.data;

    expect(paid).toMatchObject({
      customer: sub.customer,
      parent: { type: 'subscription_details', subscription_details: { subscription: sub.id } },
    });
    expect(paid).not.toHaveProperty('subscription');
    expect(line).toMatchObject({
      period: { start: 1_000, end: 2_000 },
      parent: { type: 'subscription_item_details', subscription_item_details: { subscription: sub.id, subscription_item: sub.items.data[0]?.id } },
      pricing: { type: 'price_details', price_details: { price: 'price_pro' } },
      subscription: null,
    });
    expect(line).not.toHaveProperty('price');
  });

  it('name their subscription at the top level, and not in `parent`, in the legacy shape', () => {
    const sub = subscription({}, { shape: 'legacy', priceId: 'price_old', periodStart: 1_000, periodEnd: 2_000 });
    const paid = invoice({}, { shape: 'legacy', subscription: sub });
    const [line] = paid.lines.data;

    expect(paid).toMatchObject({ subscription: sub.id, paid: true });
    expect(paid).not.toHaveProperty('parent');
    expect(line).toMatchObject({ type: 'subscription', subscription: sub.id, price: { id: 'price_old' }, period: { start: 1_000, end: 2_000 } });
    expect(line).not.toHaveProperty('parent');
    expect(line).not.toHaveProperty('pricing');
  });

  it('have amounts, attempts and timestamps that follow their status', () => {
    const sub = subscription({}, { periodStart: 5_000, periodEnd: 6_000 });
    const paid = invoice({}, { subscription: sub });
    const open = invoice({ status: 'open' }, { subscription: sub });
    const draft = invoice({ status: 'draft' }, { subscription: sub });

    expect(paid).toMatchObject({ status: 'paid', billing_reason: 'subscription_create', amount_due: 2000, amount_paid: 2000, amount_remaining: 0, attempted: true });
    expect(paid.status_transitions).toMatchObject({ finalized_at: 5_000, paid_at: 5_000 });
    expect(open).toMatchObject({ amount_paid: 0, amount_remaining: 2000, status_transitions: { paid_at: null } });
    expect(open.next_payment_attempt).toBeGreaterThan(5_000);
    expect(draft).toMatchObject({ number: null, attempted: false, status_transitions: { finalized_at: null }, hosted_invoice_url: null });
  });

  it('bill a renewal for the period just ended, and a sign-up for its first moment', () => {
    const sub = subscription({}, { periodStart: 1_000_000, periodEnd: 3_592_000 });

    expect(invoice({}, { subscription: sub })).toMatchObject({ period_start: 1_000_000, period_end: 1_000_000 });
    expect(invoice({ billing_reason: 'subscription_cycle' }, { subscription: sub })).toMatchObject({ period_start: 1_000_000 - 2_592_000, period_end: 1_000_000 });
  });
});

describe('charges, refunds and disputes', () => {
  it('builds a captured, paid charge with nothing refunded', () => {
    expect(charge()).toMatchObject({
      object: 'charge',
      amount: 1000,
      amount_captured: 1000,
      amount_refunded: 0,
      refunded: false,
      captured: true,
      paid: true,
      payment_intent: expect.stringMatching(/^pi_/),
    });
  });

  it('marks a charge refunded only once all of it is refunded, and lists no refunds (as since API 2022-11-15)', () => {
    expect(charge({ amount: 1000, amount_refunded: 400 }).refunded).toBe(false);
    expect(charge({ amount: 1000, amount_refunded: 1000 }).refunded).toBe(true);
    expect(charge()).not.toHaveProperty('refunds');
  });

  it('gives a failed refund its reason and the balance transaction that returned the money, and only a failed one', () => {
    expect(refund({ status: 'failed' })).toMatchObject({
      status: 'failed',
      failure_reason: 'expired_or_canceled_card',
      failure_balance_transaction: expect.stringMatching(/^txn_/),
    });
    for (const status of ['succeeded', 'pending', 'canceled']) {
      const built = refund({ status });
      expect(built.status).toBe(status);
      expect(built).not.toHaveProperty('failure_reason');
      expect(built).not.toHaveProperty('failure_balance_transaction');
    }
  });

  it('lists the money a dispute moved as its status says: none for an inquiry, the withdrawal, then the reinstatement once won', () => {
    const amounts = (status: Stripe.Dispute.Status) => dispute({ status, amount: 2500 }).balance_transactions.map((txn) => [txn.amount, txn.fee, txn.net]);

    expect(amounts('warning_needs_response')).toEqual([]);
    expect(amounts('needs_response')).toEqual([[-2500, 1500, -4000]]);
    expect(amounts('lost')).toEqual([[-2500, 1500, -4000]]);
    expect(amounts('won')).toEqual([[-2500, 1500, -4000], [2500, 0, 2500]]);
    expect(dispute({ status: 'warning_needs_response' }).is_charge_refundable).toBe(true);
    expect(dispute().is_charge_refundable).toBe(false);
  });
});

describe('events', () => {
  it('wraps an object in an event whose mode follows the object unless given', () => {
    const session = checkoutSession({ livemode: true });
    const event = stripeEvent('checkout.session.completed', session, {
      created: 1_700_000_000,
      previousAttributes: { status: 'open' },
    });

    expect(event).toMatchObject({
      object: 'event',
      type: 'checkout.session.completed',
      api_version: '2025-03-31.basil',
      created: 1_700_000_000,
      livemode: true,
      pending_webhooks: 1,
      request: { id: null, idempotency_key: null },
      data: { object: session, previous_attributes: { status: 'open' } },
    });
    expect(event.id).toMatch(/^evt_/);
    expect(session.id).toMatch(/^cs_live_/);
    expect(stripeEvent('checkout.session.completed', session, { livemode: false }).livemode).toBe(false);
  });

  it('snapshots the object, so changing it later does not change the event', () => {
    const session = checkoutSession();
    const event = stripeEvent('checkout.session.completed', session);
    session.metadata = { changed: 'yes' };
    expect(event.data.object.metadata).toEqual({});
  });
});

describe('the service applies the events built here as their types say', () => {
  const service = useAppOnFreshDatabase();

  const send = async (type: string, object: object) => (await deliver(service.webhookUrl, stripeEvent(type, object))).body;

  it('a purchase and a partial refund of its charge', async () => {
    const session = checkoutSession({ client_reference_id: 'user_builders', metadata: { credits: '500' } });
    const paidCharge = charge({ payment_intent: session.payment_intent as string, amount: 1000, amount_refunded: 500 });

    expect(await send('checkout.session.completed', session)).toEqual({ received: true, status: 'processed' });
    expect(await send('charge.refunded', paidCharge)).toEqual({ received: true, status: 'processed' });
    expect(await balanceOf(service.db, 'user_builders')).toEqual({ purchased: 250, subscription: 0 });
  });

  it('a subscription sign-up and its paid invoice, then the subscription in either API shape', async () => {
    const sub = subscription({}, { monthlyCredits: 300 });
    const signUp = subscriptionCheckoutSession({ client_reference_id: 'user_subscriber', subscription: sub.id, customer: sub.customer as string });

    expect(await send('checkout.session.completed', signUp)).toEqual({ received: true, status: 'processed' });
    expect(await send('customer.subscription.created', sub)).toEqual({ received: true, status: 'processed' });
    expect(await send('invoice.paid', invoice({}, { subscription: sub }))).toEqual({ received: true, status: 'processed' });
    expect(await balanceOf(service.db, 'user_subscriber')).toEqual({ purchased: 0, subscription: 300 });

    const legacy = subscription({ id: sub.id, customer: sub.customer }, { shape: 'legacy', monthlyCredits: 300 });
    expect(await send('customer.subscription.updated', legacy)).toEqual({ received: true, status: 'processed' });
    expect(await checkInvariants(service.db)).toEqual(invariantsHold);
  });

  it.each([
    ['invoice.paid', () => invoice()],
    ['charge.dispute.created', () => dispute()],
    ['refund.created', () => refund()],
    ['refund.failed', () => refund({ status: 'failed' })],
  ])('%s is received (200), whether or not the service acts on it yet', async (type, build) => {
    const response = await deliver(service.webhookUrl, stripeEvent(type, build()));
    expect(response.status).toBe(200);
    expect(response.body.received).toBe(true);
  });
});
