import type { Queryable } from '../db';

/** What GET /api/v1/billing/credits answers and each `balance` event of the stream carries (snake_case, as Stripe). */
export interface CreditsView {
  user_id: string;
  /** Subscription bucket: this billing period's allowance left. */
  credits_remaining: number;
  /** Purchased bucket: never expires; below zero after a refund of credits already spent. */
  purchased_credits_balance: number;
  total_credits: number;
  plan: string | null;
  subscription_status: string | null;
  current_period_end: string | null;
  pending_purchases: PendingPurchase[];
}

export interface PendingPurchase {
  session_id: string;
  package_id: string | null;
  plan_id: string | null;
  credits: number;
  /** `awaiting_payment`: Checkout is open; `processing`: paid with a delayed method, not settled yet. */
  status: 'awaiting_payment' | 'processing';
  created_at: string;
}

/** How many pending purchases a view lists (newest first): a user opening Checkout again and again needs no more. */
export const maxListedPendingPurchases = 20;

const balanceSql = `
  SELECT credits_remaining AS subscription, purchased_credits_balance AS purchased, plan, status, current_period_end AS "periodEnd"
  FROM service_subscriptions WHERE user_id = $1`;

// A Checkout session stops awaiting payment once Stripe's events recorded its purchase (or sync marked it);
// a purchase paid with a delayed method stays pending until the payment succeeds or fails.
const pendingSql = `
  SELECT c.session_id AS "sessionId", c.mode, c.price_id AS "priceId", c.credits, 'awaiting_payment' AS status, c.created_at AS "createdAt"
  FROM checkout_sessions c
  WHERE c.user_id = $1 AND c.status = 'open' AND c.expires_at > now()
    AND NOT EXISTS (SELECT 1 FROM credit_purchases p WHERE p.stripe_checkout_session_id = c.session_id)
  UNION ALL
  SELECT p.stripe_checkout_session_id, 'payment', c.price_id, p.credits, 'processing', p.created_at
  FROM credit_purchases p LEFT JOIN checkout_sessions c ON c.session_id = p.stripe_checkout_session_id
  WHERE p.user_id = $1 AND p.status = 'pending'
  ORDER BY "createdAt" DESC LIMIT $2`;

interface PendingRow {
  sessionId: string;
  mode: 'payment' | 'subscription';
  priceId: string | null;
  credits: number;
  status: PendingPurchase['status'];
  createdAt: Date;
}

export async function readCreditsView(db: Queryable, userId: string): Promise<CreditsView> {
  const [balance, pending] = await Promise.all([
    db.query<{ subscription: number; purchased: number; plan: string | null; status: string | null; periodEnd: Date | null }>(balanceSql, [userId]),
    db.query<PendingRow>(pendingSql, [userId, maxListedPendingPurchases]),
  ]);
  const row = balance.rows[0];
  const subscription = row?.subscription ?? 0;
  const purchased = row?.purchased ?? 0;
  return {
    user_id: userId,
    credits_remaining: subscription,
    purchased_credits_balance: purchased,
    total_credits: subscription + purchased,
    plan: row?.plan ?? null,
    subscription_status: row?.status ?? null,
    current_period_end: row?.periodEnd?.toISOString() ?? null,
    pending_purchases: pending.rows.map((item) => ({
      session_id: item.sessionId,
      package_id: item.mode === 'payment' ? item.priceId : null,
      plan_id: item.mode === 'subscription' ? item.priceId : null,
      credits: item.credits,
      status: item.status,
      created_at: item.createdAt.toISOString(),
    })),
  };
}
