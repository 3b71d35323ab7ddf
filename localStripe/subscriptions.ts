/**
 * Prices, subscription items and subscriptions as `customer.subscription.*` events carry them. From API
 * 2025-03-31.basil the billing period lives on each item; the 'legacy' shape (earlier versions) keeps it
 * on the subscription, so both readers can be tested.
 */
import type Stripe from 'stripe';
import {
  DEFAULT_BILLING_PERIOD_SECONDS,
  DEFAULT_CURRENCY,
  mergeDeep,
  stripeId,
  unixSeconds,
  wireDecimal,
  type DeepPartial,
} from './buildingBlocks';

const DEFAULT_PLAN_AMOUNT_CENTS = 2000;

export interface PriceOptions {
  /** Sets `metadata.monthly_credits` (as Stripe stores metadata: a string). */
  monthlyCredits?: number;
}

/** A monthly recurring price of 2000 cents, with a fresh `price_…` id. */
export function price(overrides: DeepPartial<Stripe.Price> = {}, options: PriceOptions = {}): Stripe.Price {
  const unitAmount = overrides.unit_amount ?? DEFAULT_PLAN_AMOUNT_CENTS;
  const defaults: Stripe.Price = {
    id: stripeId('price'),
    object: 'price',
    active: true,
    billing_scheme: 'per_unit',
    created: unixSeconds(),
    currency: DEFAULT_CURRENCY,
    custom_unit_amount: null,
    livemode: false,
    lookup_key: null,
    metadata: options.monthlyCredits === undefined ? {} : { monthly_credits: String(options.monthlyCredits) },
    nickname: null,
    product: stripeId('prod'),
    recurring: { interval: 'month', interval_count: 1, meter: null, trial_period_days: null, usage_type: 'licensed' },
    tax_behavior: 'unspecified',
    tiers_mode: null,
    transform_quantity: null,
    type: 'recurring',
    unit_amount: unitAmount,
    unit_amount_decimal: unitAmount === null ? null : wireDecimal(unitAmount),
  };
  return mergeDeep(defaults, overrides);
}

/** The legacy `plan` Stripe still mirrors beside each recurring price. */
function planOf(itemPrice: Stripe.Price): Stripe.Plan {
  return {
    id: itemPrice.id,
    object: 'plan',
    active: itemPrice.active,
    amount: itemPrice.unit_amount,
    amount_decimal: itemPrice.unit_amount_decimal,
    billing_scheme: itemPrice.billing_scheme,
    created: itemPrice.created,
    currency: itemPrice.currency,
    interval: itemPrice.recurring?.interval ?? 'month',
    interval_count: itemPrice.recurring?.interval_count ?? 1,
    livemode: itemPrice.livemode,
    metadata: structuredClone(itemPrice.metadata),
    meter: null,
    nickname: itemPrice.nickname,
    product: itemPrice.product,
    tiers_mode: null,
    transform_usage: null,
    trial_period_days: null,
    usage_type: 'licensed',
  };
}

export type SubscriptionShape = 'items' | 'legacy';

export interface SubscriptionOptions {
  /** 'items' (API 2025-03-31.basil and later, default): the billing period lives on each item.
   *  'legacy' (earlier API versions): it lives on the subscription. */
  shape?: SubscriptionShape;
  priceId?: string;
  monthlyCredits?: number;
  /** Unix seconds; default now. */
  periodStart?: number;
  /** Unix seconds; default periodStart + DEFAULT_BILLING_PERIOD_SECONDS. */
  periodEnd?: number;
  status?: Stripe.Subscription.Status;
  /** Units of the price on the one item; default 1. */
  quantity?: number;
}

type PeriodFields = 'current_period_start' | 'current_period_end';
export type LegacySubscriptionItem = Omit<Stripe.SubscriptionItem, PeriodFields>;
/** A subscription as API versions before 2025-03-31.basil render it. */
export type LegacySubscription = Omit<Stripe.Subscription, 'items'> & {
  current_period_start: number;
  current_period_end: number;
  items: Stripe.ApiList<LegacySubscriptionItem>;
};

