/**
 * Builders of real-shaped Stripe objects and webhook deliveries for tests.
 *
 * Every builder starts from a deep copy of the object Stripe's own mock server answers with
 * (shared/stripe-fixtures/*.json, beside this repository), gives it fresh unique ids, sets the
 * fields our service reads to coherent defaults, and finally merges the caller's deep-partial
 * overrides on top (plain objects merge; arrays, null and scalars replace).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type Stripe from 'stripe';

/** /work/main/service/test/support → /work/shared/stripe-fixtures (shared/ sits beside the clone). */
export const STRIPE_FIXTURES_DIR = path.resolve(__dirname, '../../../../shared/stripe-fixtures');

export const DEFAULT_EVENT_API_VERSION = '2025-03-31.basil';
export const DEFAULT_AMOUNT_CENTS = 1000;
export const DEFAULT_CURRENCY = 'usd';
const SECONDS_PER_DAY = 24 * 60 * 60;
export const DEFAULT_BILLING_PERIOD_SECONDS = 30 * SECONDS_PER_DAY;
const CHECKOUT_SESSION_LIFETIME_SECONDS = SECONDS_PER_DAY;
const ID_RANDOM_BYTES = 12;

const STRIPE_WEBHOOK_USER_AGENT = 'Stripe/1.0 (+https://stripe.com/docs/webhooks)';
const STRIPE_WEBHOOK_CONTENT_TYPE = 'application/json; charset=utf-8';

/** The fixture files and the stripe-node type each one holds. */
export interface StripeFixtureTypes {
  'checkout.session': Stripe.Checkout.Session;
  subscription: Stripe.Subscription;
  subscription_item: Stripe.SubscriptionItem;
  charge: Stripe.Charge;
  refund: Stripe.Refund;
  price: Stripe.Price;
  customer: Stripe.Customer;
  event: Stripe.Event;
  webhook_endpoint: Stripe.WebhookEndpoint;
  deleted_webhook_endpoint: Stripe.DeletedWebhookEndpoint;
  invoice: Stripe.Invoice;
  payment_intent: Stripe.PaymentIntent;
  dispute: Stripe.Dispute;
}
export type StripeFixtureName = keyof StripeFixtureTypes;

// Checked first so Stripe's branded `string & {}` ("OtherString") stays a string.
type Primitive = string | number | boolean | bigint | symbol | null | undefined;

/** Plain objects become optional all the way down; arrays are replaced whole. */
export type DeepPartial<T> = T extends Primitive | readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

const fixtureCache = new Map<StripeFixtureName, unknown>();

/** A fresh deep copy of one fixture file, exactly as Stripe shapes it. */
export function stripeFixture<K extends StripeFixtureName>(name: K): StripeFixtureTypes[K] {
  let parsed = fixtureCache.get(name);
  if (parsed === undefined) {
    const file = path.join(STRIPE_FIXTURES_DIR, `${name}.json`);
    parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    fixtureCache.set(name, parsed);
  }
  return structuredClone(parsed) as StripeFixtureTypes[K];
}

/** `cs_test_9f…`, `evt_1a…`: a Stripe-style id that is unique per call. */
export function stripeId(prefix: string): string {
  return `${prefix}_${crypto.randomBytes(ID_RANDOM_BYTES).toString('hex')}`;
}

export function unixSeconds(epochMillis: number = Date.now()): number {
  return Math.floor(epochMillis / 1000);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Returns `base` with `overrides` merged in; undefined overrides are skipped, override values are copied. */
export function mergeDeep<T>(base: T, ...overrides: Array<NoInfer<DeepPartial<T>> | undefined>): T {
  let result: unknown = base;
  for (const override of overrides) {
    result = mergeValue(result, override);
  }
  return result as T;
}

function mergeValue(base: unknown, override: unknown): unknown {
  if (override === undefined) {
    return base;
  }
  if (!isPlainObject(base) || !isPlainObject(override)) {
    return structuredClone(override);
  }
  const merged: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(override)) {
    merged[key] = mergeValue(base[key], value);
  }
  return merged;
}

