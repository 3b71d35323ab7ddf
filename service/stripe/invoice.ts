/**
 * An invoice as `invoice.*` events (and the API) carry it. From API 2025-03-31.basil an invoice names its
 * subscription in `parent.subscription_details`, each line its subscription item in `parent` and its price in
 * `pricing.price_details`; before, `invoice.subscription`, `line.type`, `line.price`. Both are read.
 */
import { isObject, listData, readMetadata, readPeriod, readPrice, readQuantity, readStripeId, readText, readWholeNumber, type Period, type PriceRef } from './fields';

/** A line billing a subscription item: its regular charge for a period, or a proration of a change. */
export interface SubscriptionLine {
  price: PriceRef;
  quantity: number;
  period: Period;
  /** Cents; negative for the credit of unused time on a replaced price. */
  amount: number;
  proration: boolean;
}

export interface Invoice {
  id: string;
  status: string;
  subscriptionId: string | undefined;
  customerId: string | undefined;
  /** The subscription's metadata as the invoice copied it. */
  subscriptionMetadata: Record<string, unknown>;
  amountPaid: number;
  /** Only the legacy shape names the payment; basil links it through `invoice_payment` objects. */
  paymentIntentId: string | undefined;
  lines: SubscriptionLine[];
  /** True when Stripe left lines out of the event (more than it embeds). */
  linesTruncated: boolean;
}

/** Reads an invoice object; undefined when it has no id. */
export function readInvoice(object: Record<string, unknown>): Invoice | undefined {
  const id = readStripeId(object.id);
  if (!id) return undefined;
  const parent = isObject(object.parent) ? object.parent : undefined;
  const subscriptionDetails = isObject(parent?.subscription_details) ? parent.subscription_details : undefined;
  const legacyDetails = isObject(object.subscription_details) ? object.subscription_details : undefined;
  const lines: SubscriptionLine[] = [];
  for (const line of listData(object.lines)) {
    const read = readSubscriptionLine(line);
    if (read) lines.push(read);
  }
  return {
    id,
    status: readText(object.status) ?? 'unknown',
    subscriptionId: readStripeId(subscriptionDetails?.subscription) ?? readStripeId(object.subscription),
    customerId: readStripeId(object.customer),
    subscriptionMetadata: readMetadata(subscriptionDetails ?? legacyDetails),
    amountPaid: readWholeNumber(object.amount_paid) ?? 0,
    paymentIntentId: readStripeId(object.payment_intent),
    lines,
    linesTruncated: isObject(object.lines) && object.lines.has_more === true,
  };
}

/** A line of a subscription item (basil `parent`, or legacy `type`); other lines (one-off items) are undefined. */
function readSubscriptionLine(line: Record<string, unknown>): SubscriptionLine | undefined {
  const parent = isObject(line.parent) ? line.parent : undefined;
  let proration: boolean;
  let price: PriceRef | undefined;
  if (parent) {
    const itemDetails = isObject(parent.subscription_item_details) ? parent.subscription_item_details : undefined;
    const invoiceItemDetails = isObject(parent.invoice_item_details) ? parent.invoice_item_details : undefined;
    if (parent.type === 'subscription_item_details' && itemDetails) proration = itemDetails.proration === true;
    // A pending proration of a subscription change, billed on a later invoice.
    else if (parent.type === 'invoice_item_details' && invoiceItemDetails?.proration === true && invoiceItemDetails.subscription) proration = true;
    else return undefined;
    const pricing = isObject(line.pricing) ? line.pricing : undefined;
    price = readPrice(isObject(pricing?.price_details) ? pricing.price_details.price : undefined);
  } else {
    if (line.type === 'subscription') proration = line.proration === true;
    else if (line.type === 'invoiceitem' && line.proration === true && line.subscription) proration = true;
    else return undefined;
    price = readPrice(line.price) ?? readPrice(line.plan);
  }
  const period = isObject(line.period) ? readPeriod(line.period.start, line.period.end) : undefined;
  const amount = typeof line.amount === 'number' && Number.isSafeInteger(line.amount) ? line.amount : 0;
  if (!price || !period) return undefined;
  return { price, quantity: readQuantity(line.quantity), period, amount, proration };
}

/** `invoice_payment.paid`: which payment paid which invoice (basil invoices no longer name their payment). */
export interface InvoicePayment {
  invoiceId: string;
  paymentIntentId: string | undefined;
  status: string;
}

export function readInvoicePayment(object: Record<string, unknown>): InvoicePayment | undefined {
  const invoiceId = readStripeId(object.invoice);
  if (!invoiceId) return undefined;
  const payment = isObject(object.payment) ? object.payment : undefined;
  return { invoiceId, paymentIntentId: readStripeId(payment?.payment_intent), status: readText(object.status) ?? 'unknown' };
}
