import type { Queryable } from '../db';
import { fromSqlOutcome, type HandlerOutcome, type SqlOutcome } from './outcome';
import type { ObjectSource } from './source';

/** Refunds, disputes and the purchase they take credits back from are serialised per payment (see claimEvent). */
export const paymentLockKey = (paymentIntentId: string) => `payment:${paymentIntentId}`;

/**
 * Takes back (or gives back) a purchase's credits after a refund or dispute of its payment changed: the rule is
 * credit_settle_take_back (migration 004), recomputed from everything known about the payment, so each event
 * only moves the difference. If the credits were spent already, the purchased balance goes below zero: the debt
 * is visible in the ledger and blocks spending until the user buys again. A payment that bought no credits is
 * told apart: a subscription invoice's (its credits stay: see README) or one not known (yet), which a later
 * purchase applies.
 */
export async function settlePurchaseTakeBack(tx: Queryable, paymentIntentId: string, source: ObjectSource): Promise<HandlerOutcome> {
  const { rows } = await tx.query<SqlOutcome>('SELECT * FROM credit_settle_take_back($1, $2)', [paymentIntentId, source.eventId ?? null]);
  return fromSqlOutcome(rows[0]!);
}
