import type { Queryable } from '../db';
import { unsuccessfulRefundStatuses, type Charge, type Refund } from '../stripe/payments';
import { unmatched, type HandlerOutcome } from './outcome';
import { settlePurchaseTakeBack } from './purchaseTakeBack';
import type { ObjectSource } from './source';

// One row per refund. A failed or canceled refund never succeeds again, so `counted` only ever turns false,
// whatever order its events (refund.created/updated/failed, charge.refund.updated) arrive in.
const storeRefundSql = `
  INSERT INTO payment_refunds AS r (id, payment_intent, charge_id, amount, status, counted) VALUES ($1, $2, $3, $4, $5, $6)
  ON CONFLICT (id) DO UPDATE SET
    status = CASE WHEN r.counted THEN EXCLUDED.status ELSE r.status END,
    counted = r.counted AND EXCLUDED.counted,
    charge_id = COALESCE(r.charge_id, EXCLUDED.charge_id),
    updated_at = now()`;

async function storeRefund(tx: Queryable, refund: Refund, paymentIntentId: string): Promise<void> {
  await tx.query(storeRefundSql, [refund.id, paymentIntentId, refund.chargeId ?? null, refund.amount, refund.status, !unsuccessfulRefundStatuses.has(refund.status)]);
}

/**
 * refund.created / refund.updated / refund.failed / charge.refund.updated: the refund is kept by its id with
 * its amount and status, and the purchase's credits follow the sum of its refunds that are not failed or
 * canceled (a failed refund gives its credits back).
 */
export async function recordRefund(tx: Queryable, refund: Refund, source: ObjectSource): Promise<HandlerOutcome> {
  if (!refund.paymentIntentId) return unmatched('refund has no payment_intent: it cannot be matched to a purchase');
  await storeRefund(tx, refund, refund.paymentIntentId);
  return settlePurchaseTakeBack(tx, refund.paymentIntentId, source);
}

// The newest report of the cumulative amount counts: it goes down when a refund fails.
const storeChargeSql = `
  INSERT INTO charge_refunds AS c (payment_intent, charge_id, amount, amount_refunded, reported_at) VALUES ($1, $2, $3, $4, to_timestamp($5))
  ON CONFLICT (payment_intent) DO UPDATE SET
    amount = EXCLUDED.amount,
    amount_refunded = CASE WHEN EXCLUDED.reported_at >= c.reported_at THEN EXCLUDED.amount_refunded ELSE c.amount_refunded END,
    reported_at = GREATEST(c.reported_at, EXCLUDED.reported_at),
    updated_at = now()`;

/**
 * charge.refunded: the charge's amount and cumulative `amount_refunded` (current API versions carry no list
 * of refunds; older ones do, and each is kept as a refund). The cumulative amount decides only until refund
 * objects of the payment are known.
 */
export async function recordChargeRefunded(tx: Queryable, charge: Charge, source: ObjectSource): Promise<HandlerOutcome> {
  if (!charge.paymentIntentId) return unmatched('charge has no payment_intent: it cannot be matched to a purchase');
  if (charge.amount === 0) return unmatched('charge amount is 0: nothing was paid');
  await tx.query(storeChargeSql, [charge.paymentIntentId, charge.id, charge.amount, charge.amountRefunded, source.asOfSeconds]);
  for (const refund of charge.refunds) await storeRefund(tx, refund, charge.paymentIntentId);
  return settlePurchaseTakeBack(tx, charge.paymentIntentId, source);
}
