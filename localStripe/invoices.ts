/**
 * Subscription invoices as `invoice.*` events carry them. From API 2025-03-31.basil an invoice names its
 * subscription in `parent.subscription_details.subscription`, and each line in
 * `parent.subscription_item_details` with its price in `pricing.price_details`. The 'legacy' shape (earlier
 * versions) has `invoice.subscription` and `line.subscription`/`price` instead.
 */
import type Stripe from 'stripe';
import { blankAddress, DEFAULT_BILLING_PERIOD_SECONDS, mergeDeep, stripeId, wireDecimal, type DeepPartial } from './buildingBlocks';
import { DEFAULT_CUSTOMER_EMAIL, DEFAULT_CUSTOMER_NAME } from './checkoutSessions';
import { subscription as buildSubscription, type LegacySubscription } from './subscriptions';

/** A draft invoice is finalized (and charged) about an hour after it is created. */
const DRAFT_FINALIZES_AFTER_SECONDS = 60 * 60;
/** Smart Retries try a failed invoice again a few days later. */
const RETRY_AFTER_SECONDS = 3 * 24 * 60 * 60;
/** Invoice numbers are the account's prefix and a sequence. */
const INVOICE_NUMBER_PREFIX = 'C0FFEE42';

export type InvoiceShape = 'parent' | 'legacy';

export interface InvoiceOptions {
  /** 'parent' (API 2025-03-31.basil and later, default) or 'legacy' (earlier versions). */
  shape?: InvoiceShape;
  /** The subscription billed: the invoice takes its id, customer, mode, metadata, first item's price and
   *  current period. Default: a fresh active subscription starting now. */
  subscription?: Stripe.Subscription | LegacySubscription;
  /** The invoice's subscription lines, when not the one regular line of the first item (prorations of a plan
   *  change, a $0 trial line, another quantity). Amounts, totals and `amount_paid` follow these lines. */
  lines?: InvoiceLineOptions[];
}

/** One line billing the subscription's first item (or another price of it, after a plan change). */
export interface InvoiceLineOptions {
  /** Default: the first item's price. */
  priceId?: string;
  /** Default: the first item's quantity. */
  quantity?: number;
  /** Cents. Default: the price's unit amount × quantity; negative for a credit of unused time. */
  amount?: number;
  /** Default: the subscription's current period. */
  period?: { start: number; end: number };
  /** A proration of a change within the period ("Remaining time on …", "Unused time on …"). Default false. */
  proration?: boolean;
  /** `metadata.monthly_credits` of the line's price, which only the legacy shape embeds. */
  monthlyCredits?: number;
}

type LegacyLineFields = {
  type: 'subscription';
  subscription: string;
  subscription_item: string;
  proration: boolean;
  price: Stripe.Price;
  plan: Stripe.Plan | null;
};
export type LegacyInvoiceLineItem = Omit<Stripe.InvoiceLineItem, 'parent' | 'pricing' | 'subscription'> & LegacyLineFields;
/** An invoice as API versions before 2025-03-31.basil render it. */
export type LegacyInvoice = Omit<Stripe.Invoice, 'parent' | 'lines'> & {
  subscription: string;
  subscription_details: { metadata: Stripe.Metadata | null };
  paid: boolean;
  charge: string | null;
  payment_intent: string | null;
  lines: Stripe.ApiList<LegacyInvoiceLineItem>;
};

type InvoiceStatus = 'draft' | 'open' | 'paid' | 'uncollectible' | 'void';

/**
 * An invoice of one subscription item, 'paid' by card and billed for 'subscription_create' by default.
 * Amounts, attempts and status timestamps follow `status`. The first invoice of a subscription covers
 * the moment it was created (`period_start` = `period_end`); a renewal ('subscription_cycle') covers the
 * period just ended. The line's `period` is always the subscription's current period.
 */
