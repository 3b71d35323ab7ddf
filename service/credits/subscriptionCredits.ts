import type { Queryable } from '../db';
import { allowanceOf, type KnownPriceCredits, type PriceUnits } from './allowance';
import type { CreditCatalog } from './catalog';
import { adjustCredits } from './ledger';
import type { HandlerOutcome } from './outcome';
import { takeLock, type ObjectSource } from './source';

/** A subscription line of a paid invoice, as stored: the units it paid for and when its period starts. */
export interface StoredInvoiceLine extends PriceUnits {
  /** Unix seconds. */
  start: number;
}

/**
 * Serialises everything that settles one user's subscription credits, so two subscriptions of the same user
 * never miss each other. Always taken after the Stripe object's lock (claimEvent) and before the user's row
 * lock, so it cannot deadlock.
 */
export async function lockUser(tx: Queryable, userId: string): Promise<void> {
  await takeLock(tx, `user:${userId}`);
}

/** What decides the worth of a subscription's current (latest) billing period. */
export interface CurrentPeriod {
  ended: boolean;
  /** Unix seconds; null while no period of the subscription is known. */
  periodStart: number | null;
  /** The largest allowance of an active or trialing state seen in the period. */
  planAllowance: number | null;
  /** The lines of each paid invoice that has a line in the current period. */
  invoices: StoredInvoiceLine[][] | null;
  priceCredits: KnownPriceCredits;
}

/** One subscription of the user, with its current billing period. */
interface SubscriptionCandidate extends CurrentPeriod {
  subscriptionId: string;
  customerId: string | null;
  status: string;
  plan: string | null;
  subscriptionCreated: number | null;
  periodEnd: number | null;
  granted: number;
}

// Every lookup is on an index: stripe_subscriptions (user_id), subscription_periods and
// subscription_invoices by subscription (primary key, (subscription_id, latest_line_start)).
const candidatesSql = `
  SELECT s.id AS "subscriptionId", s.customer_id AS "customerId", s.status, s.plan, s.ended,
         extract(epoch FROM s.subscription_created)::bigint AS "subscriptionCreated", s.price_credits AS "priceCredits",
         extract(epoch FROM p.period_start)::bigint AS "periodStart", extract(epoch FROM p.period_end)::bigint AS "periodEnd",
         p.plan_allowance AS "planAllowance", COALESCE(p.granted, 0) AS granted,
         (SELECT json_agg(i.lines) FROM subscription_invoices i
          WHERE i.subscription_id = s.id AND i.latest_line_start >= p.period_start) AS invoices
  FROM stripe_subscriptions s
  LEFT JOIN LATERAL (
    SELECT * FROM subscription_periods p WHERE p.subscription_id = s.id ORDER BY p.period_start DESC LIMIT 1
  ) p ON true
  WHERE s.user_id = $1`;

export interface PeriodEntitlement {
  /** A paid invoice (a $0 trial invoice too) has a line in the period. */
  paid: boolean;
  /** What the period is worth: 0 until paid; then the larger of the paid invoices' and the plan's allowance. */
  allowance: number;
}

/**
 * What the current period of one subscription is worth. Paid invoices earn it; within the period the allowance
 * is a high-water mark over every paid invoice (an upgrade's proration invoice) and every active or trialing
 * state seen (an upgrade without an invoice of its own), so a downgrade only counts from the next period.
 */
export function periodEntitlement(candidate: CurrentPeriod, catalog: CreditCatalog): PeriodEntitlement {
  if (candidate.ended || candidate.periodStart === null) return { paid: false, allowance: 0 };
  const periodStart = candidate.periodStart;
  const paidLines = (candidate.invoices ?? []).map((lines) => lines.filter((line) => line.start >= periodStart)).filter((lines) => lines.length > 0);
  if (paidLines.length === 0) return { paid: false, allowance: 0 };
  const invoiceAllowance = Math.max(...paidLines.map((lines) => allowanceOf(lines, catalog, candidate.priceCredits).credits));
  return { paid: true, allowance: Math.max(invoiceAllowance, candidate.planAllowance ?? 0) };
}

/** Newest first by Stripe's `created`, then by id: a deterministic choice whatever order events came in. */
function newest<T extends { subscriptionCreated: number | null; subscriptionId: string }>(candidates: T[]): T | undefined {
  return [...candidates].sort(
    (a, b) => (b.subscriptionCreated ?? -Infinity) - (a.subscriptionCreated ?? -Infinity) || (a.subscriptionId < b.subscriptionId ? 1 : -1),
  )[0];
}

