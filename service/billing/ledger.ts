import type { Queryable } from '../db';

export const defaultLedgerPageSize = 20;
export const maxLedgerPageSize = 100;

export interface LedgerPage {
  object: 'list';
  data: LedgerEntry[];
  has_more: boolean;
  /** Give it as `starting_after` for the next (older) page; null on the last page. */
  next_cursor: string | null;
}

export interface LedgerEntry {
  id: string;
  bucket: 'purchased' | 'subscription';
  delta: number;
  reason: string;
  /** For spending: the reason the product gave. */
  description: string | null;
  /** The Stripe object behind the change (Checkout Session, subscription, charge), or the spend's idempotency key. */
  source_id: string | null;
  stripe_event_id: string | null;
  created_at: string;
}

// Newest first, keyset-paginated on the id (an index on (user_id, id DESC) serves it); a cursor only ever
// narrows the user's own entries, so another user's id in it reveals nothing.
const pageSql = `
  SELECT l.id::text AS id, l.bucket, l.delta, l.reason, c.reason AS description, l.source_id AS "sourceId",
         l.stripe_event_id AS "stripeEventId", l.created_at AS "createdAt"
  FROM credit_ledger l
  LEFT JOIN credit_consumptions c ON l.reason = 'usage' AND c.idempotency_key = l.source_id
  WHERE l.user_id = $1 AND ($2::bigint IS NULL OR l.id < $2::bigint)
  ORDER BY l.id DESC LIMIT $3`;

export async function readLedgerPage(db: Queryable, userId: string, options: { startingAfter?: number; limit: number }): Promise<LedgerPage> {
  const { rows } = await db.query<{
    id: string;
    bucket: LedgerEntry['bucket'];
    delta: number;
    reason: string;
    description: string | null;
    sourceId: string | null;
    stripeEventId: string | null;
    createdAt: Date;
  }>(pageSql, [userId, options.startingAfter ?? null, options.limit + 1]);
  const hasMore = rows.length > options.limit;
  const data = rows.slice(0, options.limit).map((row) => ({
    id: row.id,
    bucket: row.bucket,
    delta: row.delta,
    reason: row.reason,
    description: row.description,
    source_id: row.sourceId,
    stripe_event_id: row.stripeEventId,
    created_at: row.createdAt.toISOString(),
  }));
  return { object: 'list', data, has_more: hasMore, next_cursor: hasMore ? data.at(-1)!.id : null };
}
