import type { Queryable } from '../db';
import type { StripeEvent } from '../webhook/stripeEvent';
import { adjustCredits } from './ledger';
import { readStripeId, unmatched, type HandlerOutcome } from './outcome';

export interface RefundState {
  amount: number;
  amountRefunded: number;
}

export interface PaidPurchase {
  id: number;
  userId: string;
  sessionId: string;
  credits: number;
  creditsRefunded: number;
}

/** Refunds and the purchase they claw back from are serialised per payment (see eventLog.claimEvent). */
export const paymentLockKey = (paymentIntentId: string) => `payment:${paymentIntentId}`;

export function chargeLockKey(event: StripeEvent): string | undefined {
  const paymentIntent = readStripeId(event.data.object.payment_intent);
  return paymentIntent ? paymentLockKey(paymentIntent) : undefined;
}

/**
 * `charge.refunded` carries the cumulative `amount_refunded`, so the clawback is recomputed from the largest
 * amount seen: a second (or replayed, or out-of-order) refund event only takes the difference. The refund is
 * kept even when its purchase is unknown yet, and applied when the purchase's checkout event arrives.
 */
export async function applyChargeRefunded(tx: Queryable, event: StripeEvent): Promise<HandlerOutcome> {
  const charge = event.data.object;
  const paymentIntent = readStripeId(charge.payment_intent);
  const chargeId = readStripeId(charge.id);
  const amount = charge.amount;
  const amountRefunded = charge.amount_refunded;
  if (!paymentIntent || !chargeId) return unmatched('charge has no id or payment_intent');
  if (!isCents(amount) || amount === 0 || !isCents(amountRefunded)) return unmatched('charge amount or amount_refunded is not a whole number of cents');

  const { rows: refundRows } = await tx.query<RefundState>(
    `INSERT INTO charge_refunds (payment_intent, charge_id, amount, amount_refunded) VALUES ($1, $2, $3, $4)
     ON CONFLICT (payment_intent) DO UPDATE
       SET amount_refunded = GREATEST(charge_refunds.amount_refunded, EXCLUDED.amount_refunded), updated_at = now()
     RETURNING amount, amount_refunded AS "amountRefunded"`,
    [paymentIntent, chargeId, amount, amountRefunded],
  );
  const { rows } = await tx.query<PaidPurchase>(
    `SELECT id, user_id AS "userId", stripe_checkout_session_id AS "sessionId", credits, credits_refunded AS "creditsRefunded"
     FROM credit_purchases WHERE payment_intent = $1 AND status = 'paid' FOR UPDATE`,
    [paymentIntent],
  );
  const purchase = rows[0];
  if (!purchase) return unmatched('no paid credit purchase for this payment yet; the refund is kept and applied if one arrives');
  await settleRefund(tx, purchase, refundRows[0]!, event.id);
  return { status: 'processed', userId: purchase.userId };
}

/**
 * Claws back credits in proportion to the refunded share of the charge, rounded down (a full refund takes
 * every credit). The purchased balance may go below zero when the credits were already spent: the debt is
 * visible in the ledger and blocks spending until the user buys again.
 */
export async function settleRefund(tx: Queryable, purchase: PaidPurchase, refund: RefundState, stripeEventId: string): Promise<void> {
  const refundedShare = Math.min(refund.amountRefunded, refund.amount);
  const creditsToRefund = Math.floor((purchase.credits * refundedShare) / refund.amount);
  const delta = creditsToRefund - purchase.creditsRefunded;
  if (delta <= 0) return;
  await tx.query('UPDATE credit_purchases SET credits_refunded = $2, amount_refunded = $3 WHERE id = $1', [purchase.id, creditsToRefund, refundedShare]);
  await adjustCredits(tx, {
    userId: purchase.userId,
    bucket: 'purchased',
    delta: -delta,
    reason: 'refund',
    stripeEventId,
    sourceId: purchase.sessionId,
  });
}

function isCents(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
