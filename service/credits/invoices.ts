import type { Queryable } from '../db';
import type { Invoice, InvoicePayment } from '../stripe/invoice';
import { allowanceOf, priceUnits, unknownPriceReason } from './allowance';
import type { CreditCatalog } from './catalog';
import { readUserId, unmatched, type HandlerOutcome } from './outcome';
import type { ObjectSource } from './source';
import { settleSubscriptionCredits, type StoredInvoiceLine } from './subscriptionCredits';
import { rememberSubscription } from './subscriptions';

// An invoice is stored once: the same invoice brought again (redelivery, another event, an API read, a replay)
// finds it and changes nothing, so its period is paid once.
const storeInvoiceSql = `
  INSERT INTO subscription_invoices (id, subscription_id, lines, latest_line_start, amount_paid)
  VALUES ($1, $2, $3::jsonb, to_timestamp($4), $5)
  ON CONFLICT (id) DO NOTHING`;

// A regular (not prorated) subscription line bills a whole billing period: that period exists from now on,
// even before the subscription event that moves to it arrives.
const recordPeriodSql = `
  INSERT INTO subscription_periods (subscription_id, period_start, period_end) VALUES ($1, to_timestamp($2), to_timestamp($3))
  ON CONFLICT (subscription_id, period_start) DO UPDATE SET period_end = GREATEST(subscription_periods.period_end, EXCLUDED.period_end)`;

/**
 * A paid subscription invoice (invoice.paid, or an invoice read from the Stripe API): it pays for the billing
 * period its subscription lines are in, which earns that period's allowance (a $0 trial invoice earns the
 * trial's). Credit lines for unused time on a replaced price are left out: they pay for nothing.
 */
export async function applyPaidInvoice(tx: Queryable, invoice: Invoice, source: ObjectSource, catalog: CreditCatalog): Promise<HandlerOutcome> {
  if (invoice.status !== 'paid') return { status: 'ignored', reason: `invoice is ${invoice.status}, not paid` };
  if (!invoice.subscriptionId) return { status: 'ignored', reason: 'invoice of no subscription: it sells no credits' };
  const lines = invoice.lines.filter((line) => line.amount >= 0);
  if (lines.length === 0) return { status: 'processed', note: 'invoice has no subscription line to pay for a period' };

  const stored: StoredInvoiceLine[] = lines.map((line) => ({ ...priceUnits(line.price, line.quantity), start: line.period.start }));
  await tx.query(storeInvoiceSql, [invoice.id, invoice.subscriptionId, JSON.stringify(stored), Math.max(...stored.map((line) => line.start)), invoice.amountPaid]);
  for (const line of lines.filter((candidate) => !candidate.proration)) {
    await tx.query(recordPeriodSql, [invoice.subscriptionId, line.period.start, line.period.end]);
  }
  if (invoice.paymentIntentId) await recordPaymentOfInvoice(tx, invoice.paymentIntentId, invoice.id);

  const known = await rememberSubscription(tx, invoice.subscriptionId, invoice.customerId, readUserId(invoice.subscriptionMetadata.user_id));
  if (!known.userId) return unmatched("invoice's subscription has no known user yet; the invoice is kept and applied when its Checkout session arrives");
  const outcome = await settleSubscriptionCredits(tx, known.userId, source, catalog);
  const { unknownPrices } = allowanceOf(stored, catalog, known.priceCredits);
  // Basil lines name a price by id only: its metadata comes with the subscription's own events.
  if (unknownPrices.length > 0 && known.stateKnown) return unmatched(unknownPriceReason(unknownPrices), known.userId);
  if (unknownPrices.length > 0) return { status: 'processed', userId: known.userId, note: "credits follow when the subscription's state brings its prices" };
  if (invoice.linesTruncated && outcome.status === 'processed') return { ...outcome, note: 'the event embedded only some of the invoice lines; credits follow those' };
  return outcome;
}

async function recordPaymentOfInvoice(tx: Queryable, paymentIntentId: string, invoiceId: string): Promise<void> {
  await tx.query('INSERT INTO invoice_payments (payment_intent, invoice_id) VALUES ($1, $2) ON CONFLICT (payment_intent) DO NOTHING', [paymentIntentId, invoiceId]);
}

/**
 * invoice_payment.paid: remembers which payment paid a subscription invoice, so that its refunds and disputes are
 * known to be a subscription's (see purchaseTakeBack.ts) rather than waiting for a purchase.
 */
export async function recordInvoicePayment(tx: Queryable, payment: InvoicePayment): Promise<HandlerOutcome> {
  if (!payment.paymentIntentId) return { status: 'ignored', reason: 'invoice payment without a payment intent (paid out of band)' };
  await recordPaymentOfInvoice(tx, payment.paymentIntentId, payment.invoiceId);
  return { status: 'processed', note: `payment of invoice ${payment.invoiceId}` };
}
