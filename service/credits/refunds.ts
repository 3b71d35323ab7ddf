import type { Queryable } from '../db';
import { unsuccessfulRefundStatuses, type Charge, type Refund } from '../stripe/payments';
import { fromSqlOutcome, unmatched, type HandlerOutcome, type SqlOutcome } from './outcome';
import type { ObjectSource } from './source';

// The rules are SQL functions (migration 004): credit_record_refund, credit_record_charge_refunded. Here their
// arguments are read from Stripe's objects; a webhook event passes the same ones to credit_event_refund or
// credit_event_charge_refunded, which claim the event and apply the rule in one call.

const storedRefund = (refund: Refund) => ({ id: refund.id, amount: refund.amount, status: refund.status, counted: !unsuccessfulRefundStatuses.has(refund.status) });

/** credit_record_refund's arguments before the event id; undefined when the refund names no payment (unmatched). */
export function refundArguments(refund: Refund): unknown[] | undefined {
  if (!refund.paymentIntentId) return undefined;
  const stored = storedRefund(refund);
  return [stored.id, refund.paymentIntentId, refund.chargeId ?? null, stored.amount, stored.status, stored.counted];
}

/**
 * refund.created / refund.updated / refund.failed / charge.refund.updated: the refund is kept by its id with
 * its amount and status, and the purchase's credits follow the sum of its refunds that are not failed or
 * canceled (a failed refund gives its credits back).
 */
export async function recordRefund(tx: Queryable, refund: Refund, source: ObjectSource): Promise<HandlerOutcome> {
  const args = refundArguments(refund);
  if (!args) return unmatched('refund has no payment_intent: it cannot be matched to a purchase');
  const { rows } = await tx.query<SqlOutcome>('SELECT * FROM credit_record_refund($1, $2, $3, $4, $5, $6, $7)', [...args, source.eventId ?? null]);
  return fromSqlOutcome(rows[0]!);
}

/** Why charge.refunded applies nothing, if it does not. */
export function chargeRefundedProblem(charge: Charge): string | undefined {
  if (!charge.paymentIntentId) return 'charge has no payment_intent: it cannot be matched to a purchase';
  if (charge.amount === 0) return 'charge amount is 0: nothing was paid';
  return undefined;
}

/** credit_record_charge_refunded's payment, charge, amount and amount_refunded (the refunds list follows the report time). */
export const chargeArguments = (charge: Charge): unknown[] => [charge.paymentIntentId, charge.id, charge.amount, charge.amountRefunded];
export const embeddedRefunds = (charge: Charge): string => JSON.stringify(charge.refunds.map(storedRefund));

/**
 * charge.refunded: the charge's amount and cumulative `amount_refunded` (current API versions carry no list
 * of refunds; older ones do, and each is kept as a refund). The newest report of the cumulative amount counts,
 * and decides only until refund objects of the payment are known.
 */
export async function recordChargeRefunded(tx: Queryable, charge: Charge, source: ObjectSource): Promise<HandlerOutcome> {
  const problem = chargeRefundedProblem(charge);
  if (problem) return unmatched(problem);
  const { rows } = await tx.query<SqlOutcome>('SELECT * FROM credit_record_charge_refunded($1, $2, $3, $4, $5, $6, $7)', [
    ...chargeArguments(charge),
    source.asOfSeconds,
    embeddedRefunds(charge),
    source.eventId ?? null,
  ]);
  return fromSqlOutcome(rows[0]!);
}
