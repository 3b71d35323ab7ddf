import type Stripe from 'stripe';
import type { CreditCatalog } from '../credits/catalog';
import type { Logger } from '../logger';

/** What GET /api/v1/billing/packages answers: the catalog, with each price as Stripe has it. */
export interface PackagesView {
  packages: Array<{ package_id: string; name: string; credits: number; unit_amount: number | null; currency: string | null }>;
  plans: Array<{ plan_id: string; name: string; monthly_credits: number; unit_amount: number | null; currency: string | null; interval: string | null }>;
}

/** Prices change rarely: each is read from Stripe at most this often per process. */
const priceCacheMillis = 5 * 60_000;

interface PriceFacts {
  unitAmount: number | null;
  currency: string | null;
  interval: string | null;
}

/** The catalog for sale; amounts come from Stripe (the single source of what a price costs), cached. */
export function packagesReader(catalog: CreditCatalog, stripe: Stripe | undefined, logger: Logger, now: () => number = Date.now) {
  const cache = new Map<string, { facts: Promise<PriceFacts>; fetchedAtMillis: number }>();

  const priceFacts = (priceId: string): Promise<PriceFacts> => {
    const cached = cache.get(priceId);
    if (cached && now() - cached.fetchedAtMillis < priceCacheMillis) return cached.facts;
    const unknown: PriceFacts = { unitAmount: null, currency: null, interval: null };
    const facts = stripe
      ? stripe.prices.retrieve(priceId).then(
          (price) => ({ unitAmount: price.unit_amount, currency: price.currency, interval: price.recurring?.interval ?? null }),
          (error: unknown) => {
            // Shown without a price rather than not at all; the next read asks Stripe again.
            cache.delete(priceId);
            logger.warn({ priceId, reason: (error as Error).message }, 'could not read a catalog price from Stripe');
            return unknown;
          },
        )
      : Promise.resolve(unknown);
    cache.set(priceId, { facts, fetchedAtMillis: now() });
    return facts;
  };

  return async function readPackages(): Promise<PackagesView> {
    const packages = catalog.listPackages();
    const plans = catalog.listPlans();
    const [packageFacts, planFacts] = await Promise.all([Promise.all(packages.map((entry) => priceFacts(entry.priceId))), Promise.all(plans.map((entry) => priceFacts(entry.priceId)))]);
    return {
      packages: packages.map((entry, i) => ({
        package_id: entry.priceId,
        name: entry.name ?? `${entry.credits} credits`,
        credits: entry.credits,
        unit_amount: packageFacts[i]!.unitAmount,
        currency: packageFacts[i]!.currency,
      })),
      plans: plans.map((entry, i) => ({
        plan_id: entry.priceId,
        name: entry.name ?? entry.priceId,
        monthly_credits: entry.monthlyCredits,
        unit_amount: planFacts[i]!.unitAmount,
        currency: planFacts[i]!.currency,
        interval: planFacts[i]!.interval,
      })),
    };
  };
}
