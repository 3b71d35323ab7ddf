/**
 * What the local Stripe sells and what happens when a customer pays: prices, Checkout Sessions, customers,
 * subscriptions and invoices, per mode, and the outcomes of the hosted checkout page (pay, decline, pay
 * later, then the delayed payment arriving or failing). Each outcome changes the objects and emits the events
 * Stripe emits for it (API 2025-03-31.basil: a subscription is created once its first payment succeeded),
 * with `created` seconds as Stripe gives them: several in the same second, the early steps a second before.
 */
import type Stripe from 'stripe';
import { invalidParam, resourceMissing, StripeApiError } from './apiConventions';
import { DEFAULT_CURRENCY, stripeId, unixSeconds } from './buildingBlocks';
import { checkoutLineItem, checkoutSession, DEFAULT_CUSTOMER_EMAIL, DEFAULT_CUSTOMER_NAME } from './checkoutSessions';
import { invoice, invoicePayment } from './invoices';
import { charge } from './payments';
import { price as buildPrice, subscription as buildSubscription } from './subscriptions';

/** Stripe's default: an unpaid Checkout Session expires after a day. */
export const CHECKOUT_SESSION_LIFETIME_SECONDS = 24 * 60 * 60;

export type CheckoutOutcome = 'pay' | 'decline' | 'pay_later';
export type DelayedPaymentOutcome = 'succeeded' | 'failed';

/** One event to emit: its type, the object as it is now, and Stripe's `previous_attributes` for updates. */
export interface EmittedEvent {
  type: string;
  object: object;
  created: number;
  previousAttributes?: Record<string, unknown>;
}

export interface NewPrice {
  id?: string;
  unitAmount: number;
  currency?: string;
  productName: string;
  /** A monthly recurring price (for subscriptions) instead of a one-time one. */
  recurring?: boolean;
  metadata?: Record<string, string>;
  livemode?: boolean;
}

export interface NewCheckoutSession {
  mode: 'payment' | 'subscription';
  lineItems: Array<{ price: string; quantity: number }>;
  successUrl: string;
  cancelUrl: string | null;
  clientReferenceId: string | null;
  metadata: Record<string, string>;
  subscriptionMetadata: Record<string, string>;
  customerEmail: string | null;
  expiresAt: number | null;
  livemode: boolean;
}

interface StoredSession {
  session: Stripe.Checkout.Session;
  lineItems: Stripe.LineItem[];
  subscriptionMetadata: Record<string, string>;
}

/** The parts of a PaymentIntent the local Stripe tracks (its events carry these fields). */
interface LocalPaymentIntent {
  id: string;
  object: 'payment_intent';
  amount: number;
  amount_received: number;
  currency: string;
  created: number;
  customer: string | null;
  latest_charge: string | null;
  livemode: boolean;
  metadata: Record<string, string>;
  payment_method_types: string[];
  status: 'requires_payment_method' | 'processing' | 'succeeded';
  last_payment_error: { code: string; decline_code?: string; message: string; type: 'card_error' } | null;
}

export class LocalCommerce {
  private readonly prices = new Map<string, { price: Stripe.Price; productName: string }>();
  private readonly sessions = new Map<string, StoredSession>();
  private readonly customers = new Map<string, { id: string; object: 'customer'; email: string; name: string; created: number; livemode: boolean; metadata: Record<string, string> }>();
  private readonly subscriptions = new Map<string, Stripe.Subscription>();
  private readonly invoices = new Map<string, Stripe.Invoice>();
  private readonly paymentIntents = new Map<string, LocalPaymentIntent>();

  constructor(
    /** Where the hosted page of a session lives: its `url` while it is open. */
    private readonly hostedPageUrl: (sessionId: string) => string,
    private readonly emit: (events: EmittedEvent[], livemode: boolean) => void,
    private readonly nowSeconds: () => number = () => unixSeconds(),
  ) {}

  reset(): void {
    for (const map of [this.prices, this.sessions, this.customers, this.subscriptions, this.invoices, this.paymentIntents]) map.clear();
  }

  // -- Prices --------------------------------------------------------------------------------------

