import type { Queryable } from '../db';
import type { StripeEvent } from '../webhook/stripeEvent';
import { parseCreditsText, type CreditCatalog } from './catalog';
import { adjustCredits } from './ledger';
import { readMetadata, readStripeId, readUserId, unmatched, type HandlerOutcome } from './outcome';

/** Subscription events and the Checkout session that links a subscription to its user are serialised per subscription. */
export const subscriptionLockKey = (subscriptionId: string) => `subscription:${subscriptionId}`;

export function subscriptionEventLockKey(event: StripeEvent): string | undefined {
  const id = readStripeId(event.data.object.id);
  return id ? subscriptionLockKey(id) : undefined;
}

const entitledStatuses = new Set(['active', 'trialing']);
const endedStatuses = new Set(['canceled', 'incomplete_expired']);

interface SubscriptionState {
  id: string;
  customerId: string | null;
  userId: string | null;
  status: string;
  priceId: string | null;
  plan: string | null;
  monthlyCredits: number | null;
  periodStart: number | null;
  periodEnd: number | null;
}

/**
 * Reads the subscription as Stripe sent it. The billing period is on the subscription in API versions
 * before 2025-03-31 and on its items from then on; both are accepted.
 */
export function readSubscription(subscription: Record<string, unknown>, catalog: CreditCatalog): SubscriptionState {
  const items = ((subscription.items as { data?: unknown } | undefined)?.data ?? []) as Array<Record<string, unknown>>;
  let monthlyCredits: number | null = null;
  let priceId: string | null = null;
  let plan: string | null = null;
  for (const item of items) {
    const price = (item.price ?? item.plan ?? {}) as Record<string, unknown>;
    const id = readStripeId(price.id);
    const perUnit = (id ? catalog.plan(id)?.monthlyCredits : undefined) ?? parseCreditsText(readMetadata(price).monthly_credits);
    const quantity = typeof item.quantity === 'number' && item.quantity > 0 ? item.quantity : 1;
    if (perUnit !== undefined) monthlyCredits = (monthlyCredits ?? 0) + perUnit * quantity;
    if (id && (priceId === null || perUnit !== undefined)) {
      priceId = id;
      plan = (catalog.plan(id)?.name ?? (typeof price.nickname === 'string' ? price.nickname : null)) || id;
    }
  }
  const periodHolder = items.find((item) => typeof item.current_period_start === 'number') ?? subscription;
  return {
    id: readStripeId(subscription.id)!,
    customerId: readStripeId(subscription.customer) ?? null,
    userId: readUserId(readMetadata(subscription).user_id) ?? null,
    status: typeof subscription.status === 'string' ? subscription.status : 'unknown',
    priceId,
    plan,
    monthlyCredits,
    periodStart: unixSeconds(periodHolder.current_period_start),
    periodEnd: unixSeconds(periodHolder.current_period_end),
  };
}

// The newest state wins. Stripe's `created` has one-second resolution, so ties are broken by a rule that
// does not depend on arrival order: an ended subscription stays ended, then the later billing period wins,
// then the greater event id (an arbitrary but deterministic choice).
const storeStateSql = `
  INSERT INTO stripe_subscriptions
    (id, customer_id, user_id, status, price_id, plan, monthly_credits, current_period_start, current_period_end, event_created, ended, event_id)
  VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8), to_timestamp($9), to_timestamp($10), $11, $12)
  ON CONFLICT (id) DO UPDATE SET
    customer_id = COALESCE(EXCLUDED.customer_id, stripe_subscriptions.customer_id),
    user_id = COALESCE(EXCLUDED.user_id, stripe_subscriptions.user_id),
    status = EXCLUDED.status, price_id = EXCLUDED.price_id, plan = EXCLUDED.plan, monthly_credits = EXCLUDED.monthly_credits,
    current_period_start = EXCLUDED.current_period_start, current_period_end = EXCLUDED.current_period_end,
    event_created = EXCLUDED.event_created, ended = EXCLUDED.ended, event_id = EXCLUDED.event_id, updated_at = now()
  WHERE (stripe_subscriptions.event_created, stripe_subscriptions.ended,
         COALESCE(stripe_subscriptions.current_period_end, '-infinity'), stripe_subscriptions.event_id)
      < (EXCLUDED.event_created, EXCLUDED.ended, COALESCE(EXCLUDED.current_period_end, '-infinity'), EXCLUDED.event_id)
  RETURNING user_id AS "userId", customer_id AS "customerId"`;