/** One subscription item whose price (and its mirrored legacy `plan`) has the given id. */
export function subscriptionItem(
  overrides: DeepPartial<Stripe.SubscriptionItem> = {},
  options: Omit<SubscriptionOptions, 'shape' | 'status'> & { subscriptionId?: string; livemode?: boolean } = {},
): Stripe.SubscriptionItem {
  const livemode = options.livemode ?? false;
  const periodStart = options.periodStart ?? unixSeconds();
  const itemPrice = price({ id: options.priceId ?? stripeId('price'), livemode }, { monthlyCredits: options.monthlyCredits });
  const defaults: Stripe.SubscriptionItem = {
    id: stripeId('si'),
    object: 'subscription_item',
    billing_thresholds: null,
    created: unixSeconds(),
    current_period_end: options.periodEnd ?? periodStart + DEFAULT_BILLING_PERIOD_SECONDS,
    current_period_start: periodStart,
    current_trial: null,
    discounts: [],
    metadata: {},
    plan: planOf(itemPrice),
    price: itemPrice,
    quantity: options.quantity ?? 1,
    subscription: options.subscriptionId ?? stripeId('sub'),
    tax_rates: [],
  };
  return mergeDeep(defaults, overrides);
}

/**
 * A subscription with one item, active by default and paid by card. The period is on `items.data[0]`
 * (shape 'items', default) or on the subscription itself (shape 'legacy'), never on both. A 'canceled'
 * one has ended now, at the customer's request.
 */
export function subscription(
  overrides?: DeepPartial<Stripe.Subscription>,
  options?: SubscriptionOptions & { shape?: 'items' },
): Stripe.Subscription;
export function subscription(
  overrides: DeepPartial<Stripe.Subscription> | undefined,
  options: SubscriptionOptions & { shape: 'legacy' },
): LegacySubscription;
export function subscription(
  overrides: DeepPartial<Stripe.Subscription> = {},
  options: SubscriptionOptions = {},
): Stripe.Subscription | LegacySubscription {
  const id = overrides.id ?? stripeId('sub');
  const livemode = overrides.livemode ?? false;
  const created = overrides.created ?? unixSeconds();
  const periodStart = options.periodStart ?? created;
  const periodEnd = options.periodEnd ?? periodStart + DEFAULT_BILLING_PERIOD_SECONDS;
  const status = overrides.status ?? options.status ?? 'active';
  const endedAt = status === 'canceled' ? unixSeconds() : null;
  const item = subscriptionItem(
    {},
    { subscriptionId: id, livemode, priceId: options.priceId, monthlyCredits: options.monthlyCredits, periodStart, periodEnd, quantity: options.quantity },
  );
  const defaults: Stripe.Subscription = {
    id,
    object: 'subscription',
    application: null,
    application_fee_percent: null,
    automatic_tax: { disabled_reason: null, enabled: false, liability: null },
    billing_cycle_anchor: periodStart,
    billing_cycle_anchor_config: null,
    billing_mode: { flexible: null, type: 'classic' },
    billing_schedules: [],
    billing_thresholds: null,
    cancel_at: null,
    cancel_at_period_end: false,
    canceled_at: endedAt,
    cancellation_details: {
      comment: null,
      feedback: null,
      feedback_option: null,
      reason: endedAt === null ? null : 'cancellation_requested',
    },
    collection_method: 'charge_automatically',
    created,
    currency: DEFAULT_CURRENCY,
    customer: stripeId('cus'),
    customer_account: null,
    days_until_due: null,
    default_payment_method: stripeId('pm'),
    default_source: null,
    default_tax_rates: [],
    description: null,
    discounts: [],
    ended_at: endedAt,
    invoice_settings: { account_tax_ids: null, custom_fields: null, description: null, footer: null, issuer: { type: 'self' } },
    items: { object: 'list', data: [item], has_more: false, url: `/v1/subscription_items?subscription=${id}` },
    latest_invoice: stripeId('in'),
    livemode,
    managed_payments: null,
    metadata: {},
    next_pending_invoice_item_invoice: null,
    on_behalf_of: null,
    pause_collection: null,
    payment_settings: { payment_method_options: null, payment_method_types: null, save_default_payment_method: 'off' },
    pending_invoice_item_interval: null,
    pending_setup_intent: null,
    pending_update: null,
    schedule: null,
    start_date: created,
    status,
    test_clock: null,
    transfer_data: null,
    trial_end: null,
    trial_settings: { end_behavior: { billing_cycle_anchor: null, missing_payment_method: 'create_invoice' } },
    trial_start: null,
  };
  const built = mergeDeep(defaults, overrides);
  return options.shape === 'legacy' ? toLegacyShape(built, periodStart, periodEnd) : built;
}

function toLegacyShape(sub: Stripe.Subscription, periodStart: number, periodEnd: number): LegacySubscription {
  const legacyItems = sub.items.data.map((item): LegacySubscriptionItem => {
    const { current_period_start: _start, current_period_end: _end, ...rest } = item;
    return rest;
  });
  return {
    ...sub,
    current_period_start: periodStart,
    current_period_end: periodEnd,
    items: { ...sub.items, data: legacyItems },
  };
}
