import type { Queryable } from '../../db';

export interface InvariantReport {
  /** Users whose balance column differs from the sum of their ledger entries (per bucket). */
  ledgerMismatches: Array<{ userId: string; bucket: string; balance: number; ledgerSum: number }>;
  /** Checkout sessions granted more than once. */
  doublyCreditedSessions: string[];
  /** Purchase grants without a paid purchase row. */
  grantsWithoutPaidPurchase: string[];
}

/** The accounting rules every scenario must end with; empty arrays mean all hold. */
export async function checkInvariants(db: Queryable): Promise<InvariantReport> {
  const ledgerMismatches = await db.query<{ userId: string; bucket: string; balance: number; ledgerSum: number }>(`
    WITH sums AS (
      SELECT user_id, bucket, sum(delta)::bigint AS ledger_sum FROM credit_ledger GROUP BY user_id, bucket
    ), balances AS (
      SELECT user_id, 'purchased' AS bucket, purchased_credits_balance AS balance FROM service_subscriptions
      UNION ALL
      SELECT user_id, 'subscription', credits_remaining FROM service_subscriptions
    )
    SELECT COALESCE(b.user_id, s.user_id) AS "userId", COALESCE(b.bucket, s.bucket) AS bucket,
           COALESCE(b.balance, 0)::bigint AS balance, COALESCE(s.ledger_sum, 0)::bigint AS "ledgerSum"
    FROM balances b FULL JOIN sums s ON s.user_id = b.user_id AND s.bucket = b.bucket
    WHERE COALESCE(b.balance, 0) <> COALESCE(s.ledger_sum, 0)`);
  const doublyCredited = await db.query<{ sourceId: string }>(`
    SELECT source_id AS "sourceId" FROM credit_ledger WHERE reason = 'credit_purchase'
    GROUP BY source_id HAVING count(*) > 1`);
  const withoutPurchase = await db.query<{ sourceId: string }>(`
    SELECT l.source_id AS "sourceId" FROM credit_ledger l
    LEFT JOIN credit_purchases p ON p.stripe_checkout_session_id = l.source_id AND p.status = 'paid'
    WHERE l.reason = 'credit_purchase' AND p.id IS NULL`);
  return {
    ledgerMismatches: ledgerMismatches.rows,
    doublyCreditedSessions: doublyCredited.rows.map((row) => row.sourceId),
    grantsWithoutPaidPurchase: withoutPurchase.rows.map((row) => row.sourceId),
  };
}

export const invariantsHold: InvariantReport = { ledgerMismatches: [], doublyCreditedSessions: [], grantsWithoutPaidPurchase: [] };

export async function balanceOf(db: Queryable, userId: string): Promise<{ purchased: number; subscription: number }> {
  const { rows } = await db.query<{ purchased: number; subscription: number }>(
    'SELECT purchased_credits_balance AS purchased, credits_remaining AS subscription FROM service_subscriptions WHERE user_id = $1',
    [userId],
  );
  return rows[0] ?? { purchased: 0, subscription: 0 };
}