/** customer.subscription.created / updated / deleted */
export async function applySubscriptionEvent(tx: Queryable, event: StripeEvent, catalog: CreditCatalog): Promise<HandlerOutcome> {
  if (!readStripeId(event.data.object.id)) return unmatched('subscription has no id');
  const state = readSubscription(event.data.object, catalog);
  const ended = endedStatuses.has(state.status) || event.type === 'customer.subscription.deleted';
  const { rows } = await tx.query<{ userId: string | null; customerId: string | null }>(storeStateSql, [
    state.id,
    state.customerId,
    state.userId,
    ended && !endedStatuses.has(state.status) ? 'canceled' : state.status,
    state.priceId,
    state.plan,
    state.monthlyCredits,
    state.periodStart,
    state.periodEnd,
    event.created,
    ended,
    event.id,
  ]);
  const stored = rows[0];
  if (!stored) return { status: 'processed', note: 'older than the stored subscription state' };

  const linked = await tx.query<{ userId: string }>('SELECT user_id AS "userId" FROM service_subscriptions WHERE stripe_subscription_id = $1', [state.id]);
  const linkedUserId = linked.rows[0]?.userId;
  if (linkedUserId) {
    const outcome = await settleSubscriptionCredits(tx, linkedUserId, event.id);
    // The user may have signed up again before this one ended: that subscription can be linked now.
    if (ended) await linkWaitingSubscription(tx, linkedUserId, stored.customerId, event.id);
    return outcome;
  }

  let userId = stored.userId;
  if (!userId && stored.customerId) {
    const byCustomer = await tx.query<{ userId: string }>(
      'SELECT user_id AS "userId" FROM service_subscriptions WHERE stripe_customer_id = $1 ORDER BY updated_at DESC LIMIT 1',
      [stored.customerId],
    );
    userId = byCustomer.rows[0]?.userId ?? null;
  }
  if (!userId) return unmatched('subscription has no known user yet; its state is kept and applied when its Checkout session arrives');
  return linkSubscriptionToUser(tx, { userId, subscriptionId: state.id, customerId: stored.customerId ?? undefined, stripeEventId: event.id });
}

export interface SubscriptionLink {
  userId: string;
  subscriptionId: string;
  customerId: string | undefined;
  stripeEventId: string;
}

/**
 * Serialises everything that links or settles one user's subscription, so two subscriptions of the same user
 * (a replacement signed up before the old one ended) never miss each other. Always taken before the user's
 * row lock, so it cannot deadlock with it.
 */
async function lockUser(tx: Queryable, userId: string): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`user:${userId}`]);
}

// A user holds one subscription at a time: a new one replaces the linked one only once that has ended.
const linkSql = `
  INSERT INTO service_subscriptions (user_id, stripe_customer_id, stripe_subscription_id) VALUES ($1, $2, $3)
  ON CONFLICT (user_id) DO UPDATE SET
    stripe_customer_id = COALESCE(EXCLUDED.stripe_customer_id, service_subscriptions.stripe_customer_id),
    stripe_subscription_id = EXCLUDED.stripe_subscription_id,
    credited_period_start = CASE WHEN service_subscriptions.stripe_subscription_id = EXCLUDED.stripe_subscription_id
                                 THEN service_subscriptions.credited_period_start END,
    credited_allowance = CASE WHEN service_subscriptions.stripe_subscription_id = EXCLUDED.stripe_subscription_id
                              THEN service_subscriptions.credited_allowance ELSE 0 END,
    updated_at = now()
  WHERE service_subscriptions.stripe_subscription_id IS NULL
     OR service_subscriptions.stripe_subscription_id = EXCLUDED.stripe_subscription_id
     OR NOT EXISTS (SELECT 1 FROM stripe_subscriptions s WHERE s.id = service_subscriptions.stripe_subscription_id AND NOT s.ended)
  RETURNING user_id`;

// Remembers which user a subscription belongs to while it cannot be linked yet. A placeholder state (older
// than any real event) is created when Stripe has not told us about the subscription yet.
const rememberOwnerSql = `
  INSERT INTO stripe_subscriptions (id, customer_id, user_id, status, event_created, ended, event_id)
  VALUES ($1, $2, $3, 'incomplete', '-infinity', false, '')
  ON CONFLICT (id) DO UPDATE SET
    user_id = COALESCE(stripe_subscriptions.user_id, EXCLUDED.user_id),
    customer_id = COALESCE(stripe_subscriptions.customer_id, EXCLUDED.customer_id)`;

/** Links a Stripe subscription (and customer) to our user, then grants what its stored state entitles to. */
export async function linkSubscriptionToUser(tx: Queryable, link: SubscriptionLink): Promise<HandlerOutcome> {
  await lockUser(tx, link.userId);
  const owner = await tx.query<{ userId: string }>('SELECT user_id AS "userId" FROM service_subscriptions WHERE stripe_subscription_id = $1', [
    link.subscriptionId,
  ]);
  if (owner.rows[0] && owner.rows[0].userId !== link.userId) return unmatched('subscription is already linked to another user', link.userId);
  const { rowCount } = await tx.query(linkSql, [link.userId, link.customerId ?? null, link.subscriptionId]);
  if (rowCount === 0) {
    await tx.query(rememberOwnerSql, [link.subscriptionId, link.customerId ?? null, link.userId]);
    return unmatched('user already has another active subscription; this one is linked when that one ends', link.userId);
  }
  return settleSubscriptionCredits(tx, link.userId, link.stripeEventId);
}