export function invoice(overrides?: DeepPartial<Stripe.Invoice>, options?: InvoiceOptions & { shape?: 'parent' }): Stripe.Invoice;
export function invoice(overrides: DeepPartial<Stripe.Invoice> | undefined, options: InvoiceOptions & { shape: 'legacy' }): LegacyInvoice;
export function invoice(overrides: DeepPartial<Stripe.Invoice> = {}, options: InvoiceOptions = {}): Stripe.Invoice | LegacyInvoice {
  const sub = options.subscription ?? buildSubscription({ livemode: overrides.livemode ?? false });
  const item = sub.items.data[0];
  if (!item) throw new Error('invoice() needs a subscription with at least one item');
  const period =
    'current_period_start' in item
      ? { start: item.current_period_start, end: item.current_period_end }
      : { start: (sub as LegacySubscription).current_period_start, end: (sub as LegacySubscription).current_period_end };
  const id = overrides.id ?? stripeId('in');
  const status = (overrides.status ?? 'paid') as InvoiceStatus;
  const billingReason = overrides.billing_reason ?? 'subscription_create';
  const created = overrides.created ?? period.start;
  const livemode = overrides.livemode ?? sub.livemode;
  const customer = typeof sub.customer === 'string' ? sub.customer : sub.customer.id;
  const finalized = status !== 'draft';
  const paid = status === 'paid';
  const invoicedPeriod =
    billingReason === 'subscription_create' ? { start: created, end: created } : { start: period.start - DEFAULT_BILLING_PERIOD_SECONDS, end: period.start };
  const invoiceUrl = `https://invoice.stripe.com/i/acct_1Credits0000Example/${livemode ? 'live' : 'test'}_${id.slice(3)}`;
  const lineOptions = options.lines ?? [{}];
  const lines = lineOptions.map((lineOption) => invoiceLine(id, sub.id, item, period, livemode, lineOption));
  const total = lines.reduce((sum, line) => sum + line.amount, 0);
  const amountDue = Math.max(total, 0);
  const defaults: Stripe.Invoice = {
    id,
    object: 'invoice',
    account_country: 'US',
    account_name: 'Credits Example',
    account_tax_ids: null,
    amount_due: amountDue,
    amount_overpaid: 0,
    amount_paid: paid ? amountDue : 0,
    amount_remaining: paid ? 0 : amountDue,
    amount_shipping: 0,
    application: null,
    attempt_count: finalized && status !== 'void' ? 1 : 0,
    attempted: finalized && status !== 'void',
    auto_advance: status === 'draft' || status === 'open',
    automatic_tax: { disabled_reason: null, enabled: false, liability: null, provider: null, status: null },
    automatically_finalizes_at: finalized ? null : created + DRAFT_FINALIZES_AFTER_SECONDS,
    billing_reason: billingReason,
    collection_method: 'charge_automatically',
    created,
    currency: item.price.currency,
    custom_fields: null,
    customer,
    customer_account: null,
    customer_address: { ...blankAddress(), country: 'US', postal_code: '94107' },
    customer_email: DEFAULT_CUSTOMER_EMAIL,
    customer_name: DEFAULT_CUSTOMER_NAME,
    customer_phone: null,
    customer_shipping: null,
    customer_tax_exempt: 'none',
    customer_tax_ids: [],
    default_payment_method: null,
    default_source: null,
    default_tax_rates: [],
    description: null,
    discounts: [],
    due_date: null,
    effective_at: finalized ? created : null,
    ending_balance: finalized ? 0 : null,
    footer: null,
    from_invoice: null,
    hosted_invoice_url: finalized ? invoiceUrl : null,
    invoice_pdf: finalized ? `${invoiceUrl}/pdf` : null,
    issuer: { type: 'self' },
    last_finalization_error: null,
    latest_revision: null,
    lines: { object: 'list', data: lines, has_more: false, url: `/v1/invoices/${id}/lines` },
    livemode,
    metadata: {},
    next_payment_attempt: status === 'draft' ? created + DRAFT_FINALIZES_AFTER_SECONDS : status === 'open' ? created + RETRY_AFTER_SECONDS : null,
    number: finalized ? `${INVOICE_NUMBER_PREFIX}-0001` : null,
    on_behalf_of: null,
    parent: {
      quote_details: null,
      subscription_details: { metadata: structuredClone(sub.metadata), subscription: sub.id },
      type: 'subscription_details',
    },
    payment_settings: { default_mandate: null, payment_method_options: null, payment_method_types: null },
    period_end: invoicedPeriod.end,
    period_start: invoicedPeriod.start,
    post_payment_credit_notes_amount: 0,
    pre_payment_credit_notes_amount: 0,
    receipt_number: null,
    rendering: null,
    shipping_cost: null,
    shipping_details: null,
    starting_balance: 0,
    statement_descriptor: null,
    status,
    status_transitions: {
      finalized_at: finalized ? created : null,
      marked_uncollectible_at: status === 'uncollectible' ? created : null,
      paid_at: paid ? created : null,
      voided_at: status === 'void' ? created : null,
    },
    subtotal: total,
    subtotal_excluding_tax: total,
    test_clock: null,
    total,
    total_discount_amounts: [],
    total_excluding_tax: total,
    total_pretax_credit_amounts: [],
    total_taxes: [],
    webhooks_delivered_at: finalized ? created : null,
  };
  const built = mergeDeep(defaults, overrides);
  return options.shape === 'legacy' ? toLegacyShape(built, sub.id, item, lineOptions) : built;
}

type InvoicedItem = { id: string; price: Stripe.Price; plan?: Stripe.Plan | null; quantity?: number };

