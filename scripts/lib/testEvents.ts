/**
 * The events `npm run send-test-event` can send, one per kind, built with the local Stripe's objects the
 * way Stripe would send them for one user. A user's subscription events all name the same subscription
 * (its id derives from the user id), so created → updated → deleted is one subscription's life.
 */
import { createHash } from 'node:crypto';
import { charge, checkoutSession, DEFAULT_AMOUNT_CENTS, dispute, invoice, SECONDS_PER_DAY, stripeEvent, stripeId, subscription } from '../../localStripe/objects';

export interface TestEventInput {
  userId: string;
  /** Credits a purchase sells, or a plan grants per month. */
  credits: number;
  livemode: boolean;
  /** The Checkout session an async payment settles (`cs_…` printed by `--type unpaid`); default a new one. */
  sessionId?: string;
  /** The payment a refund or dispute is about (`pi_…` printed by a paid purchase); default a new one. */
  paymentIntent?: string;
}

export interface TestEvent {
  event: { id: string; type: string; livemode: boolean };
  /** What to do next with what this event created, if anything. */
  followUp?: string;
}

type Build = (input: TestEventInput) => TestEvent;

/** Stable per user, shaped like Stripe's ids: the user's one test subscription and customer. */
function userScopedId(prefix: string, input: TestEventInput): string {
  const digest = createHash('sha256').update(input.userId).digest('hex').slice(0, 24);
  return `${prefix}_${input.livemode ? 'live' : 'test'}_${digest}`;
}

function purchase(type: string, input: TestEventInput, overrides: Parameters<typeof checkoutSession>[0]): TestEvent {
  const sessionId = input.sessionId ?? stripeId(input.livemode ? 'cs_live' : 'cs_test');
  const session = checkoutSession({
    id: sessionId,
    // A session this script made pays with the payment of the same suffix, so later events about it agree.
    payment_intent: input.paymentIntent ?? `pi_${sessionId.slice(sessionId.lastIndexOf('_') + 1)}`,
    livemode: input.livemode,
    client_reference_id: input.userId,
    metadata: { credits: String(input.credits) },
    ...overrides,
  });
  const event = stripeEvent(type, session);
  if (session.payment_status === 'unpaid') {
    return { event, followUp: `settle it later with --type async-succeeded (or async-failed) --session ${session.id}` };
  }
  return { event, followUp: type === 'checkout.session.async_payment_failed' ? undefined : `refund it with --type refund --payment-intent ${String(session.payment_intent)}` };
}

/** Today's billing period: every event of the user's subscription sent today is about the same period and price. */
function userSubscription(input: TestEventInput, status: 'active' | 'canceled') {
  const periodStart = Math.floor(Date.now() / 1000 / SECONDS_PER_DAY) * SECONDS_PER_DAY;
  return subscription(
    { id: userScopedId('sub', input), customer: userScopedId('cus', input), livemode: input.livemode, status, metadata: { user_id: input.userId } },
    { monthlyCredits: input.credits, priceId: userScopedId('price', input), periodStart },
  );
}

function aboutPayment(input: TestEventInput): { paymentIntent: string; chargeId: string } {
  const paymentIntent = input.paymentIntent ?? stripeId('pi');
  return { paymentIntent, chargeId: `ch_${paymentIntent.slice('pi_'.length)}` };
}

export const testEventKinds = {
  /** A one-off purchase paid at once (card). */
  paid: (input) => purchase('checkout.session.completed', input, {}),
  /** A one-off purchase with a delayed payment method (bank debit): pending until settled. */
  unpaid: (input) => purchase('checkout.session.completed', input, { payment_status: 'unpaid', payment_method_types: ['us_bank_account'] }),
  'async-succeeded': (input) =>
    purchase('checkout.session.async_payment_succeeded', input, { payment_status: 'paid', payment_method_types: ['us_bank_account'] }),
  'async-failed': (input) =>
    purchase('checkout.session.async_payment_failed', input, { payment_status: 'unpaid', payment_method_types: ['us_bank_account'] }),
  'subscription-created': (input) => ({ event: stripeEvent('customer.subscription.created', userSubscription(input, 'active')) }),
  /** The plan now grants `credits` a month. */
  'subscription-updated': (input) => ({ event: stripeEvent('customer.subscription.updated', userSubscription(input, 'active')) }),
  'subscription-deleted': (input) => ({ event: stripeEvent('customer.subscription.deleted', userSubscription(input, 'canceled')) }),
  'invoice-paid': (input) => ({ event: stripeEvent('invoice.paid', invoice({}, { subscription: userSubscription(input, 'active') })) }),
  /** A full refund of the payment. */
  refund: (input) => {
    const { paymentIntent, chargeId } = aboutPayment(input);
    const refunded = charge({ id: chargeId, livemode: input.livemode, payment_intent: paymentIntent, amount: DEFAULT_AMOUNT_CENTS, amount_refunded: DEFAULT_AMOUNT_CENTS });
    return { event: stripeEvent('charge.refunded', refunded) };
  },
  dispute: (input) => {
    const { paymentIntent, chargeId } = aboutPayment(input);
    return { event: stripeEvent('charge.dispute.created', dispute({ charge: chargeId, payment_intent: paymentIntent, livemode: input.livemode })) };
  },
} satisfies Record<string, Build>;

export type TestEventKind = keyof typeof testEventKinds;

export function isTestEventKind(kind: string): kind is TestEventKind {
  return Object.hasOwn(testEventKinds, kind);
}

export function buildTestEvent(kind: TestEventKind, input: TestEventInput): TestEvent {
  return testEventKinds[kind](input);
}