  createPrice(input: NewPrice): Stripe.Price {
    if (!Number.isSafeInteger(input.unitAmount) || input.unitAmount < 0) throw invalidParam('unit_amount', `Invalid integer: ${input.unitAmount}`);
    const livemode = input.livemode ?? false;
    const id = input.id ?? stripeId('price');
    const created = buildPrice({
      id,
      livemode,
      currency: input.currency ?? DEFAULT_CURRENCY,
      unit_amount: input.unitAmount,
      nickname: input.productName,
      metadata: input.metadata ?? {},
      ...(input.recurring ? {} : { type: 'one_time', recurring: null }),
    });
    this.prices.set(id, { price: created, productName: input.productName });
    return structuredClone(created);
  }

  retrievePrice(id: string, livemode: boolean): Stripe.Price {
    const stored = this.prices.get(id);
    if (!stored || stored.price.livemode !== livemode) throw resourceMissing('price', id, { existsInLivemode: stored?.price.livemode });
    return structuredClone(stored.price);
  }

  listPrices(livemode: boolean): Stripe.Price[] {
    return [...this.prices.values()].filter(({ price }) => price.livemode === livemode).map(({ price }) => structuredClone(price)).reverse();
  }

  // -- Checkout Sessions ---------------------------------------------------------------------------

  createCheckoutSession(input: NewCheckoutSession): Stripe.Checkout.Session {
    if (input.lineItems.length === 0) throw invalidParam('line_items', 'Missing required param: line_items.', 'parameter_missing');
    const lineItems = input.lineItems.map((item, index) => this.lineItem(item, index, input));
    const currency = lineItems[0]!.currency;
    const amount = lineItems.reduce((sum, item) => sum + item.amount_total, 0);
    const created = this.nowSeconds();
    const expiresAt = input.expiresAt ?? created + CHECKOUT_SESSION_LIFETIME_SECONDS;
    const id = stripeId(input.livemode ? 'cs_live' : 'cs_test');
    const session = checkoutSession({
      id,
      livemode: input.livemode,
      mode: input.mode,
      created,
      expires_at: expiresAt,
      amount_subtotal: amount,
      amount_total: amount,
      currency,
      client_reference_id: input.clientReferenceId,
      metadata: input.metadata,
      success_url: input.successUrl,
      cancel_url: input.cancelUrl,
      customer_email: input.customerEmail,
      customer_creation: input.mode === 'payment' ? 'if_required' : null,
      payment_method_collection: input.mode === 'payment' ? 'if_required' : 'always',
      status: 'open',
      payment_status: 'unpaid',
      payment_intent: null,
      customer: null,
      customer_details: null,
      subscription: null,
      invoice: null,
      url: this.hostedPageUrl(id),
    });
    this.sessions.set(id, { session, lineItems, subscriptionMetadata: input.subscriptionMetadata });
    return structuredClone(session);
  }

  private lineItem(item: { price: string; quantity: number }, index: number, input: NewCheckoutSession): Stripe.LineItem {
    const stored = this.prices.get(item.price);
    if (!stored || stored.price.livemode !== input.livemode) {
      throw resourceMissing('price', item.price, { param: `line_items[${index}][price]`, status: 400, existsInLivemode: stored?.price.livemode });
    }
    const recurring = stored.price.type === 'recurring';
    if (recurring !== (input.mode === 'subscription')) {
      const message =
        input.mode === 'subscription'
          ? 'You must provide at least one recurring price in `subscription` mode when using prices.'
          : 'You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode or use only one-time prices.';
      throw invalidParam(`line_items[${index}][price]`, message);
    }
    if (!Number.isSafeInteger(item.quantity) || item.quantity < 1) throw invalidParam(`line_items[${index}][quantity]`, `Invalid integer: ${item.quantity}`);
    return checkoutLineItem(stored.price, item.quantity, stored.productName);
  }

  /** The session as the API returns it now: an open one past its expiry has expired. */
  retrieveCheckoutSession(id: string, livemode: boolean): Stripe.Checkout.Session {
    return structuredClone(this.storedSession(id, livemode).session);
  }

  checkoutLineItems(id: string, livemode: boolean): Stripe.LineItem[] | undefined {
    const stored = this.sessions.get(id);
    return stored && stored.session.livemode === livemode ? structuredClone(stored.lineItems) : undefined;
  }

