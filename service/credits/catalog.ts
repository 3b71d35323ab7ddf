import { readFileSync } from 'node:fs';

/**
 * Which Stripe prices sell credits. JSON file named by CREDIT_CATALOG_FILE:
 *   {
 *     "packages": { "price_…": { "credits": 1000, "name": "1,000 credits" } },
 *     "plans":    { "price_…": { "monthlyCredits": 5000, "name": "Pro" } }
 *   }
 * `packages` are one-off Checkout purchases (credits per unit bought); `plans` are subscription prices
 * (credits granted each billing period). Both maps are optional.
 */
export interface CreditCatalog {
  packageCredits(priceId: string): number | undefined;
  plan(priceId: string): { monthlyCredits: number; name: string | undefined } | undefined;
  readonly hasPackages: boolean;
  /** Every entry, in the file's order: what the billing API offers for sale. */
  listPackages(): Array<{ priceId: string; credits: number; name: string | undefined }>;
  listPlans(): Array<{ priceId: string; monthlyCredits: number; name: string | undefined }>;
}

export class CatalogError extends Error {
  override name = 'CatalogError';
}

type PackageEntry = { credits: number; name?: string };
type PlanEntry = { monthlyCredits: number; name?: string };

export function emptyCatalog(): CreditCatalog {
  return catalogFrom({}, {});
}

/** The catalog of CREDIT_CATALOG_FILE; without one, an empty catalog (credits then come from metadata only). */
export function loadCatalog(filePath: string | undefined): CreditCatalog {
  if (filePath === undefined) return emptyCatalog();
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(filePath, 'utf8'));
  } catch (error) {
    throw new CatalogError(`CREDIT_CATALOG_FILE ${filePath} cannot be read as JSON (${(error as Error).message}). Fix the file or unset the variable.`);
  }
  return parseCatalog(parsed, `CREDIT_CATALOG_FILE ${filePath}`);
}

export function parseCatalog(input: unknown, source: string): CreditCatalog {
  if (!isObject(input)) throw new CatalogError(`${source} must hold a JSON object with "packages" and/or "plans".`);
  const packages = entries(input.packages, `${source} "packages"`, 'credits');
  const plans = entries(input.plans, `${source} "plans"`, 'monthlyCredits');
  return catalogFrom(
    Object.fromEntries(packages.map(([price, entry]) => [price, { credits: entry.credits, name: entry.name }])) as Record<string, PackageEntry>,
    Object.fromEntries(plans.map(([price, entry]) => [price, { monthlyCredits: entry.monthlyCredits, name: entry.name }])) as Record<string, PlanEntry>,
  );
}

function catalogFrom(packages: Record<string, PackageEntry>, plans: Record<string, PlanEntry>): CreditCatalog {
  return {
    packageCredits: (priceId) => (Object.hasOwn(packages, priceId) ? packages[priceId]!.credits : undefined),
    plan: (priceId) => (Object.hasOwn(plans, priceId) ? { monthlyCredits: plans[priceId]!.monthlyCredits, name: plans[priceId]!.name } : undefined),
    hasPackages: Object.keys(packages).length > 0,
    listPackages: () => Object.entries(packages).map(([priceId, entry]) => ({ priceId, credits: entry.credits, name: entry.name })),
    listPlans: () => Object.entries(plans).map(([priceId, entry]) => ({ priceId, monthlyCredits: entry.monthlyCredits, name: entry.name })),
  };
}

function entries(value: unknown, where: string, amountKey: string): Array<[string, Record<string, number> & { name?: string }]> {
  if (value === undefined) return [];
  if (!isObject(value)) throw new CatalogError(`${where} must be an object keyed by Stripe price id.`);
  return Object.entries(value).map(([priceId, entry]) => {
    if (!isObject(entry) || !isPositiveInteger(entry[amountKey])) {
      throw new CatalogError(`${where} entry "${priceId}" needs "${amountKey}": a positive whole number.`);
    }
    if (entry.name !== undefined && typeof entry.name !== 'string') throw new CatalogError(`${where} entry "${priceId}" has a "name" that is not text.`);
    return [priceId, entry as Record<string, number> & { name?: string }];
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

/** Credits written by hand in Stripe metadata ("500") must be a plain positive whole number. */
export function parseCreditsText(value: unknown): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value.trim())) return undefined;
  const credits = Number(value.trim());
  return isPositiveInteger(credits) ? credits : undefined;
}
