import type { PriceRef } from '../stripe/fields';
import { parseCreditsText, type CreditCatalog } from './catalog';

/** Monthly credits per unit of each price, as the prices' metadata said (kept per subscription). */
export type KnownPriceCredits = Record<string, number>;

/** Units of one price on a subscription item or an invoice line. */
export interface PriceUnits {
  priceId: string;
  /** What the price's own `metadata.monthly_credits` says, when the object carried the price's metadata. */
  metadataCredits: number | undefined;
  quantity: number;
}

export function priceUnits(price: PriceRef, quantity: number): PriceUnits {
  return { priceId: price.id, metadataCredits: parseCreditsText(price.metadata.monthly_credits), quantity };
}

/**
 * Monthly credits per unit of a subscription price: the catalog's plan, else the price's
 * `metadata.monthly_credits`, else what that price's metadata said on an earlier state of the subscription
 * (basil invoice lines name a price by id only). Undefined when nothing says: the price is unknown.
 */
export function creditsPerUnit(units: PriceUnits, catalog: CreditCatalog, known: KnownPriceCredits): number | undefined {
  return catalog.plan(units.priceId)?.monthlyCredits ?? units.metadataCredits ?? (Object.hasOwn(known, units.priceId) ? known[units.priceId] : undefined);
}

export interface Allowance {
  credits: number;
  /** Prices (with units bought) nothing gives credits for; their units count for nothing until configured. */
  unknownPrices: string[];
}

/** Credits per period of the units of each price; zero units are zero credits, whatever the price. */
export function allowanceOf(units: readonly PriceUnits[], catalog: CreditCatalog, known: KnownPriceCredits): Allowance {
  let credits = 0;
  const unknownPrices: string[] = [];
  for (const line of units) {
    if (line.quantity === 0) continue;
    const perUnit = creditsPerUnit(line, catalog, known);
    if (perUnit === undefined) unknownPrices.push(line.priceId);
    else credits += perUnit * line.quantity;
  }
  return { credits, unknownPrices };
}

/** The per-unit credits the prices' own metadata states, remembered for invoice lines that name only the id. */
export function metadataPriceCredits(units: readonly PriceUnits[]): KnownPriceCredits {
  const known: KnownPriceCredits = {};
  for (const line of units) if (line.metadataCredits !== undefined) known[line.priceId] = line.metadataCredits;
  return known;
}

export function unknownPriceReason(prices: readonly string[]): string {
  const list = [...new Set(prices)].join(', ');
  return (
    `subscription price ${list} grants no known credits: add it to "plans" in the credit catalog (CREDIT_CATALOG_FILE) ` +
    'or set metadata.monthly_credits on the price in Stripe, then replay the event (npm run replay-events -- --event evt_…)'
  );
}
