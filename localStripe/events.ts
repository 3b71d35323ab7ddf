/** Events as Stripe delivers them, and the webhook endpoints it delivers them to. */
import type Stripe from 'stripe';
import { DEFAULT_EVENT_API_VERSION, mergeDeep, stripeId, unixSeconds, type DeepPartial } from './buildingBlocks';

export interface StripeEventOptions {
  id?: string;
  /** Unix seconds; default now. */
  created?: number;
  /** Default: `object.livemode`, else false. */
  livemode?: boolean;
  previousAttributes?: Record<string, unknown>;
  /** Default DEFAULT_EVENT_API_VERSION. */
  apiVersion?: string | null;
  pendingWebhooks?: number;
  /** Default `{ id: null, idempotency_key: null }`: an automatic event, not caused by an API request. */
  request?: Stripe.Event.Request | null;
}

/** An event whose type stripe-node does not know (e.g. to test that unknown types are ignored). */
export type UntypedStripeEvent = Omit<Stripe.EventBase, 'type' | 'data'> & {
  type: string;
  data: { object: object; previous_attributes?: Record<string, unknown> };
};

/** The stripe-node event type for a known event type string, e.g. Stripe.CheckoutSessionCompletedEvent. */
export type StripeEventOf<T extends string> = T extends Stripe.Event.Type ? Extract<Stripe.Event, { type: T }> : UntypedStripeEvent;

/** A full event as Stripe sends it; `data.object` is a snapshot (deep copy) of `object`. */
export function stripeEvent<T extends string>(type: T, object: object, options: StripeEventOptions = {}): StripeEventOf<T> {
  const objectLivemode = 'livemode' in object && typeof object.livemode === 'boolean' ? object.livemode : undefined;
  const data: UntypedStripeEvent['data'] = { object: structuredClone(object) };
  if (options.previousAttributes !== undefined) {
    data.previous_attributes = structuredClone(options.previousAttributes);
  }
  const event: UntypedStripeEvent = {
    id: options.id ?? stripeId('evt'),
    object: 'event',
    api_version: options.apiVersion === undefined ? DEFAULT_EVENT_API_VERSION : options.apiVersion,
    created: options.created ?? unixSeconds(),
    data,
    livemode: options.livemode ?? objectLivemode ?? false,
    pending_webhooks: options.pendingWebhooks ?? 1,
    request: options.request === undefined ? { id: null, idempotency_key: null } : options.request,
    type,
  };
  return event as StripeEventOf<T>;
}

/**
 * A webhook endpoint as the API returns it after creation, subscribed to every event type by default
 * and at the account's default API version (`api_version` null). Its signing secret is not part of it:
 * Stripe reveals that once, in the create response.
 */
export function webhookEndpoint(overrides: DeepPartial<Stripe.WebhookEndpoint> = {}): Stripe.WebhookEndpoint {
  const defaults: Stripe.WebhookEndpoint = {
    id: stripeId('we'),
    object: 'webhook_endpoint',
    api_version: null,
    application: null,
    created: unixSeconds(),
    description: null,
    enabled_events: ['*'],
    livemode: false,
    metadata: {},
    status: 'enabled',
    url: 'https://credits.example.com/api/v1/billing/stripe/webhook',
  };
  return mergeDeep(defaults, overrides);
}

/** What deleting a webhook endpoint answers. */
export function deletedWebhookEndpoint(id: string): Stripe.DeletedWebhookEndpoint {
  return { id, object: 'webhook_endpoint', deleted: true };
}
