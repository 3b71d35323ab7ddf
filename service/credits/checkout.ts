import type { Queryable } from '../db';
import type { StripeEvent } from '../webhook/stripeEvent';
import { parseCreditsText, type CreditCatalog } from './catalog';
import { adjustCredits } from './ledger';
import { readMetadata, readStripeId, readUserId, unmatched, type HandlerOutcome } from './outcome';
import { paymentLockKey, settleRefund, type RefundState } from './refunds';
import { linkSubscriptionToUser, subscriptionLockKey } from './subscriptions';

export type CreditsResolution = { credits: number } | { problem: string };

export interface LineItem {
  priceId: string;
  quantity: number;
}

/** Fetches a Checkout session's line items from Stripe (only needed when credits come from the catalog). */
export type LineItemsFetcher = (sessionId: string) => Promise<LineItem[]>;

type PurchaseStatus = 'pending' | 'paid' | 'failed';

const targetStatusByEvent: Record<string, (session: Record<string, unknown>) => PurchaseStatus> = {
  // 'no_payment_required' is a session fully paid by a 100% discount the merchant chose to give.
  'checkout.session.completed': (session) => (session.payment_status === 'unpaid' ? 'pending' : 'paid'),
  'checkout.session.async_payment_succeeded': () => 'paid',
  'checkout.session.async_payment_failed': () => 'failed',
};

export function isCheckoutEvent(type: string): boolean {
  return Object.hasOwn(targetStatusByEvent, type);
}

export function checkoutLockKey(event: StripeEvent): string | undefined {
  const session = event.data.object;
  if (session.mode === 'subscription') {
    const subscriptionId = readStripeId(session.subscription);
    return subscriptionId ? subscriptionLockKey(subscriptionId) : undefined;
  }
  const paymentIntent = readStripeId(session.payment_intent);
  return paymentIntent ? paymentLockKey(paymentIntent) : undefined;
}

/** True when the session's credits can only be known by asking Stripe for its line items. */
export function needsLineItems(event: StripeEvent): boolean {
  const session = event.data.object;
  return isCheckoutEvent(event.type) && session.mode === 'payment' && readMetadata(session).credits === undefined;
}

/**
 * How many credits a one-off Checkout session sells: `metadata.credits` when set, else the catalog entry of
 * each line item's price times its quantity. Runs before the transaction, since it may call Stripe.
 */
export async function resolveCheckoutCredits(
  event: StripeEvent,
  catalog: CreditCatalog,
  fetchLineItems: LineItemsFetcher | undefined,
): Promise<CreditsResolution | undefined> {
  const session = event.data.object;
  if (!isCheckoutEvent(event.type) || session.mode !== 'payment') return undefined;
  const metadataCredits = readMetadata(session).credits;
  if (metadataCredits !== undefined) {
    const credits = parseCreditsText(metadataCredits);
    return credits ? { credits } : { problem: 'metadata.credits is not a positive whole number' };
  }
  if (!catalog.hasPackages) return { problem: 'session has no metadata.credits and no credit catalog is configured (CREDIT_CATALOG_FILE)' };
  if (!fetchLineItems) return { problem: 'session has no metadata.credits and no Stripe API key is configured to read its line items' };
  const sessionId = readStripeId(session.id);
  if (!sessionId) return { problem: 'session has no id' };
  let credits = 0;
  for (const item of await fetchLineItems(sessionId)) {
    const perUnit = catalog.packageCredits(item.priceId);
    if (perUnit !== undefined) credits += perUnit * item.quantity;
  }
  return credits > 0 ? { credits } : { problem: 'none of the session\'s prices is in the credit catalog' };
}

export async function applyCheckoutSession(tx: Queryable, event: StripeEvent, credits: CreditsResolution | undefined): Promise<HandlerOutcome> {
  const session = event.data.object;
  const userId = readUserId(session.client_reference_id, readMetadata(session).user_id);
  if (session.mode === 'subscription') {
    if (event.type !== 'checkout.session.completed') return { status: 'ignored', reason: 'subscription sessions are settled by subscription events' };
    const subscriptionId = readStripeId(session.subscription);
    if (!userId) return unmatched('subscription session has no client_reference_id or metadata.user_id');
    if (!subscriptionId) return unmatched('subscription session has no subscription id');
    return linkSubscriptionToUser(tx, { userId, subscriptionId, customerId: readStripeId(session.customer), stripeEventId: event.id });
  }
  if (session.mode !== 'payment') return { status: 'ignored', reason: `checkout mode "${String(session.mode)}" sells no credits` };
  if (!userId) return unmatched('session has no client_reference_id or metadata.user_id');
  if (!credits || 'problem' in credits) return unmatched(credits?.problem ?? 'session sells no credits', userId);
  return recordPurchase(tx, event, userId, credits.credits, targetStatusByEvent[event.type]!(session));
}

interface PurchaseTransition {
  id: number;
  userId: string;
  status: PurchaseStatus;
  credits: number;
  creditsRefunded: number;
  refund: RefundState | null;
}

// Inserts the purchase, or moves a pending one on; returns a row only when this call made the change, so
// credits are granted exactly once per session whichever of its events arrives first or twice. The refund
// subquery sees refunds committed before this transaction took the payment's lock.
const recordPurchaseSql = `
  INSERT INTO credit_purchases (user_id, stripe_checkout_session_id, payment_intent, credits, amount_total, currency, livemode, status, paid_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $8 = 'paid' THEN now() END)
  ON CONFLICT (stripe_checkout_session_id) DO UPDATE
    SET status = EXCLUDED.status, paid_at = EXCLUDED.paid_at,
        payment_intent = COALESCE(credit_purchases.payment_intent, EXCLUDED.payment_intent)
    WHERE credit_purchases.status = 'pending' AND EXCLUDED.status <> 'pending'
  RETURNING id, user_id AS "userId", status, credits, credits_refunded AS "creditsRefunded",
    (SELECT json_build_object('amount', r.amount, 'amountRefunded', r.amount_refunded)
       FROM charge_refunds r WHERE r.payment_intent = credit_purchases.payment_intent) AS refund`;

async function recordPurchase(tx: Queryable, event: StripeEvent, userId: string, credits: number, status: PurchaseStatus): Promise<HandlerOutcome> {
  const session = event.data.object;
  const sessionId = readStripeId(session.id)!;
  const { rows } = await tx.query<PurchaseTransition>(recordPurchaseSql, [
    userId,
    sessionId,
    readStripeId(session.payment_intent) ?? null,
    credits,
    typeof session.amount_total === 'number' ? session.amount_total : null,
    typeof session.currency === 'string' ? session.currency : null,
    event.livemode,
    status,
  ]);
  const purchase = rows[0];
  if (!purchase) return { status: 'processed', userId, note: 'purchase already settled by an earlier event' };
  if (purchase.status !== 'paid') return { status: 'processed', userId: purchase.userId, note: `purchase ${purchase.status}` };

  await adjustCredits(tx, {
    userId: purchase.userId,
    bucket: 'purchased',
    delta: purchase.credits,
    reason: 'credit_purchase',
    stripeEventId: event.id,
    sourceId: sessionId,
  });
  if (purchase.refund) {
    await settleRefund(tx, { id: purchase.id, userId: purchase.userId, sessionId, credits: purchase.credits, creditsRefunded: purchase.creditsRefunded }, purchase.refund, event.id);
  }
  return { status: 'processed', userId: purchase.userId };
}
