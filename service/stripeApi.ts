import Stripe from 'stripe';
import type { LineItem } from './credits/checkout';

/** Pinned so the shapes we read do not change under us; the deployment registers the endpoint with it too. */
export const stripeApiVersion = '2025-03-31.basil';

const stripeTimeoutMillis = 10_000;
const stripeMaxNetworkRetries = 2;

/** A stripe-node client for `apiBase` (Stripe itself in production, a local fake in tests). */
export function createStripeClient(apiKey: string, apiBase: URL): Stripe {
  const protocol = apiBase.protocol === 'http:' ? 'http' : 'https';
  return new Stripe(apiKey, {
    apiVersion: stripeApiVersion as Stripe.StripeConfig['apiVersion'],
    host: apiBase.hostname,
    port: apiBase.port ? Number(apiBase.port) : protocol === 'http' ? 80 : 443,
    protocol,
    timeout: stripeTimeoutMillis,
    maxNetworkRetries: stripeMaxNetworkRetries,
    appInfo: { name: 'stripe-credits-webhook' },
  });
}

/** What processing an event may read from Stripe: nothing without an API key. */
export function stripeReaders(stripe: Stripe | undefined) {
  return { fetchLineItems: stripe ? lineItemsFetcher(stripe) : undefined, fetchSubscription: stripe ? subscriptionFetcher(stripe) : undefined };
}

/**
 * A subscription as Stripe has it now (basil shape: the version is pinned above), or undefined when Stripe has
 * no such subscription (a local Stripe in development that never sold it): asking again would not help.
 */
export function subscriptionFetcher(stripe: Stripe) {
  return async (subscriptionId: string): Promise<Record<string, unknown> | undefined> => {
    try {
      return (await stripe.subscriptions.retrieve(subscriptionId)) as unknown as Record<string, unknown>;
    } catch (error) {
      if ((error as { statusCode?: unknown }).statusCode === 404) return undefined;
      throw error;
    }
  };
}

export function lineItemsFetcher(stripe: Stripe) {
  return async (sessionId: string): Promise<LineItem[]> => {
    const items: LineItem[] = [];
    for await (const item of stripe.checkout.sessions.listLineItems(sessionId, { limit: 100 })) {
      if (item.price?.id) items.push({ priceId: item.price.id, quantity: item.quantity ?? 1 });
    }
    return items;
  };
}