interface UserRow {
  creditsRemaining: number;
  subscriptionId: string | null;
  creditedPeriodStart: number | null;
}

const upsertUserSql = `
  INSERT INTO service_subscriptions
    (user_id, stripe_customer_id, stripe_subscription_id, plan, status, current_period_start, current_period_end, credited_period_start)
  VALUES ($1, $2, $3, $4, $5, to_timestamp($6), to_timestamp($7), to_timestamp($6))
  ON CONFLICT (user_id) DO UPDATE SET
    stripe_customer_id = COALESCE(EXCLUDED.stripe_customer_id, service_subscriptions.stripe_customer_id),
    stripe_subscription_id = EXCLUDED.stripe_subscription_id, plan = EXCLUDED.plan, status = EXCLUDED.status,
    current_period_start = EXCLUDED.current_period_start, current_period_end = EXCLUDED.current_period_end,
    credited_period_start = EXCLUDED.credited_period_start, updated_at = now()`;

/**
 * Brings the user's subscription credits (`credits_remaining`) in line with what Stripe says, so the result never
 * depends on the order events arrived in:
 * - the subscription that counts is the newest one whose current period is paid (else the newest live one);
 * - when its current period (or the subscription that counts) changes, what was left of the previous period
 *   expires; an ended subscription's credits expire;
 * - a period is granted its allowance once, and only what the allowance rose by since (a high-water mark):
 *   nothing granted in a period is granted again, and spent credits are never taken back.
 * Purchased credits are never touched.
 */
export async function settleSubscriptionCredits(tx: Queryable, userId: string, source: ObjectSource, catalog: CreditCatalog): Promise<HandlerOutcome> {
  await lockUser(tx, userId);
  const { rows: candidates } = await tx.query<SubscriptionCandidate>(candidatesSql, [userId]);
  const evaluated = candidates.map((candidate) => ({ ...candidate, ...periodEntitlement(candidate, catalog) }));
  const live = evaluated.filter((candidate) => !candidate.ended);
  const counting = newest(live.filter((candidate) => candidate.paid)) ?? newest(live) ?? newest(evaluated);
  if (!counting) return { status: 'processed', userId, note: 'the user has no subscription' };

  const { rows } = await tx.query<UserRow>(
    `SELECT credits_remaining AS "creditsRemaining", stripe_subscription_id AS "subscriptionId",
            extract(epoch FROM credited_period_start)::bigint AS "creditedPeriodStart"
     FROM service_subscriptions WHERE user_id = $1 FOR UPDATE`,
    [userId],
  );
  const user = rows[0] ?? { creditsRemaining: 0, subscriptionId: null, creditedPeriodStart: null };
  let remaining = user.creditsRemaining;
  const adjust = async (delta: number, reason: string, subscriptionId: string) => {
    await adjustCredits(tx, { userId, bucket: 'subscription', delta, reason, stripeEventId: source.eventId, sourceId: subscriptionId });
    remaining += delta;
  };

  const previous = user.subscriptionId === null ? undefined : evaluated.find((candidate) => candidate.subscriptionId === user.subscriptionId);
  const replaced = user.subscriptionId !== null && user.subscriptionId !== counting.subscriptionId;
  const periodChanged = replaced || (user.subscriptionId !== null && user.creditedPeriodStart !== counting.periodStart);
  if (periodChanged && remaining > 0) {
    const reason = !replaced ? 'subscription_period_expired' : previous?.ended ? 'subscription_ended' : 'subscription_replaced';
    await adjust(-remaining, reason, user.subscriptionId!);
  }
  if (counting.ended) {
    if (remaining > 0) await adjust(-remaining, 'subscription_ended', counting.subscriptionId);
  } else if (counting.periodStart !== null && counting.allowance > counting.granted) {
    const { rowCount } = await tx.query(
      'UPDATE subscription_periods SET granted = $3 WHERE subscription_id = $1 AND period_start = to_timestamp($2) AND granted < $3',
      [counting.subscriptionId, counting.periodStart, counting.allowance],
    );
    if (rowCount === 1) {
      const reason = counting.granted === 0 ? 'subscription_period_allowance' : 'subscription_allowance_raised';
      await adjust(counting.allowance - counting.granted, reason, counting.subscriptionId);
    }
  }
  await tx.query(upsertUserSql, [
    userId,
    counting.customerId,
    counting.subscriptionId,
    counting.plan,
    counting.ended ? 'canceled' : counting.status,
    counting.periodStart,
    counting.periodEnd,
  ]);
  return { status: 'processed', userId };
}