// ---------------------------------------------------------------------------------------------
// Checkout sessions

/** A paid one-off purchase (mode 'payment', status 'complete') of DEFAULT_AMOUNT_CENTS in usd. */
export function checkoutSession(
  overrides: DeepPartial<Stripe.Checkout.Session> = {},
): Stripe.Checkout.Session {
  const livemode = overrides.livemode ?? false;
  const created = overrides.created ?? unixSeconds();
  const defaults: DeepPartial<Stripe.Checkout.Session> = {
    id: stripeId(livemode ? 'cs_live' : 'cs_test'),
    object: 'checkout.session',
    created,
    expires_at: created + CHECKOUT_SESSION_LIFETIME_SECONDS,
    livemode,
    mode: 'payment',
    payment_status: 'paid',
    status: 'complete',
    amount_subtotal: DEFAULT_AMOUNT_CENTS,
    amount_total: DEFAULT_AMOUNT_CENTS,
    currency: DEFAULT_CURRENCY,
    client_reference_id: null,
    metadata: {},
    customer: null,
    payment_intent: stripeId('pi'),
    subscription: null,
    invoice: null,
    // A completed session has no payable URL; the fixture's sample amounts would contradict ours.
    url: null,
    after_expiration: null,
    recovered_from: null,
    shipping_address_collection: null,
    shipping_cost: null,
    currency_conversion: null,
    total_details: { amount_discount: 0, amount_shipping: 0, amount_tax: 0 },
  };
  return mergeDeep(stripeFixture('checkout.session'), defaults, overrides);
}

/** A paid subscription sign-up: customer and subscription set, no payment intent (the invoice pays). */
export function subscriptionCheckoutSession(
  overrides: DeepPartial<Stripe.Checkout.Session> = {},
): Stripe.Checkout.Session {
  const subscriptionDefaults: DeepPartial<Stripe.Checkout.Session> = {
    mode: 'subscription',
    payment_status: 'paid',
    customer: stripeId('cus'),
    subscription: stripeId('sub'),
    invoice: stripeId('in'),
    payment_intent: null,
  };
  return checkoutSession(mergeDeep(subscriptionDefaults, overrides));
}

// ---------------------------------------------------------------------------------------------
// Prices and subscriptions

export interface PriceOptions {
  /** Sets `metadata.monthly_credits` (as Stripe stores metadata: a string). */
  monthlyCredits?: number;
}

/** A monthly recurring price of 2000 cents (the fixture's), with a fresh `price_…` id. */
export function price(overrides: DeepPartial<Stripe.Price> = {}, options: PriceOptions = {}): Stripe.Price {
  const defaults: DeepPartial<Stripe.Price> = {
    id: stripeId('price'),
    created: unixSeconds(),
    product: stripeId('prod'),
    transform_quantity: null,
    metadata:
      options.monthlyCredits === undefined ? {} : { monthly_credits: String(options.monthlyCredits) },
  };
  return mergeDeep(stripeFixture('price'), defaults, overrides);
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
  const itemPrice = price(
    { id: options.priceId ?? stripeId('price'), livemode },
    { monthlyCredits: options.monthlyCredits },
  );
  const plan: DeepPartial<Stripe.Plan> = {
    id: itemPrice.id,
    object: 'plan',
    active: true,
    amount: itemPrice.unit_amount,
    amount_decimal: itemPrice.unit_amount_decimal,
    billing_scheme: 'per_unit',
    created: itemPrice.created,
    currency: itemPrice.currency,
    interval: 'month',
    interval_count: 1,
    livemode,
    metadata: itemPrice.metadata,
    product: itemPrice.product,
    transform_usage: null,
    usage_type: 'licensed',
  };
  const defaults: DeepPartial<Stripe.SubscriptionItem> = {
    id: stripeId('si'),
    created: unixSeconds(),
    price: itemPrice,
    plan,
    quantity: 1,
    subscription: options.subscriptionId ?? stripeId('sub'),
    current_period_start: periodStart,
    current_period_end: options.periodEnd ?? periodStart + DEFAULT_BILLING_PERIOD_SECONDS,
    billing_thresholds: null,
  };
  return mergeDeep(stripeFixture('subscription_item'), defaults, overrides);
}

