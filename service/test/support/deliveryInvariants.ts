import type { Queryable } from '../../db';
import { checkInvariants, type InvariantReport } from './invariants';

export interface DeliveryInvariantReport extends InvariantReport {
  /** Events answered 2xx that the database does not hold as applied (missing, or only a 'failed' trace). */
  acknowledgedButNotRecorded: string[];
  /** Purchase grants whose Checkout session is of the other Stripe mode than the deployment's. */
  grantsOfOtherMode: string[];
}

export const deliveryInvariantsHold: DeliveryInvariantReport = {
  ledgerMismatches: [],
  doublyCreditedSessions: [],
  grantsWithoutPaidPurchase: [],
  acknowledgedButNotRecorded: [],
  grantsOfOtherMode: [],
};

/**
 * Everything a scenario must end with: the accounting invariants, every acknowledged event recorded
 * (once: the event id is the primary key), and no credit from a session of the other mode.
 */
export async function checkDeliveryInvariants(
  db: Queryable,
  expected: { acknowledged: readonly string[]; stripeMode?: 'test' | 'live' },
): Promise<DeliveryInvariantReport> {
  const base = await checkInvariants(db);
  const { rows: recorded } = await db.query<{ id: string }>(
    "SELECT id FROM stripe_events WHERE id = ANY($1::text[]) AND status <> 'failed'",
    [[...new Set(expected.acknowledged)]],
  );
  const recordedIds = new Set(recorded.map((row) => row.id));
  const { rows: otherMode } = await db.query<{ sourceId: string }>(
    `SELECT l.source_id AS "sourceId" FROM credit_ledger l JOIN credit_purchases p ON p.stripe_checkout_session_id = l.source_id
     WHERE l.reason = 'credit_purchase' AND p.livemode <> $1`,
    [(expected.stripeMode ?? 'test') === 'live'],
  );
  return {
    ...base,
    acknowledgedButNotRecorded: [...new Set(expected.acknowledged)].filter((id) => !recordedIds.has(id)),
    grantsOfOtherMode: otherMode.map((row) => row.sourceId),
  };
}
