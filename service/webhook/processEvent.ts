import type { CreditCatalog } from '../credits/catalog';
import { checkoutLockKey, fulfilCheckoutSession, needsLineItems, purchaseArguments, resolveCheckoutCredits, type CreditsResolution, type LineItemsFetcher } from '../credits/checkout';
import { recordDispute } from '../credits/disputes';
import { applyPaidInvoice, recordInvoicePayment } from '../credits/invoices';
import { fromSqlOutcome, unmatched, type HandlerOutcome, type SqlOutcome } from '../credits/outcome';
import { paymentLockKey } from '../credits/purchaseTakeBack';
import { chargeArguments, chargeRefundedProblem, embeddedRefunds, recordChargeRefunded, recordRefund, refundArguments } from '../credits/refunds';
import { apiReadSource, eventSource } from '../credits/source';
import { recordSubscriptionState, subscriptionLockKey } from '../credits/subscriptions';
import { isRetryableConflict, type Database, type PreparedStatement, type Queryable } from '../db';
import type { StripeEvent } from '../stripe/event';
import { readStripeId, readText } from '../stripe/fields';
import { readInvoice, readInvoicePayment } from '../stripe/invoice';
import { readCharge, readDispute, readRefund } from '../stripe/payments';
import { readSubscription, type Subscription } from '../stripe/subscription';
import { claimEvent, isEventRecorded, setEventOutcome } from './eventLog';
import { isHandledEventType, type HandledEventType } from './handledEventTypes';

/** Reads a subscription's current state from the Stripe API; undefined when Stripe has no such subscription. */
export type SubscriptionFetcher = (subscriptionId: string) => Promise<Record<string, unknown> | undefined>;

export interface EventContext {
  catalog: CreditCatalog;
  /** Present when a Stripe API key is configured. */
  fetchLineItems: LineItemsFetcher | undefined;
  /** Present when a Stripe API key is configured: decides between two subscription states of the same second. */
  fetchSubscription?: SubscriptionFetcher;
}

export type EventResult =
  | { status: 'processed'; userId?: string }
  | { status: 'duplicate' }
  | { status: 'ignored'; reason: string }
  | { status: 'unmatched'; reason: string; userId?: string };

/** What was read from Stripe before the transaction (no connection waits on the network). */
interface Facts {
  credits: CreditsResolution | undefined;
  /**
   * The subscription as Stripe has it now, read when two of its events share one second, and when Stripe
   * answered (Unix milliseconds); null when Stripe has no such subscription (then the events' own order decides,
   * as without an API key).
   */
  currentSubscription: { state: Subscription; readAtMillis: number } | null | undefined;
}

/**
 * An event applied in one round trip: an event function (migrations 004, 006) that claims the event (with the
 * handler's lock), applies the rule and records the outcome; `args` follow the event's own.
 */
interface OneCall {
  eventFunction: 'credit_event_purchase' | 'credit_event_refund' | 'credit_event_charge_refunded';
  args: unknown[];
}

interface EventHandler {
  /** Serialises transactions about the same Stripe object so none misses what another committed. */
  lockKey(object: Record<string, unknown>): string | undefined;
  apply(tx: Queryable, event: StripeEvent, facts: Facts, context: EventContext): Promise<HandlerOutcome>;
  /** The hot paths: the whole event as one call, when the rule needs no read before deciding. */
  oneCall?(event: StripeEvent, facts: Facts, context: EventContext): OneCall | undefined;
}

/** Thrown inside the transaction (rolling it back) when Stripe's current state of a subscription must be read first. */
class SubscriptionReadNeeded extends Error {
  constructor(readonly subscriptionId: string) {
    super(`two events of subscription ${subscriptionId} share one second: its current state is read from Stripe`);
  }
}

const byPayment = (object: Record<string, unknown>) => {
  const paymentIntent = readStripeId(object.payment_intent);
  return paymentIntent ? paymentLockKey(paymentIntent) : undefined;
};
const byId = (lockKey: (id: string) => string) => (object: Record<string, unknown>) => {
  const id = readStripeId(object.id);
  return id ? lockKey(id) : undefined;
};