/**
 * An active subscription with one item. The period is on `items.data[0]` (shape 'items', default)
 * or on the subscription itself (shape 'legacy'), never on both.
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
  const item = subscriptionItem(
    {},
    {
      subscriptionId: id,
      livemode,
      priceId: options.priceId,
      monthlyCredits: options.monthlyCredits,
      periodStart,
      periodEnd,
    },
  );
  const defaults: DeepPartial<Stripe.Subscription> = {
    id,
    object: 'subscription',
    livemode,
    created,
    start_date: created,
    billing_cycle_anchor: periodStart,
    customer: stripeId('cus'),
    status: options.status ?? 'active',
    items: {
      object: 'list',
      data: [item],
      has_more: false,
      url: `/v1/subscription_items?subscription=${id}`,
    },
    latest_invoice: stripeId('in'),
    metadata: {},
    // The fixture's sample values describe a cancelled, trialling, paused subscription; ours is plainly active.
    cancel_at: null,
    canceled_at: null,
    cancel_at_period_end: false,
    ended_at: null,
    trial_start: null,
    trial_end: null,
    pause_collection: null,
    pending_update: null,
    next_pending_invoice_item_invoice: null,
    billing_cycle_anchor_config: null,
    transfer_data: null,
  };
  const built = mergeDeep(stripeFixture('subscription'), defaults, overrides);
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

// ---------------------------------------------------------------------------------------------
// Charges and refunds

/** A captured, paid card charge of DEFAULT_AMOUNT_CENTS with nothing refunded. */
export function charge(overrides: DeepPartial<Stripe.Charge> = {}): Stripe.Charge {
  const id = overrides.id ?? stripeId('ch');
  const amount = overrides.amount ?? DEFAULT_AMOUNT_CENTS;
  const defaults: DeepPartial<Stripe.Charge> = {
    id,
    object: 'charge',
    created: unixSeconds(),
    livemode: false,
    amount,
    amount_captured: amount,
    amount_refunded: 0,
    captured: true,
    paid: true,
    refunded: false,
    status: 'succeeded',
    currency: DEFAULT_CURRENCY,
    payment_intent: stripeId('pi'),
    balance_transaction: stripeId('txn'),
    metadata: {},
    outcome: {
      network_status: 'approved_by_network',
      reason: null,
      seller_message: 'Payment complete.',
      type: 'authorized',
    },
    refunds: { object: 'list', data: [], has_more: false, url: `/v1/charges/${id}/refunds` },
    // Charges made through PaymentIntents carry no legacy source and, without Connect, no transfer.
    source: null,
    transfer_data: null,
  };
  return mergeDeep(stripeFixture('charge'), defaults, overrides);
}

/** A succeeded refund of DEFAULT_AMOUNT_CENTS against a fresh charge id. */
export function refund(overrides: DeepPartial<Stripe.Refund> = {}): Stripe.Refund {
  const defaults: DeepPartial<Stripe.Refund> = {
    id: stripeId('re'),
    object: 'refund',
    created: unixSeconds(),
    amount: DEFAULT_AMOUNT_CENTS,
    currency: DEFAULT_CURRENCY,
    charge: stripeId('ch'),
    payment_intent: stripeId('pi'),
    status: 'succeeded',
    metadata: {},
  };
  return mergeDeep(stripeFixture('refund'), defaults, overrides);
}

// ---------------------------------------------------------------------------------------------
// Events