  listCheckoutSessions(livemode: boolean, filter: { status?: string; customer?: string; subscription?: string; paymentIntent?: string }): Stripe.Checkout.Session[] {
    return [...this.sessions.keys()]
      .map((id) => this.sessions.get(id)!)
      .filter(({ session }) => session.livemode === livemode)
      .map(({ session }) => (this.expireIfDue(session), session))
      .filter(
        (session) =>
          (filter.status === undefined || session.status === filter.status) &&
          (filter.customer === undefined || session.customer === filter.customer) &&
          (filter.subscription === undefined || session.subscription === filter.subscription) &&
          (filter.paymentIntent === undefined || session.payment_intent === filter.paymentIntent),
      )
      .map((session) => structuredClone(session))
      .reverse();
  }

  expireCheckoutSession(id: string, livemode: boolean): Stripe.Checkout.Session {
    const { session } = this.storedSession(id, livemode);
    if (session.status !== 'open') throw invalidParam('session', `Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a status of "${session.status}".`);
    this.expire(session);
    return structuredClone(session);
  }

  private storedSession(id: string, livemode: boolean): StoredSession {
    const stored = this.sessions.get(id);
    if (!stored || stored.session.livemode !== livemode) throw resourceMissing('checkout.session', id, { param: 'session', existsInLivemode: stored?.session.livemode });
    this.expireIfDue(stored.session);
    return stored;
  }

  private expireIfDue(session: Stripe.Checkout.Session): void {
    if (session.status === 'open' && session.expires_at <= this.nowSeconds()) this.expire(session);
  }

  private expire(session: Stripe.Checkout.Session): void {
    session.status = 'expired';
    session.url = null;
    this.emit([{ type: 'checkout.session.expired', object: session, created: this.nowSeconds() }], session.livemode);
  }

  /** For the hosted page: the session and what it sells, whatever its mode's key. */
  hostedSession(id: string): StoredSession | undefined {
    const stored = this.sessions.get(id);
    if (stored) this.expireIfDue(stored.session);
    return stored;
  }

  // -- The hosted page's outcomes --------------------------------------------------------------------

  /** What the customer did on the hosted page; answers the session as it is afterwards. */
  completeCheckout(id: string, outcome: CheckoutOutcome): Stripe.Checkout.Session {
    const stored = this.sessions.get(id);
    if (!stored) throw resourceMissing('checkout.session', id, { param: 'session' });
    this.expireIfDue(stored.session);
    if (stored.session.status !== 'open') throw new StripeApiError(400, `This Checkout Session is ${stored.session.status}: it can no longer be paid.`);
    if (outcome === 'decline') this.decline(stored);
    else if (stored.session.mode === 'subscription') {
      if (outcome === 'pay_later') throw new StripeApiError(400, 'Pay later (a delayed payment method) is offered for one-off payments only.');
      this.paySubscription(stored);
    } else this.payOnce(stored, outcome === 'pay' ? 'succeeded' : 'processing');
    return structuredClone(stored.session);
  }

  /** The delayed payment of a session completed with "Pay later" arrives, or fails. */
  settleDelayedPayment(id: string, outcome: DelayedPaymentOutcome): Stripe.Checkout.Session {
    const stored = this.sessions.get(id);
    const intent = stored?.session.payment_intent ? this.paymentIntents.get(stored.session.payment_intent as string) : undefined;
    if (!stored || !intent || intent.status !== 'processing') throw new StripeApiError(400, `Checkout Session ${id} has no delayed payment on its way.`);
    const { session } = stored;
    const now = this.nowSeconds();
    if (outcome === 'succeeded') {
      const paid = this.succeed(intent, now);
      session.payment_status = 'paid';
      this.emit([...paid, { type: 'checkout.session.async_payment_succeeded', object: session, created: now }], session.livemode);
    } else {
      intent.status = 'requires_payment_method';
      intent.last_payment_error = { code: 'payment_intent_payment_attempt_failed', message: 'The payment failed.', type: 'card_error' };
      this.emit(
        [
          { type: 'payment_intent.payment_failed', object: intent, created: now },
          { type: 'checkout.session.async_payment_failed', object: session, created: now },
        ],
        session.livemode,
      );
    }
    return structuredClone(session);
  }

