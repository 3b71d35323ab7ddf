/**
 * One customer's subscription told as Stripe tells it: the subscription's states (`customer.subscription.*`),
 * its paid invoices (`invoice.paid`, with the regular line of a period, prorations, or a $0 trial line) and the
 * Checkout session that names its user. Built with the local Stripe's builders, in either API shape.
 */
import { randomUUID } from 'node:crypto';
import type Stripe from 'stripe';
import {
  DEFAULT_BILLING_PERIOD_SECONDS,
  invoice,
  stripeEvent,
  stripeId,
  subscription,
  subscriptionCheckoutSession,
  type InvoiceLineOptions,
  type InvoiceShape,
  type LegacySubscription,
  type SubscriptionShape,
} from './stripeFixtures';

export interface PlanPrice {
  priceId: string;
  /** `metadata.monthly_credits` of the price. */
  monthlyCredits: number;
  /** Cents per month. */
  unitAmount: number;
}

/** A monthly price with its credits in its metadata, as a merchant sets it up in Stripe. */
export function planPrice(monthlyCredits: number, unitAmount = monthlyCredits * 10, priceId = stripeId('price')): PlanPrice {
  return { priceId, monthlyCredits, unitAmount };
}

export interface Period {
  start: number;
  end: number;
}

/** Billing period n of a monthly subscription starting at `firstStart` (Unix seconds). */
export const monthlyPeriod = (firstStart: number, n: number): Period => ({
  start: firstStart + n * DEFAULT_BILLING_PERIOD_SECONDS,
  end: firstStart + (n + 1) * DEFAULT_BILLING_PERIOD_SECONDS,
});

export interface StateOptions {
  period: Period;
  plan: PlanPrice;
  quantity?: number;
  status?: Stripe.Subscription.Status;
  /** `pause_collection` set (behavior `void`): Stripe keeps the status active but collects nothing. */
  collectionPaused?: boolean;
  cancelAtPeriodEnd?: boolean;
  trialEnd?: number;
  metadata?: Record<string, string>;
}

type SubscriptionEventType = 'customer.subscription.created' | 'customer.subscription.updated' | 'customer.subscription.deleted';

export interface EventOptions {
  /** Unix seconds. */
  created: number;
  id?: string;
}

export class SubscriptionStory {
  readonly user: string;
  readonly id = stripeId('sub');
  readonly customer: string;
  readonly createdSeconds: number;
  readonly shape: SubscriptionShape;
  readonly invoiceShape: InvoiceShape;

  constructor(options: { user?: string; customer?: string; createdSeconds: number; shape?: SubscriptionShape; invoiceShape?: InvoiceShape }) {
    this.user = options.user ?? `user_${randomUUID()}`;
    this.customer = options.customer ?? stripeId('cus');
    this.createdSeconds = options.createdSeconds;
    this.shape = options.shape ?? 'items';
    this.invoiceShape = options.invoiceShape ?? 'parent';
  }

  /** The subscription object in a state. */
  state(options: StateOptions): Stripe.Subscription | LegacySubscription {
    const status = options.status ?? 'active';
    const overrides = {
      id: this.id,
      customer: this.customer,
      created: this.createdSeconds,
      status,
      metadata: options.metadata ?? {},
      pause_collection: options.collectionPaused ? { behavior: 'void' as const, resumes_at: null } : null,
      cancel_at_period_end: options.cancelAtPeriodEnd ?? false,
      trial_start: options.trialEnd === undefined ? null : options.period.start,
      trial_end: options.trialEnd ?? null,
    };
    const fields = {
      priceId: options.plan.priceId,
      monthlyCredits: options.plan.monthlyCredits,
      periodStart: options.period.start,
      periodEnd: options.period.end,
      quantity: options.quantity,
    };
    const built = this.shape === 'legacy' ? subscription(overrides, { ...fields, shape: 'legacy' }) : subscription(overrides, fields);
    for (const item of built.items.data) item.price.unit_amount = options.plan.unitAmount;
    return built;
  }

  event(type: SubscriptionEventType, options: StateOptions & EventOptions) {
    const state = this.state(type === 'customer.subscription.deleted' ? { ...options, status: 'canceled' } : options);
    return stripeEvent(type, state, { created: options.created, id: options.id });
  }

  /** The Checkout session of the sign-up, naming the user (client_reference_id). */
  signUp(options: EventOptions & { user?: string }) {
    return stripeEvent(
      'checkout.session.completed',
      subscriptionCheckoutSession({ client_reference_id: options.user ?? this.user, customer: this.customer, subscription: this.id, created: options.created }),
      { created: options.created, id: options.id },
    );
  }

  /**
   * invoice.paid for the state's period: its regular line by default, or the given lines (prorations of a
   * change, a $0 trial line).
   */
  paidInvoice(
    options: StateOptions & EventOptions & { billingReason?: Stripe.Invoice.BillingReason; lines?: InvoiceLineOptions[]; invoiceId?: string },
  ) {
    const state = this.state(options);
    const overrides = { id: options.invoiceId, billing_reason: options.billingReason ?? 'subscription_cycle', created: options.created };
    const built =
      this.invoiceShape === 'legacy'
        ? invoice(overrides, { shape: 'legacy', subscription: state, lines: this.linesWithCredits(options) })
        : invoice(overrides, { subscription: state, lines: options.lines });
    return stripeEvent('invoice.paid', built, { created: options.created, id: options.id });
  }

  /** The legacy shape embeds each line's price with its metadata: the plan's credits go with it. */
  private linesWithCredits(options: StateOptions & { lines?: InvoiceLineOptions[] }): InvoiceLineOptions[] {
    return (options.lines ?? [{}]).map((line) => ({ monthlyCredits: line.priceId === undefined ? options.plan.monthlyCredits : undefined, ...line }));
  }
}
