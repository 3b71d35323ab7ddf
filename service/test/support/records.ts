import type { Database, Queryable } from '../../db';
import type { CreditBucket } from '../../credits/ledger';

/** The `stripe_events` row of one event: how it was recorded, and why when it was not applied. */
export async function eventRecord(db: Queryable, eventId: string) {
  const { rows } = await db.query<{ type: string; status: string; error: string | null }>('SELECT type, status, error FROM stripe_events WHERE id = $1', [eventId]);
  return rows[0];
}

/** One bucket of a user's ledger, oldest first. */
export async function bucketLedger(db: Queryable, userId: string, bucket: CreditBucket) {
  const { rows } = await db.query<{ delta: number; reason: string }>(
    'SELECT delta, reason FROM credit_ledger WHERE user_id = $1 AND bucket = $2 ORDER BY id',
    [userId, bucket],
  );
  return rows;
}

const balanceColumn: Record<CreditBucket, string> = { purchased: 'purchased_credits_balance', subscription: 'credits_remaining' };

/** The product spending credits: a ledger entry and the balance change, together (as the invariant requires). */
export async function spendCredits(db: Database, userId: string, bucket: CreditBucket, credits: number): Promise<void> {
  await db.withTransaction(async (tx) => {
    await tx.query("INSERT INTO credit_ledger (user_id, bucket, delta, reason) VALUES ($1, $2, $3, 'usage')", [userId, bucket, -credits]);
    await tx.query(`UPDATE service_subscriptions SET ${balanceColumn[bucket]} = ${balanceColumn[bucket]} - $2 WHERE user_id = $1`, [userId, credits]);
  });
}
