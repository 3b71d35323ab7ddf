import type { Queryable } from '../db';
import { readMetadata, readStripeId, readText, readWholeNumber } from '../stripe/fields';
import { parseCreditsText, type CreditCatalog } from './catalog';
import { fromSqlOutcome, readUserId, unmatched, type HandlerOutcome, type SqlOutcome } from './outcome';
import { paymentLockKey } from './purchaseTakeBack';
import type { ObjectSource } from './source';
import { linkSubscriptionToUser, subscriptionLockKey } from './subscriptions';

export type CreditsResolution = { credits: number } | { problem: string };

export interface LineItem {
  priceId: string;
  quantity: number;
}

/** Fetches a Checkout session's line items from Stripe (only needed when credits come from the catalog). */
export type LineItemsFetcher = (sessionId: string) => Promise<LineItem[]>;

type PurchaseStatus = 'pending' | 'paid' | 'failed';

/** The Stripe object whose transactions are serialised with this session's: its payment, or its subscription. */
export function checkoutLockKey(session: Record<string, unknown>): string | undefined {
  if (session.mode === 'subscription') {
    const subscriptionId = readStripeId(session.subscription);
    return subscriptionId ? subscriptionLockKey(subscriptionId) : undefined;
  }
  const paymentIntent = readStripeId(session.payment_intent);
  return paymentIntent ? paymentLockKey(paymentIntent) : undefined;
}

/** True when the session's credits can only be known by asking Stripe for its line items. */
export function needsLineItems(session: Record<string, unknown>): boolean {
  return session.mode === 'payment' && readMetadata(session).credits === undefined;
}

/**
 * How many credits a one-off Checkout session sells: `metadata.credits` when set, else the catalog entry of
 * each line item's price times its quantity. Runs before the transaction, since it may call Stripe.
 */
export async function resolveCheckoutCredits(
  session: Record<string, unknown>,
  catalog: CreditCatalog,
  fetchLineItems: LineItemsFetcher | undefined,
): Promise<CreditsResolution | undefined> {
  if (session.mode !== 'payment') return undefined;
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
  return credits > 0 ? { credits } : { problem: "none of the session's prices is in the credit catalog" };
}

export interface CheckoutFulfilment {
  /** What the session sells, resolved beforehand (resolveCheckoutCredits); only for mode `payment`. */
  credits: CreditsResolution | undefined;
  /** checkout.session.async_payment_failed: the delayed payment failed (the session still says `unpaid`). */
  paymentFailed?: boolean;
  catalog: CreditCatalog;
}

/**
 * The purchase a one-off session records (credit_record_purchase's arguments before the event id: user,
 * session, payment intent, credits, amount, currency, livemode, status), or the outcome when it records none.
 */
export function purchaseArguments(session: Record<string, unknown>, fulfilment: CheckoutFulfilment): unknown[] | HandlerOutcome {
  if (session.mode !== 'payment') return { status: 'ignored', reason: `checkout mode "${String(session.mode)}" sells no credits` };
  const userId = readUserId(session.client_reference_id, readMetadata(session).user_id);
  if (!userId) return unmatched('session has no client_reference_id or metadata.user_id');
  const { credits } = fulfilment;
  if (!credits || 'problem' in credits) return unmatched(credits?.problem ?? 'session sells no credits', userId);
  const sessionId = readStripeId(session.id);
  if (!sessionId) return unmatched('session has no id', userId);
  const status: PurchaseStatus = fulfilment.paymentFailed ? 'failed' : session.payment_status === 'unpaid' ? 'pending' : 'paid';
  return [
    userId,
    sessionId,
    readStripeId(session.payment_intent) ?? null,
    credits.credits,
    readWholeNumber(session.amount_total) ?? null,
    readText(session.currency) ?? null,
    session.livemode === true,
    status,
  ];
}

/**
 * A completed Checkout session (from checkout.session.* events, or read from the Stripe API). Mode `payment`:
 * `paid` (or `no_payment_required`) grants the session's credits to its user once, `unpaid` (delayed payment
 * methods) records a pending purchase that a later paid state grants or a failure closes (the rule is
 * credit_record_purchase, migration 004). Mode `subscription`: links the subscription and customer to the user.
 * Either way, the session opened through the billing API no longer awaits payment.
 */
export async function fulfilCheckoutSession(
  tx: Queryable,
  session: Record<string, unknown>,
  source: ObjectSource,
  fulfilment: CheckoutFulfilment,
): Promise<HandlerOutcome> {
  const sessionId = readStripeId(session.id);
  if (sessionId) await closeCheckoutSession(tx, { id: sessionId, status: readText(session.status) ?? null });
  if (session.mode === 'subscription') {
    const userId = readUserId(session.client_reference_id, readMetadata(session).user_id);
    const subscriptionId = readStripeId(session.subscription);
    if (!userId) return unmatched('subscription session has no client_reference_id or metadata.user_id');
    if (!subscriptionId) return unmatched('subscription session has no subscription id');
    return linkSubscriptionToUser(tx, { userId, subscriptionId, customerId: readStripeId(session.customer) }, source, fulfilment.catalog);
  }
  const args = purchaseArguments(session, fulfilment);
  if (!Array.isArray(args)) return args;
  const { rows } = await tx.query<SqlOutcome>('SELECT * FROM credit_record_purchase($1, $2, $3, $4, $5, $6, $7, $8, $9)', [...args, source.eventId ?? null]);
  return fromSqlOutcome(rows[0]!);
}

/**
 * Once Stripe says a session is complete or expired, the one opened through the billing API no longer awaits
 * payment (credit_close_checkout_session, migration 006; a new paid session's event function calls it itself).
 */
export async function closeCheckoutSession(db: Queryable, session: { id: string; status: string | null }): Promise<void> {
  await db.query('SELECT credit_close_checkout_session($1, $2)', [session.id, session.status]);
}