  private paymentIntentFor(session: Stripe.Checkout.Session, created: number): LocalPaymentIntent {
    const existing = typeof session.payment_intent === 'string' ? this.paymentIntents.get(session.payment_intent) : undefined;
    if (existing) return existing;
    const intent: LocalPaymentIntent = {
      id: stripeId('pi'),
      object: 'payment_intent',
      amount: session.amount_total ?? 0,
      amount_received: 0,
      currency: session.currency ?? DEFAULT_CURRENCY,
      created,
      customer: typeof session.customer === 'string' ? session.customer : null,
      latest_charge: null,
      livemode: session.livemode,
      metadata: {},
      payment_method_types: ['card'],
      status: 'requires_payment_method',
      last_payment_error: null,
    };
    this.paymentIntents.set(intent.id, intent);
    if (session.mode === 'payment') session.payment_intent = intent.id;
    return intent;
  }

  /** The charge succeeded: the PaymentIntent's and the charge's events. */
  private succeed(intent: LocalPaymentIntent, created: number): EmittedEvent[] {
    const paid = charge({ amount: intent.amount, currency: intent.currency, payment_intent: intent.id, livemode: intent.livemode, created, customer: intent.customer });
    Object.assign(intent, { status: 'succeeded', amount_received: intent.amount, latest_charge: paid.id, last_payment_error: null });
    return [
      { type: 'charge.succeeded', object: paid, created },
      { type: 'payment_intent.succeeded', object: intent, created },
    ];
  }

  private decline(stored: StoredSession): void {
    const now = this.nowSeconds();
    const intent = this.paymentIntentFor(stored.session, now);
    intent.last_payment_error = { code: 'card_declined', decline_code: 'generic_decline', message: 'Your card was declined.', type: 'card_error' };
    const failed = charge({
      amount: intent.amount,
      currency: intent.currency,
      payment_intent: intent.id,
      livemode: intent.livemode,
      created: now,
      status: 'failed',
      paid: false,
      captured: false,
      failure_code: 'card_declined',
      failure_message: 'Your card was declined.',
      outcome: { network_status: 'declined_by_network', reason: 'generic_decline', seller_message: 'The bank did not return any further details with this decline.', type: 'issuer_declined' },
    });
    // The session stays open: the customer may try another card.
    this.emit(
      [
        { type: 'charge.failed', object: failed, created: now },
        { type: 'payment_intent.payment_failed', object: intent, created: now },
      ],
      stored.session.livemode,
    );
  }

  private payOnce(stored: StoredSession, result: 'succeeded' | 'processing'): void {
    const { session } = stored;
    const now = this.nowSeconds();
    const intent = this.paymentIntentFor(session, now - 1);
    const events: EmittedEvent[] = [{ type: 'payment_intent.created', object: { ...intent }, created: now - 1 }];
    if (result === 'succeeded') {
      events.push(...this.succeed(intent, now));
      session.payment_status = 'paid';
    } else {
      intent.status = 'processing';
      events.push({ type: 'payment_intent.processing', object: intent, created: now });
    }
    this.complete(session);
    events.push({ type: 'checkout.session.completed', object: session, created: now });
    this.emit(events, session.livemode);
  }

