import { applyCheckoutSession, checkoutLockKey, needsLineItems, resolveCheckoutCredits, type CreditsResolution, type LineItemsFetcher } from '../credits/checkout';
import type { CreditCatalog } from '../credits/catalog';
import type { HandlerOutcome } from '../credits/outcome';
import { applyChargeRefunded, chargeLockKey } from '../credits/refunds';
import { applySubscriptionEvent, subscriptionEventLockKey } from '../credits/subscriptions';
import type { Database, Queryable } from '../db';
import { claimEvent, isEventRecorded, setEventOutcome } from './eventLog';
import { isHandledEventType, type HandledEventType } from './handledEventTypes';
import type { StripeEvent } from './stripeEvent';

export interface EventContext {
  catalog: CreditCatalog;
  /** Present when a Stripe API key is configured. */
  fetchLineItems: LineItemsFetcher | undefined;
}

export type EventResult =
  | { status: 'processed'; userId?: string }
  | { status: 'duplicate' }
  | { status: 'ignored'; reason: string }
  | { status: 'unmatched'; reason: string; userId?: string };

interface Facts {
  credits: CreditsResolution | undefined;
}

interface EventHandler {
  /** Serialises transactions about the same Stripe object so none misses what another committed. */
  lockKey(event: StripeEvent): string | undefined;
  apply(tx: Queryable, event: StripeEvent, facts: Facts, context: EventContext): Promise<HandlerOutcome>;
}

const checkout: EventHandler = { lockKey: checkoutLockKey, apply: (tx, event, facts) => applyCheckoutSession(tx, event, facts.credits) };
const subscription: EventHandler = { lockKey: subscriptionEventLockKey, apply: (tx, event, _facts, context) => applySubscriptionEvent(tx, event, context.catalog) };

const handlers: Record<HandledEventType, EventHandler> = {
  'checkout.session.completed': checkout,
  'checkout.session.async_payment_succeeded': checkout,
  'checkout.session.async_payment_failed': checkout,
  'customer.subscription.created': subscription,
  'customer.subscription.updated': subscription,
  'customer.subscription.deleted': subscription,
  'charge.refunded': { lockKey: chargeLockKey, apply: (tx, event) => applyChargeRefunded(tx, event) },
};

/**
 * Applies one authentic event exactly once: the event row, the credits and the ledger commit in one
 * transaction, or nothing does. Safe under concurrent copies of the same event on several replicas.
 */
export async function processEvent(db: Database, event: StripeEvent, context: EventContext): Promise<EventResult> {
  if (!isHandledEventType(event.type)) {
    // One statement is its own transaction.
    const fresh = await claimEvent(db, event, 'ignored');
    return fresh ? { status: 'ignored', reason: 'event type not handled' } : { status: 'duplicate' };
  }
  const handler = handlers[event.type];
  // Anything that may call Stripe happens before the transaction, so no connection waits on the network;
  // and a duplicate costs no call to Stripe. (The claim below still decides, should two copies race.)
  if (needsLineItems(event) && (await isEventRecorded(db, event.id))) return { status: 'duplicate' };
  const facts: Facts = { credits: await resolveCheckoutCredits(event, context.catalog, context.fetchLineItems) };
  return db.withTransaction(async (tx): Promise<EventResult> => {
    if (!(await claimEvent(tx, event, 'processed', handler.lockKey(event)))) return { status: 'duplicate' };
    const outcome = await handler.apply(tx, event, facts, context);
    if (outcome.status !== 'processed') await setEventOutcome(tx, event.id, outcome.status, outcome.reason);
    else if (outcome.note) await setEventOutcome(tx, event.id, 'processed', outcome.note);
    return outcome;
  });
}
