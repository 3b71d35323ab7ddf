/**
 * The Stripe objects the local Stripe serves, per mode, and the v1 routes that read and change them:
 * webhook endpoints, events, Checkout Session line items and subscriptions. The HTTP side (auth,
 * form decoding, failures, recording, delivery) lives in server.ts.
 */
import type Stripe from 'stripe';
import {
  applyMetadataUpdate,
  booleanParam,
  invalidParam,
  LIST_PARAMS,
  listPage,
  metadataParam,
  rangeFilter,
  rejectUnknownParams,
  requiredStringParam,
  resourceMissing,
  StripeApiError,
  stringArrayParam,
  stringParam,
} from './apiConventions';
import type { LocalCommerce } from './commerce';
import { commerceRoutes } from './commerceRoutes';
import { checkoutLineItem, DEFAULT_AMOUNT_CENTS, DEFAULT_CURRENCY, deletedWebhookEndpoint, price, stripeId, unixSeconds, webhookEndpoint } from './objects';
import type { FormObject } from './form';

const MAX_EVENT_TYPES_FILTER = 20;
const EVENT_TYPE_PATTERN = /^(\*|[a-z0-9_]+(\.[a-z0-9_]+)+)$/;
const API_VERSION_PATTERN = /^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$/;

export type WebhookEndpointWithSecret = Stripe.WebhookEndpoint & { secret: string };

export interface CheckoutLineItemInput {
  priceId: string;
  quantity: number;
  /** In the currency's smallest unit; default DEFAULT_AMOUNT_CENTS. */
  unitAmount?: number;
  currency?: string;
  description?: string | null;
  priceMetadata?: Record<string, string>;
  /** A monthly recurring price (subscription checkout) instead of a one-time one. */
  recurring?: boolean;
}

/** What the fake needs of an event: any stripe-node `Stripe.Event` or a stripeEvent() fixture fits. */
export interface LocalStripeEvent {
  id: string;
  object: 'event';
  type: string;
  created: number;
  livemode: boolean;
}

/** One authenticated API call, routed. */
export interface ApiCall {
  livemode: boolean;
  /** Body params for POST, query params otherwise. */
  params: FormObject;
  /** Captured path segments, URL-decoded. */
  pathParams: string[];
}

export interface Route {
  method: 'GET' | 'POST' | 'DELETE';
  pattern: RegExp;
  handle: (call: ApiCall) => unknown;
}

interface StoredEndpoint {
  endpoint: Stripe.WebhookEndpoint;
  secret: string;
  /** Secrets rolled away in the Dashboard that Stripe still signs with until they expire. */
  expiringSecrets: Array<{ value: string; expiresAtMillis: number }>;
}

interface StoredEvent {
  event: LocalStripeEvent & { pending_webhooks?: number };
  /** Insertion order, to order events created in the same second. */
  sequence: number;
  /** Endpoints that have not acknowledged the event yet (its `pending_webhooks`). */
  pendingEndpoints: Set<string>;
}

export class LocalStripeResources {
  private readonly endpoints = new Map<string, StoredEndpoint>();
  private readonly events = new Map<string, StoredEvent>();
  private eventSequence = 0;
  private readonly lineItems = new Map<string, { livemode: boolean; items: Stripe.LineItem[] }>();

  private readonly routes: Route[];

  private buildRoutes(): Route[] {
    return [
    { method: 'POST', pattern: /^\/v1\/webhook_endpoints$/, handle: (c) => this.createWebhookEndpoint(c) },
    { method: 'GET', pattern: /^\/v1\/webhook_endpoints$/, handle: (c) => this.listWebhookEndpoints(c) },
    { method: 'GET', pattern: /^\/v1\/webhook_endpoints\/([^/]+)$/, handle: (c) => this.retrieveWebhookEndpoint(c) },
    { method: 'POST', pattern: /^\/v1\/webhook_endpoints\/([^/]+)$/, handle: (c) => this.updateWebhookEndpoint(c) },
    { method: 'DELETE', pattern: /^\/v1\/webhook_endpoints\/([^/]+)$/, handle: (c) => this.deleteWebhookEndpoint(c) },
    { method: 'GET', pattern: /^\/v1\/events$/, handle: (c) => this.listEvents(c) },
    { method: 'GET', pattern: /^\/v1\/events\/([^/]+)$/, handle: (c) => this.retrieveEvent(c) },
    { method: 'GET', pattern: /^\/v1\/checkout\/sessions\/([^/]+)\/line_items$/, handle: (c) => this.listLineItems(c) },
    ...commerceRoutes(this.commerce, this.nowSeconds),
    ];
  }

  constructor(
    readonly commerce: LocalCommerce,
    private readonly nowSeconds: () => number = () => unixSeconds(),
  ) {
    this.routes = this.buildRoutes();
  }

