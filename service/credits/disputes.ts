import type { Queryable } from '../db';
import { disputeStage, disputeStatusesReturningMoney, type Dispute } from '../stripe/payments';
import { unmatched, type HandlerOutcome } from './outcome';
import { settlePurchaseTakeBack } from './purchaseTakeBack';
import type { ObjectSource } from './source';

// One row per dispute; the newest report of its status wins (a lost dispute may be appealed and won), two
// reports of the same second are ordered by the stage of the dispute's life.
const storeDisputeSql = `
  INSERT INTO payment_disputes AS d (id, payment_intent, charge_id, amount, status, counted, reported_at, stage)
  VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), $8)
  ON CONFLICT (id) DO UPDATE SET
    status = CASE WHEN (EXCLUDED.reported_at, EXCLUDED.stage) >= (d.reported_at, d.stage) THEN EXCLUDED.status ELSE d.status END,
    counted = CASE WHEN (EXCLUDED.reported_at, EXCLUDED.stage) >= (d.reported_at, d.stage) THEN EXCLUDED.counted ELSE d.counted END,
    stage = CASE WHEN (EXCLUDED.reported_at, EXCLUDED.stage) >= (d.reported_at, d.stage) THEN EXCLUDED.stage ELSE d.stage END,
    reported_at = GREATEST(d.reported_at, EXCLUDED.reported_at),
    updated_at = now()`;

/**
 * charge.dispute.created / charge.dispute.closed: an open or lost dispute takes back the disputed share of the
 * purchase's credits; one won (or an inquiry closed without a chargeback) gives it back.
 */
export async function recordDispute(tx: Queryable, dispute: Dispute, source: ObjectSource): Promise<HandlerOutcome> {
  if (!dispute.paymentIntentId) return unmatched('dispute has no payment_intent: it cannot be matched to a purchase');
  await tx.query(storeDisputeSql, [
    dispute.id,
    dispute.paymentIntentId,
    dispute.chargeId ?? null,
    dispute.amount,
    dispute.status,
    !disputeStatusesReturningMoney.has(dispute.status),
    source.asOfSeconds,
    disputeStage(dispute.status),
  ]);
  return settlePurchaseTakeBack(tx, dispute.paymentIntentId, source);
}