export interface StripeEventOptions {
  id?: string;
  /** Unix seconds; default now. */
  created?: number;
  /** Default: `object.livemode`, else false. */
  livemode?: boolean;
  previousAttributes?: Record<string, unknown>;
  /** Default DEFAULT_EVENT_API_VERSION. */
  apiVersion?: string | null;
  pendingWebhooks?: number;
  /** Default `{ id: null, idempotency_key: null }`: an automatic event, not caused by an API request. */
  request?: Stripe.Event.Request | null;
}

/** An event whose type stripe-node does not know (e.g. to test that unknown types are ignored). */
export type UntypedStripeEvent = Omit<Stripe.EventBase, 'type' | 'data'> & {
  type: string;
  data: { object: object; previous_attributes?: Record<string, unknown> };
};

/** The stripe-node event type for a known event type string, e.g. Stripe.CheckoutSessionCompletedEvent. */
export type StripeEventOf<T extends string> = T extends Stripe.Event.Type
  ? Extract<Stripe.Event, { type: T }>
  : UntypedStripeEvent;

/** A full event as Stripe sends it; `data.object` is a snapshot (deep copy) of `object`. */
export function stripeEvent<T extends string>(
  type: T,
  object: object,
  options: StripeEventOptions = {},
): StripeEventOf<T> {
  const objectLivemode = 'livemode' in object && typeof object.livemode === 'boolean' ? object.livemode : undefined;
  const data: UntypedStripeEvent['data'] = { object: structuredClone(object) };
  if (options.previousAttributes !== undefined) {
    data.previous_attributes = structuredClone(options.previousAttributes);
  }
  const event: UntypedStripeEvent = {
    ...stripeFixture('event'),
    id: options.id ?? stripeId('evt'),
    object: 'event',
    api_version: options.apiVersion === undefined ? DEFAULT_EVENT_API_VERSION : options.apiVersion,
    created: options.created ?? unixSeconds(),
    data,
    livemode: options.livemode ?? objectLivemode ?? false,
    pending_webhooks: options.pendingWebhooks ?? 1,
    request: options.request === undefined ? { id: null, idempotency_key: null } : options.request,
    type,
  };
  return event as StripeEventOf<T>;
}

// ---------------------------------------------------------------------------------------------
// Signing and delivery

/**
 * The `Stripe-Signature` header exactly as Stripe builds it: `t=<ts>,v1=<hmac>[,v1=<hmac>…]`, where
 * each v1 is the hex HMAC-SHA256 of `<ts>.<payload>` under one active secret (several during a roll).
 */
export function signStripePayload(
  payload: string,
  secrets: readonly string[],
  timestampSeconds: number = unixSeconds(),
): string {
  if (secrets.length === 0) {
    throw new Error('signStripePayload needs at least one webhook signing secret');
  }
  if (!Number.isInteger(timestampSeconds)) {
    throw new RangeError('timestampSeconds must be a whole number of Unix seconds');
  }
  const signedPayload = `${timestampSeconds}.${payload}`;
  const signatures = secrets.map(
    (secret) => `v1=${crypto.createHmac('sha256', secret).update(signedPayload, 'utf8').digest('hex')}`,
  );
  return [`t=${timestampSeconds}`, ...signatures].join(',');
}

export interface WebhookDelivery {
  body: string;
  headers: {
    'content-type': typeof STRIPE_WEBHOOK_CONTENT_TYPE;
    'stripe-signature': string;
    'user-agent': typeof STRIPE_WEBHOOK_USER_AGENT;
  };
}

/** The body and headers of one webhook POST. Stripe pretty-prints the event with two spaces. */
export function signedDelivery(
  eventOrRawBody: object | string,
  secrets: readonly string[],
  options: { timestampSeconds?: number } = {},
): WebhookDelivery {
  const body = typeof eventOrRawBody === 'string' ? eventOrRawBody : JSON.stringify(eventOrRawBody, null, 2);
  return {
    body,
    headers: {
      'content-type': STRIPE_WEBHOOK_CONTENT_TYPE,
      'stripe-signature': signStripePayload(body, secrets, options.timestampSeconds),
      'user-agent': STRIPE_WEBHOOK_USER_AGENT,
    },
  };
}
