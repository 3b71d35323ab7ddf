import type { CreditCatalog } from './credits/catalog';
import { parseCatalog } from './credits/catalog';
import type { Logger } from './logger';
import { stripeApiVersion } from './stripeApi';

/**
 * `npm start` without Stripe settings: the local Stripe (localStripe/) runs in this process, with a small
 * catalog for sale, so that a newcomer buys credits on its checkout page with no Stripe account. Loaded only
 * here, at run time: the production image never needs it.
 */
export interface DevelopmentStripe {
  apiKey: string;
  apiBase: URL;
  catalog: CreditCatalog;
  /** Points the local Stripe's webhook endpoint at the service, signing with the service's development secret, at the pinned API version (as a deployment registers it). */
  registerWebhook(url: string, secret: string, eventTypes: readonly string[]): void;
  stop(): Promise<void>;
}

/** Any test-mode key opens the local Stripe; this one says where it comes from. */
const developmentApiKey = 'sk_test_local_development';

/** What the development catalog sells: fixed price ids, so the catalog is the same at every start. */
const developmentPrices = [
  { id: 'price_dev_credits_100', productName: '100 credits', unitAmount: 100, credits: 100 },
  { id: 'price_dev_credits_500', productName: '500 credits', unitAmount: 450, credits: 500 },
  { id: 'price_dev_credits_2000', productName: '2,000 credits', unitAmount: 1500, credits: 2000 },
  { id: 'price_dev_plan_basic', productName: 'Basic plan', unitAmount: 900, monthlyCredits: 1000 },
  { id: 'price_dev_plan_pro', productName: 'Pro plan', unitAmount: 2900, monthlyCredits: 5000 },
] as const;
/** A price of a CREDIT_CATALOG_FILE the local Stripe does not know is sold at this much. */
const unknownPriceCents = 1000;

export async function startDevelopmentStripe(logger: Logger, fileCatalog: CreditCatalog | undefined): Promise<DevelopmentStripe> {
  const { startLocalStripe } = await import('../localStripe/index.js');
  const local = await startLocalStripe();
  let catalog: CreditCatalog;
  if (fileCatalog) {
    catalog = fileCatalog;
    for (const entry of fileCatalog.listPackages()) local.createPrice({ id: entry.priceId, productName: entry.name ?? `${entry.credits} credits`, unitAmount: unknownPriceCents });
    for (const entry of fileCatalog.listPlans()) local.createPrice({ id: entry.priceId, productName: entry.name ?? entry.priceId, unitAmount: unknownPriceCents, recurring: true });
  } else {
    const packages: Record<string, { credits: number; name: string }> = {};
    const plans: Record<string, { monthlyCredits: number; name: string }> = {};
    for (const price of developmentPrices) {
      const recurring = 'monthlyCredits' in price;
      local.createPrice({ id: price.id, productName: price.productName, unitAmount: price.unitAmount, recurring });
      if (recurring) plans[price.id] = { monthlyCredits: price.monthlyCredits, name: price.productName };
      else packages[price.id] = { credits: price.credits, name: price.productName };
    }
    catalog = parseCatalog({ packages, plans }, 'the development catalog');
  }
  logger.info({ stripeApiBase: local.baseUrl }, `STRIPE_API_KEY and STRIPE_API_BASE not set: the local Stripe runs at ${local.baseUrl} (no Stripe account needed)`);
  return {
    apiKey: developmentApiKey,
    apiBase: new URL(local.baseUrl),
    catalog,
    registerWebhook(url, secret, eventTypes) {
      const endpoint = local.addWebhookEndpoint({ url, secret, enabledEvents: [...eventTypes], apiVersion: stripeApiVersion, description: 'npm start (development)' });
      logger.info({ endpointId: endpoint.id, url }, 'the local Stripe delivers its events to this service, signed with the development webhook secret');
    },
    stop: () => local.close(),
  };
}