  /** Answers one API call, or throws the StripeApiError Stripe would answer (404 for unknown URLs). */
  handle(method: string, path: string, call: Omit<ApiCall, 'pathParams'>): unknown {
    for (const route of this.routes) {
      const match = route.method === method ? route.pattern.exec(path) : null;
      if (match) {
        const pathParams = match.slice(1).map((segment) => decodeURIComponent(segment));
        return route.handle({ ...call, pathParams });
      }
    }
    throw new StripeApiError(404, `Unrecognized request URL (${method}: ${path}). The local Stripe does not serve it.`);
  }

  reset(): void {
    this.endpoints.clear();
    this.events.clear();
    this.lineItems.clear();
    this.commerce.reset();
  }

  // -- Webhook endpoints ------------------------------------------------------------------------

  private createWebhookEndpoint({ livemode, params }: ApiCall): WebhookEndpointWithSecret {
    rejectUnknownParams(params, [
      'url',
      'enabled_events',
      'description',
      'metadata',
      'api_version',
      'connect',
      'disabled',
    ]);
    if (booleanParam(params, 'connect') === true) {
      throw invalidParam('connect', 'The local Stripe does not support Connect webhook endpoints.');
    }
    const apiVersion = stringParam(params, 'api_version');
    if (apiVersion !== undefined && !API_VERSION_PATTERN.test(apiVersion)) {
      throw invalidParam('api_version', `Invalid api_version: ${apiVersion}`);
    }
    const endpoint: Stripe.WebhookEndpoint = {
      ...webhookEndpoint(),
      livemode,
      url: webhookUrl(requiredStringParam(params, 'url'), livemode),
      enabled_events: enabledEvents(params, { required: true }) ?? [],
      description: stringParam(params, 'description') || null,
      metadata: applyMetadataUpdate({}, metadataParam(params) ?? {}),
      api_version: apiVersion ?? null,
      application: null,
      status: booleanParam(params, 'disabled') === true ? 'disabled' : 'enabled',
    };
    const secret = stripeId('whsec');
    this.endpoints.set(endpoint.id, { endpoint, secret, expiringSecrets: [] });
    // Stripe reveals the signing secret in this one response only.
    return { ...endpoint, secret };
  }

  private retrieveWebhookEndpoint({ livemode, params, pathParams }: ApiCall): Stripe.WebhookEndpoint {
    rejectUnknownParams(params, []);
    return this.findEndpoint(pathParams[0] as string, livemode).endpoint;
  }

  private updateWebhookEndpoint({ livemode, params, pathParams }: ApiCall): Stripe.WebhookEndpoint {
    rejectUnknownParams(params, ['url', 'enabled_events', 'description', 'metadata', 'disabled']);
    const { endpoint } = this.findEndpoint(pathParams[0] as string, livemode);
    const url = stringParam(params, 'url');
    const events = enabledEvents(params, { required: false });
    const description = stringParam(params, 'description');
    const metadata = metadataParam(params);
    const disabled = booleanParam(params, 'disabled');
    if (url !== undefined) endpoint.url = webhookUrl(url, livemode);
    if (events !== undefined) endpoint.enabled_events = events;
    if (description !== undefined) endpoint.description = description === '' ? null : description;
    if (metadata !== undefined) endpoint.metadata = applyMetadataUpdate(endpoint.metadata, metadata);
    if (disabled !== undefined) endpoint.status = disabled ? 'disabled' : 'enabled';
    return endpoint;
  }

  private deleteWebhookEndpoint({ livemode, params, pathParams }: ApiCall): Stripe.DeletedWebhookEndpoint {
    rejectUnknownParams(params, []);
    const { endpoint } = this.findEndpoint(pathParams[0] as string, livemode);
    this.endpoints.delete(endpoint.id);
    return deletedWebhookEndpoint(endpoint.id);
  }

  private listWebhookEndpoints({ livemode, params }: ApiCall): unknown {
    rejectUnknownParams(params, LIST_PARAMS);
    const newestFirst = [...this.endpoints.values()]
      .map(({ endpoint }) => endpoint)
      .filter((endpoint) => endpoint.livemode === livemode)
      .reverse();
    return listPage(newestFirst, params, '/v1/webhook_endpoints', 'webhook endpoint');
  }

  private findEndpoint(id: string, livemode: boolean): StoredEndpoint {
    const stored = this.endpoints.get(id);
    return inMode(stored, stored?.endpoint.livemode, livemode, () => resourceMissing('webhook endpoint', id, {
      existsInLivemode: stored?.endpoint.livemode,
    }));
  }

