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

/** Records a ledger entry and applies it to the user's balance, creating the user's row if needed (credit_adjust, migration 004). */
export async function adjustCredits(tx: Queryable, adjustment: CreditAdjustment): Promise<void> {
  if (adjustment.delta === 0) return;
  const { userId, bucket, delta, reason, stripeEventId, sourceId } = adjustment;
  await tx.query('SELECT credit_adjust($1, $2, $3, $4, $5, $6)', [userId, bucket, delta, reason, stripeEventId ?? null, sourceId]);
}
