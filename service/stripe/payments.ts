/** Charges, refunds and disputes: what happens to a card payment after it succeeded. */
import { listData, readStripeId, readText, readWholeNumber } from './fields';

/** What refunds and disputes share: money going back (or in question) on one payment. */
interface PaymentReversal {
  id: string;
  /** Cents. */
  amount: number;
  status: string;
  chargeId: string | undefined;
  paymentIntentId: string | undefined;
}

function readPaymentReversal(object: Record<string, unknown>, statusWhenAbsent: string): PaymentReversal | undefined {
  const id = readStripeId(object.id);
  const amount = readWholeNumber(object.amount);
  if (!id || amount === undefined) return undefined;
  return {
    id,
    amount,
    status: readText(object.status) ?? statusWhenAbsent,
    chargeId: readStripeId(object.charge),
    paymentIntentId: readStripeId(object.payment_intent),
  };
}

export type Refund = PaymentReversal;

/** Refund statuses after which the money stays with the merchant (the refund gave nothing back). */
export const unsuccessfulRefundStatuses: ReadonlySet<string> = new Set(['failed', 'canceled']);

export function readRefund(object: Record<string, unknown>): Refund | undefined {
  return readPaymentReversal(object, 'pending');
}

export interface Charge {
  id: string;
  /** Cents. */
  amount: number;
  /** Cumulative, of refunds not failed or canceled. */
  amountRefunded: number;
  paymentIntentId: string | undefined;
  /** Only API versions before 2022-11-15 embed the refunds; later ones leave the list out. */
  refunds: Refund[];
}

export function readCharge(object: Record<string, unknown>): Charge | undefined {
  const id = readStripeId(object.id);
  const amount = readWholeNumber(object.amount);
  const amountRefunded = readWholeNumber(object.amount_refunded);
  if (!id || amount === undefined || amountRefunded === undefined) return undefined;
  const paymentIntentId = readStripeId(object.payment_intent);
  const refunds = listData(object.refunds)
    .map(readRefund)
    .filter((refund) => refund !== undefined)
    .map((refund) => ({ ...refund, chargeId: refund.chargeId ?? id, paymentIntentId: refund.paymentIntentId ?? paymentIntentId }));
  return { id, amount, amountRefunded, paymentIntentId, refunds };
}

export type Dispute = PaymentReversal;

/** Closed in the merchant's favour (or an inquiry closed without a chargeback): the money comes back. */
export const disputeStatusesReturningMoney: ReadonlySet<string> = new Set(['won', 'warning_closed', 'prevented']);

/**
 * Where a status sits in a dispute's life: open (0), under appeal after it was lost (1), decided (2). Orders two
 * reports of the same second; otherwise the newer report wins (a lost dispute can be appealed and then won).
 */
export function disputeStage(status: string): number {
  if (status.startsWith('appeal_')) return 1;
  return ['won', 'lost', 'warning_closed', 'prevented'].includes(status) ? 2 : 0;
}

export function readDispute(object: Record<string, unknown>): Dispute | undefined {
  return readPaymentReversal(object, 'needs_response');
}