/** A subscription line as basil renders it: its item in `parent`, its price in `pricing`. */
function invoiceLine(
  invoiceId: string,
  subscriptionId: string,
  item: InvoicedItem,
  period: { start: number; end: number },
  livemode: boolean,
  options: InvoiceLineOptions,
): Stripe.InvoiceLineItem {
  const linePrice = lineItemPrice(item, options);
  const quantity = options.quantity ?? item.quantity ?? 1;
  const amount = options.amount ?? (linePrice.unit_amount ?? 0) * quantity;
  const proration = options.proration ?? false;
  const linePeriod = options.period ?? period;
  const label = `${quantity} × ${linePrice.nickname ?? 'Credits plan'}`;
  const description = proration
    ? `${amount < 0 ? 'Unused' : 'Remaining'} time on ${label} after ${new Date(linePeriod.start * 1000).toUTCString()}`
    : `${label} (at ${formatAmount(linePrice)} / ${linePrice.recurring?.interval ?? 'month'})`;
  return {
    id: stripeId('il'),
    object: 'line_item',
    amount,
    currency: linePrice.currency,
    description,
    discount_amounts: [],
    discountable: true,
    discounts: [],
    invoice: invoiceId,
    livemode,
    metadata: {},
    parent: {
      invoice_item_details: null,
      subscription_item_details: {
        invoice_item: null,
        proration,
        proration_details: { credited_items: null },
        subscription: subscriptionId,
        subscription_item: item.id,
      },
      type: 'subscription_item_details',
    },
    period: linePeriod,
    pretax_credit_amounts: [],
    pricing: {
      price_details: { price: linePrice.id, product: typeof linePrice.product === 'string' ? linePrice.product : linePrice.product.id },
      type: 'price_details',
      unit_amount_decimal: linePrice.unit_amount_decimal,
    },
    quantity,
    quantity_decimal: wireDecimal(quantity),
    // Moved to `parent.subscription_item_details.subscription` in basil: a reader must not find it here.
    subscription: null,
    subtotal: amount,
    taxes: [],
  };
}

/** The first item's price, or another price of the same product (a plan change), with its legacy metadata. */
function lineItemPrice(item: InvoicedItem, options: InvoiceLineOptions): Stripe.Price {
  const metadata = options.monthlyCredits === undefined ? undefined : { monthly_credits: String(options.monthlyCredits) };
  const base = options.priceId === undefined || options.priceId === item.price.id ? item.price : { ...item.price, id: options.priceId, metadata: {} };
  return metadata === undefined ? base : { ...base, metadata };
}

/** "$20.00", as Stripe writes amounts in line descriptions. */
function formatAmount(price: Stripe.Price): string {
  return new Intl.NumberFormat('en-US', { style: 'currency', currency: price.currency }).format((price.unit_amount ?? 0) / 100);
}

function toLegacyShape(built: Stripe.Invoice, subscriptionId: string, item: InvoicedItem, lineOptions: InvoiceLineOptions[]): LegacyInvoice {
  const { parent, lines, ...rest } = built;
  const legacyLines = lines.data.map((line, index): LegacyInvoiceLineItem => {
    const { parent: _parent, pricing: _pricing, subscription: _subscription, ...lineRest } = line;
    const options = lineOptions[index] ?? {};
    const linePrice = lineItemPrice(item, options);
    const plan = linePrice.id === item.price.id ? (item.plan ?? null) : null;
    return { ...lineRest, type: 'subscription', subscription: subscriptionId, subscription_item: item.id, proration: options.proration ?? false, price: linePrice, plan };
  });
  return {
    ...rest,
    subscription: subscriptionId,
    subscription_details: { metadata: parent?.subscription_details?.metadata ?? null },
    paid: built.status === 'paid',
    charge: built.status === 'paid' ? stripeId('ch') : null,
    payment_intent: built.status === 'draft' ? null : stripeId('pi'),
    lines: { ...lines, data: legacyLines },
  };
}

/**
 * The payment of an invoice (`invoice_payment.paid`): from API 2025-03-31.basil the only object naming both the
 * invoice and its payment intent. Paid in full by default, for the invoice's `amount_paid`.
 */
export function invoicePayment(paidInvoice: { id: string; amount_paid: number; currency: string; livemode: boolean }, overrides: DeepPartial<Stripe.InvoicePayment> = {}): Stripe.InvoicePayment {
  const created = overrides.created ?? Math.floor(Date.now() / 1000);
  const defaults: Stripe.InvoicePayment = {
    id: stripeId('inpay'),
    object: 'invoice_payment',
    amount_paid: paidInvoice.amount_paid,
    amount_requested: paidInvoice.amount_paid,
    created,
    currency: paidInvoice.currency,
    invoice: paidInvoice.id,
    is_default: true,
    livemode: paidInvoice.livemode,
    payment: { type: 'payment_intent', payment_intent: stripeId('pi') },
    status: 'paid',
    status_transitions: { canceled_at: null, paid_at: created },
  };
  return mergeDeep(defaults, overrides);
}