  private paySubscription(stored: StoredSession): void {
    const { session } = stored;
    const now = this.nowSeconds();
    const livemode = session.livemode;
    const customer = {
      id: stripeId('cus'),
      object: 'customer' as const,
      email: session.customer_email ?? DEFAULT_CUSTOMER_EMAIL,
      name: DEFAULT_CUSTOMER_NAME,
      created: now - 1,
      livemode,
      metadata: {},
    };
    this.customers.set(customer.id, customer);
    session.customer = customer.id;
    const intent = this.paymentIntentFor(session, now - 1);
    intent.customer = customer.id;
    const paidEvents = this.succeed(intent, now);

    const item = stored.lineItems[0]!;
    const subscription = buildSubscription(
      { livemode, customer: customer.id, created: now, metadata: stored.subscriptionMetadata, default_payment_method: null },
      { priceId: item.price!.id, periodStart: now },
    );
    const subscriptionItem = subscription.items.data[0]!;
    subscriptionItem.price = structuredClone(item.price!);
    subscriptionItem.quantity = item.quantity ?? 1;
    const firstInvoice = invoice({ livemode, customer: customer.id, status: 'paid', billing_reason: 'subscription_create', created: now }, { subscription });
    subscription.latest_invoice = firstInvoice.id;
    // Created incomplete, active once its first invoice is paid: two states of the same second.
    const created = { ...structuredClone(subscription), status: 'incomplete' as const };
    const paymentMethod = stripeId('pm');
    subscription.default_payment_method = paymentMethod;
    // From basil the invoice no longer names its payment: the invoice payment links the two.
    const payment = invoicePayment(firstInvoice, { created: now, payment: { type: 'payment_intent', payment_intent: intent.id } });
    this.subscriptions.set(subscription.id, subscription);
    this.invoices.set(firstInvoice.id, firstInvoice);
    Object.assign(session, { subscription: subscription.id, invoice: firstInvoice.id, payment_status: 'paid' });
    this.complete(session);

    this.emit(
      [
        { type: 'customer.created', object: customer, created: now - 1 },
        { type: 'payment_intent.created', object: { ...intent, status: 'requires_payment_method' }, created: now - 1 },
        ...paidEvents,
        { type: 'customer.subscription.created', object: created, created: now },
        { type: 'invoice.created', object: { ...firstInvoice, status: 'draft' }, created: now },
        { type: 'invoice.finalized', object: { ...firstInvoice, status: 'open' }, created: now },
        { type: 'invoice.paid', object: firstInvoice, created: now },
        { type: 'invoice.payment_succeeded', object: firstInvoice, created: now },
        { type: 'invoice_payment.paid', object: payment, created: now },
        { type: 'customer.subscription.updated', object: subscription, created: now, previousAttributes: { status: 'incomplete', default_payment_method: null } },
        { type: 'checkout.session.completed', object: session, created: now },
      ],
      livemode,
    );
  }

  private complete(session: Stripe.Checkout.Session): void {
    session.status = 'complete';
    session.url = null;
    session.customer_details = {
      address: { city: null, country: 'US', line1: null, line2: null, postal_code: '94107', state: null },
      business_name: null,
      email: session.customer_email ?? DEFAULT_CUSTOMER_EMAIL,
      individual_name: null,
      name: DEFAULT_CUSTOMER_NAME,
      phone: null,
      tax_exempt: 'none',
      tax_ids: [],
    };
  }

  // -- Subscriptions, invoices, customers -------------------------------------------------------------

  putSubscription(subscription: Stripe.Subscription): void {
    this.subscriptions.set(subscription.id, structuredClone(subscription));
  }

  retrieveSubscription(id: string, livemode: boolean): Stripe.Subscription {
    const found = this.subscriptions.get(id);
    if (!found || found.livemode !== livemode) throw resourceMissing('subscription', id, { existsInLivemode: found?.livemode });
    return structuredClone(found);
  }

  listSubscriptions(livemode: boolean, filter: { customer?: string; status?: string; price?: string }): Stripe.Subscription[] {
    return [...this.subscriptions.values()]
      .filter((sub) => sub.livemode === livemode)
      .filter((sub) => filter.customer === undefined || sub.customer === filter.customer)
      // Like Stripe: without a status filter, canceled subscriptions are left out.
      .filter((sub) => (filter.status === undefined ? sub.status !== 'canceled' : filter.status === 'all' || sub.status === filter.status))
      .filter((sub) => filter.price === undefined || sub.items.data.some((item) => item.price.id === filter.price))
      .map((sub) => structuredClone(sub))
      .reverse();
  }

  retrieveInvoice(id: string, livemode: boolean): Stripe.Invoice {
    const found = this.invoices.get(id);
    if (!found || found.livemode !== livemode) throw resourceMissing('invoice', id, { existsInLivemode: found?.livemode });
    return structuredClone(found);
  }

  listInvoices(livemode: boolean, filter: { customer?: string; subscription?: string; status?: string }): Stripe.Invoice[] {
    return [...this.invoices.values()]
      .filter((found) => found.livemode === livemode)
      .filter((found) => filter.customer === undefined || found.customer === filter.customer)
      .filter((found) => filter.subscription === undefined || found.parent?.subscription_details?.subscription === filter.subscription)
      .filter((found) => filter.status === undefined || found.status === filter.status)
      .map((found) => structuredClone(found))
      .reverse();
  }

  retrieveCustomer(id: string, livemode: boolean): object {
    const found = this.customers.get(id);
    if (!found || found.livemode !== livemode) throw resourceMissing('customer', id, { existsInLivemode: found?.livemode });
    return structuredClone(found);
  }
}
