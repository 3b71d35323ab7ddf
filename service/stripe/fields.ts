/** Small readers of the fields every Stripe object shares: ids (or the expanded object), metadata, amounts, times. */

/** A Stripe field that is an id, or the expanded object carrying it. */
export function readStripeId(value: unknown): string | undefined {
  if (typeof value === 'string' && value) return value;
  if (isObject(value) && typeof value.id === 'string' && value.id) return value.id;
  return undefined;
}

export function readMetadata(object: Record<string, unknown> | undefined): Record<string, unknown> {
  const metadata = object?.metadata;
  return isObject(metadata) ? metadata : {};
}

/** A whole, non-negative amount in the currency's smallest unit (cents), or a count. */
export function readWholeNumber(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

/** A Unix timestamp in seconds. */
export function readUnixSeconds(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0 ? value : undefined;
}

export function readText(value: unknown): string | undefined {
  return typeof value === 'string' && value ? value : undefined;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The `data` array of a Stripe list (`{ object: 'list', data: [...] }`), objects only. */
export function listData(value: unknown): Array<Record<string, unknown>> {
  const data = isObject(value) ? value.data : undefined;
  return Array.isArray(data) ? data.filter(isObject) : [];
}

/** A price as far as a subscription item or an invoice line names it: basil invoice lines carry only its id. */
export interface PriceRef {
  id: string;
  metadata: Record<string, unknown>;
  nickname: string | undefined;
}

export function readPrice(value: unknown): PriceRef | undefined {
  const id = readStripeId(value);
  if (!id) return undefined;
  const price = isObject(value) ? value : undefined;
  return { id, metadata: readMetadata(price), nickname: readText(price?.nickname) };
}

/** A quantity as Stripe sends it: 0 is zero units; absent or null (metered prices) counts as one. */
export function readQuantity(value: unknown): number {
  return readWholeNumber(value) ?? 1;
}

export interface Period {
  /** Unix seconds. */
  start: number;
  end: number;
}

export function readPeriod(start: unknown, end: unknown): Period | undefined {
  const startSeconds = readUnixSeconds(start);
  const endSeconds = readUnixSeconds(end);
  return startSeconds !== undefined && endSeconds !== undefined ? { start: startSeconds, end: endSeconds } : undefined;
}