const checkoutFulfilment = (event: StripeEvent, facts: Facts, context: EventContext) => ({
  credits: facts.credits,
  paymentFailed: event.type === 'checkout.session.async_payment_failed',
  catalog: context.catalog,
});

const checkout: EventHandler = {
  lockKey: checkoutLockKey,
  apply: (tx, event, facts, context) => fulfilCheckoutSession(tx, event.data.object, eventSource(event), checkoutFulfilment(event, facts, context)),
  oneCall(event, facts, context) {
    if (event.data.object.mode !== 'payment') return undefined;
    const args = purchaseArguments(event.data.object, checkoutFulfilment(event, facts, context));
    return Array.isArray(args) ? { eventFunction: 'credit_event_purchase', args: [...args, readText(event.data.object.status) ?? null] } : undefined;
  },
};

const subscriptionState: EventHandler = {
  lockKey: byId(subscriptionLockKey),
  async apply(tx, event, facts, context) {
    const subscription = readSubscription(event.data.object);
    if (!subscription) return unmatched('subscription has no id');
    const deleted = event.type === 'customer.subscription.deleted';
    const recorded = await recordSubscriptionState(tx, subscription, eventSource(event), context.catalog, { deleted });
    if (!recorded.tied || !context.fetchSubscription || facts.currentSubscription === null) return recorded.outcome;
    // Stripe's advice for events of the same second: ask Stripe for the object's current state.
    if (!facts.currentSubscription) throw new SubscriptionReadNeeded(subscription.id);
    const { state, readAtMillis } = facts.currentSubscription;
    return (await recordSubscriptionState(tx, state, apiReadSource(readAtMillis, event.id, event.created), context.catalog)).outcome;
  },
};

const invoiceSubscription = (object: Record<string, unknown>) => {
  const subscriptionId = readInvoice(object)?.subscriptionId;
  return subscriptionId ? subscriptionLockKey(subscriptionId) : undefined;
};

const refund: EventHandler = {
  lockKey: byPayment,
  apply: async (tx, event) => {
    const read = readRefund(event.data.object);
    return read ? recordRefund(tx, read, eventSource(event)) : unmatched('refund has no id or amount');
  },
  oneCall(event) {
    const read = readRefund(event.data.object);
    const args = read && refundArguments(read);
    return args ? { eventFunction: 'credit_event_refund', args } : undefined;
  },
};

const dispute: EventHandler = {
  lockKey: byPayment,
  apply: async (tx, event) => {
    const read = readDispute(event.data.object);
    return read ? recordDispute(tx, read, eventSource(event)) : unmatched('dispute has no id or amount');
  },
};

const handlers: Record<HandledEventType, EventHandler> = {
  'checkout.session.completed': checkout,
  'checkout.session.async_payment_succeeded': checkout,
  'checkout.session.async_payment_failed': checkout,
  'customer.subscription.created': subscriptionState,
  'customer.subscription.updated': subscriptionState,
  'customer.subscription.deleted': subscriptionState,
  'invoice.paid': {
    lockKey: invoiceSubscription,
    apply: async (tx, event, _facts, context) => {
      const read = readInvoice(event.data.object);
      return read ? applyPaidInvoice(tx, read, eventSource(event), context.catalog) : unmatched('invoice has no id');
    },
  },
  'invoice_payment.paid': {
    lockKey: (object) => {
      const paymentIntent = readInvoicePayment(object)?.paymentIntentId;
      return paymentIntent ? paymentLockKey(paymentIntent) : undefined;
    },
    apply: async (tx, event) => {
      const read = readInvoicePayment(event.data.object);
      return read ? recordInvoicePayment(tx, read) : unmatched('invoice payment names no invoice');
    },
  },
  'charge.refunded': {
    lockKey: byPayment,
    apply: async (tx, event) => {
      const read = readCharge(event.data.object);
      return read ? recordChargeRefunded(tx, read, eventSource(event)) : unmatched('charge has no id, amount or amount_refunded');
    },
    oneCall(event) {
      const read = readCharge(event.data.object);
      if (!read || chargeRefundedProblem(read)) return undefined;
      return { eventFunction: 'credit_event_charge_refunded', args: [...chargeArguments(read), embeddedRefunds(read)] };
    },
  },
  'refund.created': refund,
  'refund.updated': refund,
  'refund.failed': refund,
  'charge.refund.updated': refund,
  'charge.dispute.created': dispute,
  'charge.dispute.closed': dispute,
};