  /**
   * Registers an endpoint as the Dashboard would, with a signing secret of the caller's choice (the
   * development secret `npm start` keeps), where the API would make one up.
   */
  addWebhookEndpoint(input: { url: string; enabledEvents: string[]; secret?: string; livemode?: boolean; apiVersion?: string | null; description?: string }): WebhookEndpointWithSecret {
    const livemode = input.livemode ?? false;
    const endpoint: Stripe.WebhookEndpoint = {
      ...webhookEndpoint(),
      livemode,
      url: webhookUrl(input.url, livemode),
      enabled_events: input.enabledEvents,
      api_version: input.apiVersion ?? null,
      description: input.description ?? null,
    };
    const secret = input.secret ?? stripeId('whsec');
    this.endpoints.set(endpoint.id, { endpoint, secret, expiringSecrets: [] });
    return { ...structuredClone(endpoint), secret };
  }

  /**
   * The Dashboard's "Roll secret" (the API has none): a new secret from now on, and the old one still
   * signs every delivery beside it until it expires (Stripe offers up to 24 hours, or now).
   */
  rollWebhookEndpointSecret(id: string, expiresInMillis: number, newSecret?: string): string {
    const stored = this.endpoints.get(id);
    if (!stored) throw new Error(`The local Stripe has no webhook endpoint ${id}`);
    stored.expiringSecrets.push({ value: stored.secret, expiresAtMillis: Date.now() + expiresInMillis });
    stored.secret = newSecret ?? stripeId('whsec');
    return stored.secret;
  }

  /** Where and with what an endpoint's delivery is signed now: the old secrets not yet expired, then the current one. */
  currentDeliveryTarget(id: string, nowMillis: number = Date.now()): { url: string; secrets: string[] } | undefined {
    const stored = this.endpoints.get(id);
    if (!stored) return undefined;
    const unexpired = stored.expiringSecrets.filter((secret) => secret.expiresAtMillis > nowMillis).map((secret) => secret.value);
    return { url: stored.endpoint.url, secrets: [...unexpired, stored.secret] };
  }

  webhookEndpoints(): WebhookEndpointWithSecret[] {
    return [...this.endpoints.values()].map(({ endpoint, secret }) => ({ ...structuredClone(endpoint), secret }));
  }

  // -- Events ----------------------------------------------------------------------------------

  /** Stores the event; `pendingEndpointIds` are the endpoints it is about to be delivered to. */
  addEvent(event: LocalStripeEvent, pendingEndpointIds: readonly string[] = []): void {
    if (event.object !== 'event' || typeof event.id !== 'string' || !Number.isInteger(event.created)) {
      throw new TypeError('addEvent expects a Stripe event object (see stripeEvent() in localStripe/objects.ts)');
    }
    if (this.events.has(event.id)) {
      throw new Error(`The local Stripe already has event ${event.id}`);
    }
    const stored: StoredEvent = { event: structuredClone(event), sequence: this.eventSequence++, pendingEndpoints: new Set(pendingEndpointIds) };
    if (pendingEndpointIds.length > 0) stored.event.pending_webhooks = pendingEndpointIds.length;
    this.events.set(event.id, stored);
  }

  /** An endpoint acknowledged the event (a 2xx): one webhook less pending. */
  markDelivered(eventId: string, endpointId: string): void {
    const stored = this.events.get(eventId);
    if (!stored?.pendingEndpoints.delete(endpointId)) return;
    stored.event.pending_webhooks = stored.pendingEndpoints.size;
  }

  /** Endpoints of the event's mode, enabled and subscribed to its type (or to '*'). */
  subscribedEndpoints(event: { type: string; livemode: boolean }): WebhookEndpointWithSecret[] {
    return this.webhookEndpoints().filter(
      (endpoint) =>
        endpoint.livemode === event.livemode &&
        endpoint.status === 'enabled' &&
        (endpoint.enabled_events.includes('*') || endpoint.enabled_events.includes(event.type)),
    );
  }

  private listEvents({ livemode, params }: ApiCall): unknown {
    rejectUnknownParams(params, [...LIST_PARAMS, 'created', 'type', 'types', 'delivery_success']);
    // As Stripe: `false` lists events still pending or not delivered to some endpoint, `true` the others.
    const deliverySuccess = booleanParam(params, 'delivery_success');
    const hasType = eventTypeFilter(params);
    const isInCreatedRange = rangeFilter(params, 'created');
    const newestFirst = [...this.events.values()]
      .filter(({ event }) => event.livemode === livemode && hasType(event.type) && isInCreatedRange(event.created))
      .filter(({ pendingEndpoints }) => deliverySuccess === undefined || deliverySuccess === (pendingEndpoints.size === 0))
      .sort((a, b) => b.event.created - a.event.created || b.sequence - a.sequence)
      .map(({ event }) => event);
    return listPage(newestFirst, params, '/v1/events', 'event');
  }

  private retrieveEvent({ livemode, params, pathParams }: ApiCall): LocalStripeEvent {
    rejectUnknownParams(params, []);
    const id = pathParams[0] as string;
    const event = this.events.get(id)?.event;
    return inMode(event, event?.livemode, livemode, () =>
      resourceMissing('event', id, { existsInLivemode: event?.livemode }),
    );
  }