/** After a user's subscription ended: links the newest live subscription that was waiting for that user. */
async function linkWaitingSubscription(tx: Queryable, userId: string, customerId: string | null, stripeEventId: string): Promise<void> {
  const { rows } = await tx.query<{ id: string; customerId: string | null }>(
    `SELECT s.id, s.customer_id AS "customerId" FROM stripe_subscriptions s
     WHERE NOT s.ended AND (s.user_id = $1 OR ($2::text IS NOT NULL AND s.customer_id = $2))
       AND NOT EXISTS (SELECT 1 FROM service_subscriptions u WHERE u.stripe_subscription_id = s.id)
     ORDER BY s.event_created DESC, s.id DESC LIMIT 1`,
    [userId, customerId],
  );
  const waiting = rows[0];
  if (waiting) await linkSubscriptionToUser(tx, { userId, subscriptionId: waiting.id, customerId: waiting.customerId ?? undefined, stripeEventId });
}

interface SettlementRow {
  subscriptionId: string;
  creditsRemaining: number;
  creditedPeriodStart: Date | null;
  creditedAllowance: number;
  status: string;
  plan: string | null;
  monthlyCredits: number | null;
  periodStart: Date | null;
  periodEnd: Date | null;
  ended: boolean;
}

/**
 * Brings the user's subscription credits in line with the newest stored state of their subscription, so the
 * result never depends on the order events arrived in:
 * - a new billing period resets the bucket to the period's allowance (unused credits expire; the ledger
 *   records the difference); a period that is not paid for (past_due, unpaid, paused, incomplete) has an
 *   allowance of 0 until it is;
 * - within a period, a change of allowance (plan change, payment recovered, paused) adds or removes the
 *   difference, never taking back more than is left;
 * - an ended subscription's credits expire.
 * Purchased credits are never touched.
 */
export async function settleSubscriptionCredits(tx: Queryable, userId: string, stripeEventId: string): Promise<HandlerOutcome> {
  await lockUser(tx, userId);
  const { rows } = await tx.query<SettlementRow>(
    `SELECT s.id AS "subscriptionId", u.credits_remaining AS "creditsRemaining", u.credited_period_start AS "creditedPeriodStart",
            u.credited_allowance AS "creditedAllowance", s.status, s.plan, s.monthly_credits AS "monthlyCredits",
            s.current_period_start AS "periodStart", s.current_period_end AS "periodEnd", s.ended
     FROM service_subscriptions u JOIN stripe_subscriptions s ON s.id = u.stripe_subscription_id
     WHERE u.user_id = $1 FOR UPDATE OF u`,
    [userId],
  );
  const row = rows[0];
  if (!row) return { status: 'processed', userId, note: 'linked; waiting for the subscription state' };

  const allowance = entitledStatuses.has(row.status) && !row.ended ? (row.monthlyCredits ?? 0) : 0;
  const isNewPeriod =
    row.periodStart !== null && (row.creditedPeriodStart === null || row.periodStart.getTime() > row.creditedPeriodStart.getTime());
  let delta: number;
  let reason: string;
  let creditedPeriodStart = row.creditedPeriodStart;
  if (row.ended) {
    delta = -row.creditsRemaining;
    reason = 'subscription_ended';
  } else if (isNewPeriod) {
    delta = allowance - row.creditsRemaining;
    reason = allowance > 0 ? 'subscription_period_allowance' : 'subscription_period_expired';
    creditedPeriodStart = row.periodStart;
  } else {
    const change = allowance - row.creditedAllowance;
    delta = change >= 0 ? change : -Math.min(-change, Math.max(row.creditsRemaining, 0));
    reason = change >= 0 ? 'subscription_allowance_raised' : 'subscription_allowance_lowered';
  }
  await tx.query(
    `UPDATE service_subscriptions
     SET plan = $2, status = $3, current_period_start = $4, current_period_end = $5, credited_period_start = $6,
         credited_allowance = $7, updated_at = now()
     WHERE user_id = $1`,
    [userId, row.plan, row.status, row.periodStart, row.periodEnd, creditedPeriodStart, row.ended ? 0 : allowance],
  );
  await adjustCredits(tx, { userId, bucket: 'subscription', delta, reason, stripeEventId, sourceId: row.subscriptionId });
  return { status: 'processed', userId };
}

function unixSeconds(value: unknown): number | null {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0 ? value : null;
}
