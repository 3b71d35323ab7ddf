/**
 * A subscription as `customer.subscription.*` events (and the API) carry it. From API 2025-03-31.basil the
 * billing period lives on each subscription item; before, on the subscription itself. Both are read.
 */
import { isObject, listData, readMetadata, readPeriod, readPrice, readQuantity, readStripeId, readText, readUnixSeconds, type Period, type PriceRef } from './fields';

export interface SubscriptionItem {
  price: PriceRef;
  quantity: number;
}

export interface Subscription {
  id: string;
  customerId: string | undefined;
  metadata: Record<string, unknown>;
  status: string;
  /** When the subscription was created (Unix seconds). */
  createdSeconds: number | undefined;
  /** `pause_collection` is set: Stripe keeps the status `active` but collects no payment. */
  collectionPaused: boolean;
  /** The current billing period. */
  period: Period | undefined;
  items: SubscriptionItem[];
}

/** Reads a subscription object; undefined when it has no id. */
export function readSubscription(object: Record<string, unknown>): Subscription | undefined {
  const id = readStripeId(object.id);
  if (!id) return undefined;
  const rawItems = listData(object.items);
  const items: SubscriptionItem[] = [];
  for (const item of rawItems) {
    const price = readPrice(item.price) ?? readPrice(item.plan);
    if (price) items.push({ price, quantity: readQuantity(item.quantity) });
  }
  const itemWithPeriod = rawItems.find((item) => readPeriod(item.current_period_start, item.current_period_end));
  const periodHolder = itemWithPeriod ?? object;
  return {
    id,
    customerId: readStripeId(object.customer),
    metadata: readMetadata(object),
    status: readText(object.status) ?? 'unknown',
    createdSeconds: readUnixSeconds(object.created),
    collectionPaused: isObject(object.pause_collection),
    period: readPeriod(periodHolder.current_period_start, periodHolder.current_period_end),
    items,
  };
}

/** Statuses after which a subscription never becomes active again. */
export const endedSubscriptionStatuses: ReadonlySet<string> = new Set(['canceled', 'incomplete_expired']);
