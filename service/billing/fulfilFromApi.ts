import type Stripe from 'stripe';
import { applyCheckoutSession, checkoutLockKey, resolveCheckoutCredits } from '../credits/checkout';
import type { HandlerOutcome } from '../credits/outcome';
import { applySubscriptionEvent, subscriptionLockKey } from '../credits/subscriptions';
import type { Queryable } from '../db';
import type { StripeEvent } from '../webhook/stripeEvent';
import type { SyncDeps } from './syncPayment';

/**
 * Objects read from the Stripe API go through the webhook's own rules, under the webhook's locks: the grant
 * of a Checkout session is keyed by the session (credit_purchases), so a sync and the webhook racing each
 * other grant once. Today's rules take an event, so an object read now is handed over as the event that
 * would carry it, `created` now (Stripe's current state is newer than any event already sent); the ledger
 * names it `sync_<object id>` where a webhook names its event.
 */
function asEvent(type: string, object: { id: string; livemode: boolean }): StripeEvent {
  return { id: `sync_${object.id}`, type, livemode: object.livemode, created: Math.floor(Date.now() / 1000), data: { object: object as unknown as Record<string, unknown> } };
}

async function lock(tx: Queryable, key: string | undefined): Promise<void> {
  if (key) await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key]);
}

/** A completed Checkout session (paid: its credits; unpaid: pending; subscription: linked to its user). */
export async function fulfilCheckoutFromApi(deps: SyncDeps, session: Stripe.Checkout.Session): Promise<HandlerOutcome> {
  const event = asEvent('checkout.session.completed', session);
  // What the session sells may need Stripe's line items: read before the transaction, as the webhook does.
  const credits = await resolveCheckoutCredits(event, deps.catalog, deps.fetchLineItems);
  return deps.db.withTransaction(async (tx) => {
    await lock(tx, checkoutLockKey(event));
    return applyCheckoutSession(tx, event, credits);
  });
}

/** A subscription as Stripe has it now: its state, and the credits that state entitles to. */
export async function recordSubscriptionFromApi(deps: SyncDeps, subscription: Stripe.Subscription): Promise<HandlerOutcome> {
  const ended = subscription.status === 'canceled' || subscription.status === 'incomplete_expired';
  const event = asEvent(ended ? 'customer.subscription.deleted' : 'customer.subscription.updated', subscription);
  return deps.db.withTransaction(async (tx) => {
    await lock(tx, subscriptionLockKey(subscription.id));
    return applySubscriptionEvent(tx, event, deps.catalog);
  });
}
