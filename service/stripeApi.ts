import Stripe from 'stripe';
import { checkApiKeyMode, type StripeMode } from './config';
import type { LineItem } from './credits/checkout';
import type { Logger } from './logger';
import { watchFile, type WatchedFile } from './watchedFile';
import { fingerprintSecret } from './webhook/secretFingerprint';

/** Pinned so the shapes we read do not change under us; the deployment registers the endpoint with it too. */
export const stripeApiVersion = '2025-03-31.basil';

const stripeTimeoutMillis = 10_000;
const stripeMaxNetworkRetries = 2;

/**
 * A stripe-node client for `apiBase` (Stripe itself in production, a local fake in tests). Given a watched
 * key file, every request carries the key the file holds at that moment (stripe-node's `authenticator`),
 * so a rolled key is used without a restart.
 */
export function createStripeClient(apiKey: string | WatchedFile<string>, apiBase: URL): Stripe {
  const protocol = apiBase.protocol === 'http:' ? 'http' : 'https';
  const key = typeof apiKey === 'string' ? { apiKey } : { apiKey: '', authenticator: bearerOf(apiKey) };
  return new Stripe(key.apiKey, {
    ...('authenticator' in key ? { authenticator: key.authenticator } : {}),
    apiVersion: stripeApiVersion as Stripe.StripeConfig['apiVersion'],
    host: apiBase.hostname,
    port: apiBase.port ? Number(apiBase.port) : protocol === 'http' ? 80 : 443,
    protocol,
    timeout: stripeTimeoutMillis,
    maxNetworkRetries: stripeMaxNetworkRetries,
    appInfo: { name: 'stripe-credits-webhook' },
  });
}

function bearerOf(keyFile: WatchedFile<string>) {
  return (request: { headers: Record<string, unknown> }) => {
    request.headers.Authorization = `Bearer ${keyFile.current()}`;
    return Promise.resolve();
  };
}

/**
 * STRIPE_API_KEY_FILE, kept current: after a key is rolled in the Dashboard, writing the new key into the
 * file is all it takes. A key of the wrong mode (or not a key) is refused and the previous one kept.
 */
export function watchStripeApiKeyFile(filePath: string, options: { logger: Logger; mode: StripeMode; pollIntervalMillis?: number }): Promise<WatchedFile<string>> {
  return watchFile(filePath, {
    logger: options.logger,
    pollIntervalMillis: options.pollIntervalMillis,
    source: `STRIPE_API_KEY_FILE (${filePath})`,
    what: 'Stripe API key',
    parse: (content, source) => {
      const key = content.trim();
      if (!key) throw new Error(`${source} is empty. Write the Stripe API key into it.`);
      checkApiKeyMode(key, options.mode);
      return key;
    },
    describe: (key) => ({ keyFingerprint: fingerprintSecret(key) }),
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
