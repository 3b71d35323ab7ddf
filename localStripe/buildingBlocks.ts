/**
 * What every builder of Stripe objects uses: Stripe-style ids, Unix seconds, the defaults our objects
 * share, and the deep merge that lays a caller's overrides over a builder's defaults.
 *
 * The builders write each object field by field as Stripe sends it at API version 2025-03-31.basil, typed
 * with stripe-node's types. Those types describe a newer API version, so the few fields added since basil
 * are present too, with the value Stripe gives them when unused (null, [] or false).
 */
import crypto from 'node:crypto';
import type Stripe from 'stripe';

/** The API version this service reads (and the deployment pins on its webhook endpoint). */
export const DEFAULT_EVENT_API_VERSION = '2025-03-31.basil';
export const DEFAULT_AMOUNT_CENTS = 1000;
export const DEFAULT_CURRENCY = 'usd';
export const SECONDS_PER_DAY = 24 * 60 * 60;
export const DEFAULT_BILLING_PERIOD_SECONDS = 30 * SECONDS_PER_DAY;
const ID_RANDOM_BYTES = 12;

/** `cs_test_9f…`, `evt_1a…`: a Stripe-style id that is unique per call. */
export function stripeId(prefix: string): string {
  return `${prefix}_${crypto.randomBytes(ID_RANDOM_BYTES).toString('hex')}`;
}

export function unixSeconds(epochMillis: number = Date.now()): number {
  return Math.floor(epochMillis / 1000);
}

/**
 * A `*_decimal` field as Stripe sends it: a string such as "2000". stripe-node types these as its Decimal
 * class because its client converts API responses; a webhook body is plain JSON, so the string it is.
 */
export function wireDecimal(value: number | string): Stripe.Decimal {
  return String(value) as unknown as Stripe.Decimal;
}

/** An address Stripe has nothing for: every line null. */
export function blankAddress(): Stripe.Address {
  return { city: null, country: null, line1: null, line2: null, postal_code: null, state: null };
}

// Checked first so Stripe's branded `string & {}` ("OtherString") stays a string.
type Primitive = string | number | boolean | bigint | symbol | null | undefined;

/** Plain objects become optional all the way down; arrays are replaced whole. */
export type DeepPartial<T> = T extends Primitive | readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Returns `base` with `overrides` merged in; undefined overrides are skipped, override values are copied. */
export function mergeDeep<T>(base: T, ...overrides: Array<NoInfer<DeepPartial<T>> | undefined>): T {
  let result: unknown = base;
  for (const override of overrides) {
    result = mergeValue(result, override);
  }
  return result as T;
}

function mergeValue(base: unknown, override: unknown): unknown {
  if (override === undefined) {
    return base;
  }
  if (!isPlainObject(base) || !isPlainObject(override)) {
    return structuredClone(override);
  }
  const merged: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(override)) {
    merged[key] = mergeValue(base[key], value);
  }
  return merged;
}