  // -- Checkout line items and subscriptions -------------------------------------------------------

  setCheckoutLineItems(sessionId: string, items: CheckoutLineItemInput[], options: { livemode?: boolean } = {}): void {
    const livemode = options.livemode ?? sessionId.startsWith('cs_live_');
    this.lineItems.set(sessionId, { livemode, items: items.map((item) => seededLineItem(item, livemode)) });
  }

  private listLineItems({ livemode, params, pathParams }: ApiCall): unknown {
    rejectUnknownParams(params, LIST_PARAMS);
    const id = pathParams[0] as string;
    const created = this.commerce.checkoutLineItems(id, livemode);
    if (created) return listPage(created, params, `/v1/checkout/sessions/${id}/line_items`, 'line item');
    const stored = this.lineItems.get(id);
    const session = inMode(stored, stored?.livemode, livemode, () =>
      resourceMissing('checkout session', id, { param: 'session', existsInLivemode: stored?.livemode }),
    );
    return listPage(session.items, params, `/v1/checkout/sessions/${id}/line_items`, 'line item');
  }

  putSubscription(subscription: Stripe.Subscription): void {
    this.commerce.putSubscription(subscription);
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** The object if it exists in the caller's mode; otherwise the "No such …" error Stripe answers. */
function inMode<T>(
  found: T | undefined,
  foundLivemode: boolean | undefined,
  livemode: boolean,
  missing: () => StripeApiError,
): T {
  if (found === undefined || foundLivemode !== livemode) {
    throw missing();
  }
  return found;
}

/** Stripe takes https URLs; this fake also takes http to 127.0.0.1/localhost in test mode. */
function webhookUrl(raw: string, livemode: boolean): string {
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw invalidParam('url', `Invalid URL: ${raw}`, 'url_invalid');
  }
  const isLoopback = parsed.hostname === '127.0.0.1' || parsed.hostname === 'localhost';
  if (parsed.protocol === 'https:' || (parsed.protocol === 'http:' && !livemode && isLoopback)) {
    return raw;
  }
  const rule = livemode ? 'must use https' : 'must use https (http only for 127.0.0.1 or localhost in test mode)';
  throw invalidParam('url', `Invalid URL: ${raw}: webhook endpoint URLs ${rule}.`, 'url_invalid');
}

function enabledEvents(params: FormObject, { required }: { required: boolean }): string[] | undefined {
  const events = stringArrayParam(params, 'enabled_events');
  if (events === undefined || events.length === 0) {
    if (required || params.enabled_events !== undefined) {
      throw invalidParam('enabled_events', 'Missing required param: enabled_events.', 'parameter_missing');
    }
    return undefined;
  }
  events.forEach((type, index) => {
    if (!EVENT_TYPE_PATTERN.test(type)) {
      throw invalidParam(`enabled_events[${index}]`, `Invalid enabled_events[${index}]: ${type} is not an event type.`);
    }
  });
  return events;
}

/** `type` (a name, `*` wildcards allowed) or `types[]` (exact names, at most 20), not both. */
function eventTypeFilter(params: FormObject): (type: string) => boolean {
  const type = stringParam(params, 'type');
  const types = stringArrayParam(params, 'types');
  if (type !== undefined && types !== undefined) {
    throw invalidParam('types', 'You may only specify one of these parameters: type, types.');
  }
  if (types !== undefined) {
    if (types.length > MAX_EVENT_TYPES_FILTER) {
      throw invalidParam('types', `Invalid types: at most ${MAX_EVENT_TYPES_FILTER} event types are allowed.`);
    }
    return (candidate) => types.includes(candidate);
  }
  if (type !== undefined) {
    const pattern = new RegExp(`^${type.split('*').map(escapeRegExp).join('.*')}$`);
    return (candidate) => pattern.test(candidate);
  }
  return () => true;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function seededLineItem(input: CheckoutLineItemInput, livemode: boolean): Stripe.LineItem {
  if (!Number.isInteger(input.quantity) || input.quantity < 1) {
    throw new RangeError(`Line item quantity must be a positive integer (price ${input.priceId})`);
  }
  const unitAmount = input.unitAmount ?? DEFAULT_AMOUNT_CENTS;
  const currency = input.currency ?? DEFAULT_CURRENCY;
  const itemPrice = price({
    id: input.priceId,
    livemode,
    currency,
    unit_amount: unitAmount,
    unit_amount_decimal: String(unitAmount),
    metadata: input.priceMetadata ?? {},
    ...(input.recurring === true ? {} : { type: 'one_time', recurring: null }),
  });
  return checkoutLineItem(itemPrice, input.quantity, input.description ?? null);
}
