import { createHash, randomUUID } from 'node:crypto';
import type Stripe from 'stripe';
import type { CreditCatalog } from '../credits/catalog';
import type { Queryable } from '../db';

/** What a user asked to buy: a credit package (one-off payment) or a plan (subscription), by its price id. */
export type Purchase = { kind: 'package'; priceId: string; credits: number } | { kind: 'plan'; priceId: string; monthlyCredits: number };

export interface CheckoutUrls {
  /** Stripe replaces {CHECKOUT_SESSION_ID} in it with the session's id. */
  successUrl: string;
  cancelUrl: string;
}

/** The catalog entry behind `package_id` or `plan_id`, or undefined when the catalog has no such entry. */
export function findPurchase(catalog: CreditCatalog, choice: { packageId?: string; planId?: string }): Purchase | undefined {
  if (choice.packageId !== undefined) {
    const credits = catalog.packageCredits(choice.packageId);
    return credits === undefined ? undefined : { kind: 'package', priceId: choice.packageId, credits };
  }
  const plan = choice.planId === undefined ? undefined : catalog.plan(choice.planId);
  return plan === undefined ? undefined : { kind: 'plan', priceId: choice.planId!, monthlyCredits: plan.monthlyCredits };
}

/**
 * The key Stripe de-duplicates the session creation with: the page's own Idempotency-Key (one per click, so
 * a retried request opens the same session), scoped to the user so that nobody can replay another user's;
 * without one, a fresh key per request (stripe-node still reuses it for its own network retries).
 */
export function checkoutIdempotencyKey(userId: string, clientKey: string | undefined): string {
  if (clientKey === undefined) return `checkout-${randomUUID()}`;
  return `checkout-${createHash('sha256').update(`${userId}\0${clientKey}`).digest('hex')}`;
}

/**
 * Opens a Stripe Checkout Session for the user and records it as a pending purchase. The user is named in
 * `client_reference_id` and `metadata.user_id` (and, for a plan, in the subscription's metadata), and a
 * package's credits in `metadata.credits`: what the webhook reads to grant them, whatever the catalog says by then.
 */
export async function openCheckoutSession(
  db: Queryable,
  stripe: Stripe,
  input: { userId: string; purchase: Purchase; urls: CheckoutUrls; idempotencyKey: string },
): Promise<{ url: string; sessionId: string }> {
  const { userId, purchase } = input;
  const metadata: Record<string, string> =
    purchase.kind === 'package'
      ? { user_id: userId, package_id: purchase.priceId, credits: String(purchase.credits) }
      : { user_id: userId, plan_id: purchase.priceId };
  const session = await stripe.checkout.sessions.create(
    {
      mode: purchase.kind === 'package' ? 'payment' : 'subscription',
      line_items: [{ price: purchase.priceId, quantity: 1 }],
      client_reference_id: userId,
      metadata,
      ...(purchase.kind === 'plan' ? { subscription_data: { metadata: { user_id: userId } } } : {}),
      success_url: input.urls.successUrl,
      cancel_url: input.urls.cancelUrl,
    },
    { idempotencyKey: input.idempotencyKey },
  );
  if (!session.url) throw new Error(`Stripe opened Checkout Session ${session.id} without a URL`);
  await db.query(
    `INSERT INTO checkout_sessions (session_id, user_id, mode, price_id, credits, livemode, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7))
     ON CONFLICT (session_id) DO NOTHING`,
    [session.id, userId, session.mode, purchase.priceId, purchase.kind === 'package' ? purchase.credits : purchase.monthlyCredits, session.livemode, session.expires_at],
  );
  return { url: session.url, sessionId: session.id };
}

/** The user's subscription while it gives credits: a second one would be a second bill. */
export async function activeSubscription(db: Queryable, userId: string): Promise<{ plan: string | null } | undefined> {
  const { rows } = await db.query<{ plan: string | null }>(
    `SELECT plan FROM service_subscriptions
     WHERE user_id = $1 AND stripe_subscription_id IS NOT NULL AND status IN ('active', 'trialing', 'past_due')`,
    [userId],
  );
  return rows[0];
}

