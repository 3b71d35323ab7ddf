import type { Queryable } from '../db';
import { adjustCredits } from './ledger';
import { unmatched, type HandlerOutcome } from './outcome';
import type { ObjectSource } from './source';

/** Refunds, disputes and the purchase they take credits back from are serialised per payment (see claimEvent). */
export const paymentLockKey = (paymentIntentId: string) => `payment:${paymentIntentId}`;

// What a paid purchase gives back, recomputed from everything known about its payment, so each refund or
// dispute event (in any order, any number of times) only moves the difference:
// - refunded: the sum of its refunds not failed or canceled; while no refund object is known, the newest
//   cumulative amount charge.refunded reported;
// - disputed: the sum of its disputes not closed in the merchant's favour;
// - credits back = ⌊credits × share ÷ charged⌋, in exact integer arithmetic (numeric `div`), refunds first,
//   then disputes on what refunds left: together never more than the purchase.
// The purchase row is locked; every lookup is on an index (payment_intent).
const takeBackSql = `
  WITH purchase AS (
    SELECT id, credits, credits_refunded, credits_disputed, amount_total
    FROM credit_purchases WHERE payment_intent = $1 AND status = 'paid' FOR UPDATE
  ), charge AS (
    SELECT amount, amount_refunded FROM charge_refunds WHERE payment_intent = $1
  ), refunds AS (
    SELECT count(*) AS known, COALESCE(sum(amount) FILTER (WHERE counted), 0) AS counted FROM payment_refunds WHERE payment_intent = $1
  ), money AS (
    SELECT p.id,
      COALESCE(NULLIF(p.amount_total, 0), (SELECT amount FROM charge)) AS charged,
      CASE WHEN r.known > 0 THEN r.counted ELSE COALESCE((SELECT amount_refunded FROM charge), 0) END AS refunded,
      (SELECT COALESCE(sum(amount), 0) FROM payment_disputes WHERE payment_intent = $1 AND counted) AS disputed
    FROM purchase p, refunds r
  ), share AS (
    SELECT id, charged, LEAST(refunded, charged) AS refunded, LEAST(refunded + disputed, charged) AS taken FROM money WHERE charged > 0
  )
  UPDATE credit_purchases c SET
    credits_refunded = div(c.credits::numeric * s.refunded, s.charged),
    credits_disputed = div(c.credits::numeric * s.taken, s.charged) - div(c.credits::numeric * s.refunded, s.charged),
    amount_refunded = s.refunded,
    amount_disputed = s.taken - s.refunded
  FROM share s, purchase p
  WHERE c.id = s.id AND p.id = s.id
  RETURNING c.user_id AS "userId", c.stripe_checkout_session_id AS "sessionId",
    c.credits_refunded - p.credits_refunded AS "refundedDelta", c.credits_disputed - p.credits_disputed AS "disputedDelta"`;

interface TakeBack {
  userId: string;
  sessionId: string;
  refundedDelta: number;
  disputedDelta: number;
}

/**
 * Takes back (or gives back) a purchase's credits after a refund or dispute of its payment changed. If the
 * credits were spent already, the purchased balance goes below zero: the debt is visible in the ledger and
 * blocks spending until the user buys again. A payment that bought no credits is told apart: a subscription
 * invoice's (its credits stay: see README) or one not known (yet), which a later purchase applies.
 */
export async function settlePurchaseTakeBack(tx: Queryable, paymentIntentId: string, source: ObjectSource): Promise<HandlerOutcome> {
  const { rows } = await tx.query<TakeBack>(takeBackSql, [paymentIntentId]);
  const change = rows[0];
  if (!change) return paymentWithoutPurchase(tx, paymentIntentId);
  const entry = { userId: change.userId, bucket: 'purchased' as const, stripeEventId: source.eventId, sourceId: change.sessionId };
  if (change.refundedDelta !== 0) {
    await adjustCredits(tx, { ...entry, delta: -change.refundedDelta, reason: change.refundedDelta > 0 ? 'refund' : 'refund_failed' });
  }
  if (change.disputedDelta !== 0) {
    await adjustCredits(tx, { ...entry, delta: -change.disputedDelta, reason: change.disputedDelta > 0 ? 'dispute' : 'dispute_won' });
  }
  return { status: 'processed', userId: change.userId };
}

async function paymentWithoutPurchase(tx: Queryable, paymentIntentId: string): Promise<HandlerOutcome> {
  const { rows } = await tx.query<{ status: string | null; invoiceId: string | null }>(
    `SELECT (SELECT status FROM credit_purchases WHERE payment_intent = $1 LIMIT 1) AS status,
            (SELECT invoice_id FROM invoice_payments WHERE payment_intent = $1) AS "invoiceId"`,
    [paymentIntentId],
  );
  const { status, invoiceId } = rows[0]!;
  if (status === 'paid') return { status: 'processed', note: 'the charge amount is unknown: nothing can be taken back in proportion' };
  if (invoiceId) {
    return { status: 'processed', note: `payment of subscription invoice ${invoiceId}: subscription credits are not taken back by refunds or disputes` };
  }
  return unmatched('no paid credit purchase or subscription invoice for this payment yet; kept and applied if one arrives');
}
