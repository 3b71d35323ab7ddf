import type { Queryable } from '../db';

export type CreditBucket = 'purchased' | 'subscription';

export interface CreditAdjustment {
  userId: string;
  bucket: CreditBucket;
  delta: number;
  reason: string;
  /** The event that caused the change; absent when a read from the Stripe API did. */
  stripeEventId: string | undefined;
  /** The Stripe object behind the change (checkout session, subscription, charge). */
  sourceId: string;
}

// One statement, one round trip: the ledger entry and the balance change commit or fail together, which
// keeps "balance = sum of ledger deltas" true for every user and bucket.
const adjustSql = (balanceColumn: 'purchased_credits_balance' | 'credits_remaining') => `
  WITH entry AS (
    INSERT INTO credit_ledger (user_id, bucket, delta, reason, stripe_event_id, source_id)
    VALUES ($1, $2, $3, $4, $5, $6)
  )
  INSERT INTO service_subscriptions (user_id, ${balanceColumn}) VALUES ($1, $3)
  ON CONFLICT (user_id) DO UPDATE
    SET ${balanceColumn} = service_subscriptions.${balanceColumn} + EXCLUDED.${balanceColumn}, updated_at = now()`;

const adjustSqlByBucket: Record<CreditBucket, string> = {
  purchased: adjustSql('purchased_credits_balance'),
  subscription: adjustSql('credits_remaining'),
};

/** Records a ledger entry and applies it to the user's balance, creating the user's row if needed. */
export async function adjustCredits(tx: Queryable, adjustment: CreditAdjustment): Promise<void> {
  if (adjustment.delta === 0) return;
  const { userId, bucket, delta, reason, stripeEventId, sourceId } = adjustment;
  await tx.query(adjustSqlByBucket[bucket], [userId, bucket, delta, reason, stripeEventId ?? null, sourceId]);
}
