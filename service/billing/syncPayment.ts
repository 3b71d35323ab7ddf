import type Stripe from 'stripe';
import type { CreditCatalog } from '../credits/catalog';
import { readUserId } from '../credits/outcome';
import { readMetadata, readStripeId } from '../stripe/fields';
import type { Database, Queryable } from '../db';
import { closeCheckoutSession, type LineItemsFetcher } from '../credits/checkout';
import { maxListedPendingPurchases } from './creditsView';
import { fulfilCheckoutFromApi, recordSubscriptionFromApi } from './fulfilFromApi';

/** One sync per user per this long, across replicas: a flood of clicks cannot use up Stripe's rate limit. */
export const defaultSyncIntervalSeconds = 10;
/**
 * A subscription's paid invoices a sync reads, newest first: the current period's regular invoice and the
 * proration invoices of changes within it (only the current period counts).
 */
const recentPaidInvoicesPerSubscription = 3;

export type SessionSyncStatus = 'applied' | 'awaiting_payment' | 'processing' | 'expired' | 'unmatched';

export interface SyncReport {
  sessions: Array<{ session_id: string; status: SessionSyncStatus; reason?: string }>;
  subscription: { subscription_id: string; status: string } | null;
  /** A user whose credits may have changed (for the balance notification). */
  changed: boolean;
}

// One statement decides, whichever replica asks: the row is (re)written only when the last sync is old enough.
const rateLimitSql = `
  INSERT INTO billing_syncs (user_id, last_sync_at) VALUES ($1, now())
  ON CONFLICT (user_id) DO UPDATE SET last_sync_at = now()
    WHERE billing_syncs.last_sync_at <= now() - make_interval(secs => $2)
  RETURNING user_id`;

/** Seconds until the user may sync again, or 0 when this call may go ahead (and is recorded). */
export async function takeSyncTurn(db: Queryable, userId: string, intervalSeconds: number): Promise<number> {
  const { rowCount } = await db.query(rateLimitSql, [userId, intervalSeconds]);
  if (rowCount === 1) return 0;
  const { rows } = await db.query<{ waitSeconds: number }>(
    'SELECT GREATEST(1, ceil(extract(epoch FROM last_sync_at + make_interval(secs => $2) - now())))::int AS "waitSeconds" FROM billing_syncs WHERE user_id = $1',
    [userId, intervalSeconds],
  );
  return rows[0]?.waitSeconds ?? 1;
}

/** The Checkout sessions a sync asks Stripe about: the user's open ones and purchases still being paid. */
async function pendingSessionIds(db: Queryable, userId: string): Promise<string[]> {
  const { rows } = await db.query<{ sessionId: string }>(
    `(SELECT session_id AS "sessionId", created_at FROM checkout_sessions WHERE user_id = $1 AND status = 'open'
      ORDER BY created_at DESC LIMIT $2)
     UNION
     (SELECT stripe_checkout_session_id, created_at FROM credit_purchases WHERE user_id = $1 AND status = 'pending'
      ORDER BY created_at DESC LIMIT $2)
     ORDER BY created_at DESC LIMIT $2`,
    [userId, maxListedPendingPurchases],
  );
  return rows.map((row) => row.sessionId);
}

/** The Checkout session's user as the webhook reads it: client_reference_id, else metadata.user_id. */
export function sessionOwner(session: Stripe.Checkout.Session): string | undefined {
  return readUserId(session.client_reference_id, readMetadata(session as unknown as Record<string, unknown>).user_id);
}

/**
 * A session as Stripe has it now. One Stripe does not know (a local Stripe restarted in development, a
 * session of the other mode) can never be paid: it counts as expired, so it no longer awaits payment.
 */
async function retrieveSession(deps: SyncDeps, sessionId: string): Promise<Stripe.Checkout.Session> {
  try {
    return await deps.stripe.checkout.sessions.retrieve(sessionId);
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode !== 404) throw error;
    const { rows } = await deps.db.query<{ userId: string }>("UPDATE checkout_sessions SET status = 'expired' WHERE session_id = $1 RETURNING user_id AS \"userId\"", [sessionId]);
    return { id: sessionId, object: 'checkout.session', status: 'expired', client_reference_id: rows[0]?.userId ?? null, metadata: {} } as Stripe.Checkout.Session;
  }
}

export interface SyncDeps {
  db: Database;
  stripe: Stripe;
  catalog: CreditCatalog;
  fetchLineItems: LineItemsFetcher | undefined;
}

/**
 * Reads the user's pending purchases (or the one session asked for, already checked to be the user's) and
 * subscription from Stripe and applies them through the webhook's own fulfilment, under the same locks and
 * unique keys: a sync racing the webhook (or another sync) grants once.
 */
export async function syncPayments(deps: SyncDeps, userId: string, onlySession?: Stripe.Checkout.Session): Promise<SyncReport> {
  const report: SyncReport = { sessions: [], subscription: null, changed: false };
  const sessions = onlySession ? [onlySession] : await Promise.all((await pendingSessionIds(deps.db, userId)).map((id) => retrieveSession(deps, id)));
  const sessionsReadAtMillis = Date.now();
  const subscriptionIds = new Set<string>();
  for (const session of sessions) {
    // Stripe's answer decides, never our own record: a session that is not the user's is left alone.
    if (sessionOwner(session) !== userId) continue;
    await closeCheckoutSession(deps.db, session);
    if (session.status === 'expired') {
      report.sessions.push({ session_id: session.id, status: 'expired' });
      continue;
    }
    if (session.status !== 'complete') {
      report.sessions.push({ session_id: session.id, status: 'awaiting_payment' });
      continue;
    }
    const subscriptionId = readStripeId(session.subscription);
    if (subscriptionId) subscriptionIds.add(subscriptionId);
    const outcome = await fulfilCheckoutFromApi(deps, session, sessionsReadAtMillis);
    if (outcome.status === 'processed') report.changed = true;
    const status: SessionSyncStatus =
      outcome.status === 'unmatched' ? 'unmatched' : session.mode === 'payment' && session.payment_status === 'unpaid' ? 'processing' : 'applied';
    report.sessions.push({ session_id: session.id, status, ...(outcome.status === 'unmatched' ? { reason: outcome.reason } : {}) });
  }

  if (!onlySession) {
    const linked = await deps.db.query<{ subscriptionId: string }>(
      'SELECT stripe_subscription_id AS "subscriptionId" FROM service_subscriptions WHERE user_id = $1 AND stripe_subscription_id IS NOT NULL',
      [userId],
    );
    for (const row of linked.rows) subscriptionIds.add(row.subscriptionId);
  }
  for (const subscriptionId of subscriptionIds) {
    const subscription = await deps.stripe.subscriptions.retrieve(subscriptionId);
    const readAtMillis = Date.now();
    const paidInvoices = await deps.stripe.invoices.list({ subscription: subscriptionId, status: 'paid', limit: recentPaidInvoicesPerSubscription });
    const outcomes = await recordSubscriptionFromApi(deps, subscription, paidInvoices.data, readAtMillis);
    if (outcomes.some((outcome) => outcome.status === 'processed')) report.changed = true;
    report.subscription = { subscription_id: subscription.id, status: subscription.status };
  }
  return report;
}
