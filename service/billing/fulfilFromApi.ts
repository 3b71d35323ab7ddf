import type Stripe from 'stripe';
import { checkoutLockKey, fulfilCheckoutSession, resolveCheckoutCredits } from '../credits/checkout';
import { applyPaidInvoice } from '../credits/invoices';
import { unmatched, type HandlerOutcome } from '../credits/outcome';
import { apiReadSource, takeLock } from '../credits/source';
import { recordSubscriptionState, subscriptionLockKey } from '../credits/subscriptions';
import { readInvoice } from '../stripe/invoice';
import { readSubscription } from '../stripe/subscription';
import type { SyncDeps } from './syncPayment';

/**
 * Objects read from the Stripe API go through the webhook's own rules, under the webhook's locks: a sync and
 * the webhook racing each other grant once (a purchase is keyed by its session, a period's grant by its
 * high-water mark). A read names no event: it is Stripe's state when it answered (`readAtMillis`), newer than
 * any event already sent.
 */

const asObject = (object: object) => object as unknown as Record<string, unknown>;

/** A completed Checkout session (paid: its credits; unpaid: pending; subscription: linked to its user). */
export async function fulfilCheckoutFromApi(deps: SyncDeps, session: Stripe.Checkout.Session, readAtMillis: number): Promise<HandlerOutcome> {
  const object = asObject(session);
  // What the session sells may need Stripe's line items: read before the transaction, as the webhook does.
  const credits = await resolveCheckoutCredits(object, deps.catalog, deps.fetchLineItems);
  return deps.db.withTransaction(async (tx) => {
    const lockKey = checkoutLockKey(object);
    if (lockKey) await takeLock(tx, lockKey);
    return fulfilCheckoutSession(tx, object, apiReadSource(readAtMillis), { credits, catalog: deps.catalog });
  });
}

/**
 * A subscription as Stripe has it now, and its recent paid invoices: its state, and the credits of the periods
 * those invoices paid for (an invoice already applied changes nothing).
 */
export async function recordSubscriptionFromApi(
  deps: SyncDeps,
  subscription: Stripe.Subscription,
  paidInvoices: readonly Stripe.Invoice[],
  readAtMillis: number,
): Promise<HandlerOutcome[]> {
  const state = readSubscription(asObject(subscription));
  if (!state) return [unmatched('subscription has no id')];
  return deps.db.withTransaction(async (tx) => {
    await takeLock(tx, subscriptionLockKey(state.id));
    const source = apiReadSource(readAtMillis);
    const outcomes = [(await recordSubscriptionState(tx, state, source, deps.catalog)).outcome];
    for (const paid of paidInvoices) {
      const invoice = readInvoice(asObject(paid));
      // Listed by subscription, so each is this subscription's: the lock above covers it.
      if (invoice?.subscriptionId === state.id) outcomes.push(await applyPaidInvoice(tx, invoice, source, deps.catalog));
    }
    return outcomes;
  });
}