const isCheckoutEvent = (type: string) => type.startsWith('checkout.session.');

/**
 * Applies one authentic event exactly once: the event row, the credits and the ledger commit in one
 * transaction, or nothing does. Safe under concurrent copies of the same event on several replicas. An event
 * recorded `unmatched` is applied again when it comes again (redelivery, replay): the rules' own keys make
 * every grant happen once.
 */
export async function processEvent(db: Database, event: StripeEvent, context: EventContext): Promise<EventResult> {
  if (!isHandledEventType(event.type)) {
    // One statement is its own transaction.
    const fresh = await claimEvent(db, event, 'ignored');
    return fresh ? { status: 'ignored', reason: 'event type not handled' } : { status: 'duplicate' };
  }
  const handler = handlers[event.type];
  const object = event.data.object;
  // Anything that may call Stripe happens before the transaction, so no connection waits on the network;
  // and a duplicate costs no call to Stripe. (The claim below still decides, should two copies race.)
  const checkoutEvent = isCheckoutEvent(event.type);
  if (checkoutEvent && needsLineItems(object) && (await isEventRecorded(db, event.id))) return { status: 'duplicate' };
  const facts: Facts = {
    credits: checkoutEvent ? await resolveCheckoutCredits(object, context.catalog, context.fetchLineItems) : undefined,
    currentSubscription: undefined,
  };
  const call = handler.oneCall?.(event, facts, context);
  if (call) return applyInOneCall(db, event, handler.lockKey(object), call);
  for (;;) {
    try {
      return await db.withTransaction(async (tx): Promise<EventResult> => {
        if (!(await claimEvent(tx, event, 'processed', handler.lockKey(object)))) return { status: 'duplicate' };
        const outcome = await handler.apply(tx, event, facts, context);
        if (outcome.status !== 'processed') await setEventOutcome(tx, event.id, outcome.status, outcome.reason);
        else if (outcome.note) await setEventOutcome(tx, event.id, 'processed', outcome.note);
        return outcome;
      });
    } catch (error) {
      if (!(error instanceof SubscriptionReadNeeded) || !context.fetchSubscription || facts.currentSubscription !== undefined) throw error;
      const fetched = await context.fetchSubscription(error.subscriptionId);
      const readAtMillis = Date.now();
      const current = fetched === undefined ? null : readSubscription(fetched);
      if (current === undefined || (current && current.id !== error.subscriptionId)) throw new Error(`Stripe answered no subscription ${error.subscriptionId}`, { cause: error });
      facts.currentSubscription = current && { state: current, readAtMillis };
    }
  }
}

const maxOneCallAttempts = 3;

/** Each event function's call, prepared once per connection under the function's name and arity. */
const eventFunctionCalls = new Map<string, PreparedStatement>();

function eventFunctionCall(eventFunction: OneCall['eventFunction'], parameterCount: number): PreparedStatement {
  const name = `${eventFunction}_${parameterCount}`;
  let call = eventFunctionCalls.get(name);
  if (!call) {
    const placeholders = Array.from({ length: parameterCount }, (_, i) => `$${i + 1}`).join(', ');
    call = { name, text: `SELECT * FROM ${eventFunction}(${placeholders})` };
    eventFunctionCalls.set(name, call);
  }
  return call;
}

/** The event, its rule and its outcome as one statement in autocommit (its own transaction); retried like a transaction. */
async function applyInOneCall(db: Database, event: StripeEvent, lockKey: string | undefined, call: OneCall): Promise<EventResult> {
  const params = [event.id, event.type, event.livemode, event.created, lockKey ?? null, ...call.args];
  const statement = eventFunctionCall(call.eventFunction, params.length);
  for (let attempt = 1; ; attempt++) {
    try {
      const { rows } = await db.query<SqlOutcome>(statement, params);
      return rows[0]!.result_status === 'duplicate' ? { status: 'duplicate' } : fromSqlOutcome(rows[0]!);
    } catch (error) {
      if (attempt < maxOneCallAttempts && isRetryableConflict(error)) continue;
      throw error;
    }
  }
}
