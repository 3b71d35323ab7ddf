/**
 * The local Stripe: a real HTTP server on 127.0.0.1 that speaks the parts of the v1 API this project calls
 * the way stripe-node v23 calls them (Bearer API keys, form-encoded bodies with bracket notation, JSON
 * answers, Stripe-shaped errors, Idempotency-Key, cursor pagination, test/live separation by the key), serves
 * a stand-in of the hosted Checkout page, and delivers the events it creates to its webhook endpoints signed
 * exactly as Stripe signs them. Tests, `npm start` in development and the local Pulumi stack all use it.
 *
 * Served: prices, Checkout Sessions (create, retrieve, list, line items, expire) and their hosted page,
 * subscriptions, invoices, customers, events (list with delivery_success, retrieve), webhook endpoints
 * (create/retrieve/update/list/delete). Tests may also seed events (addEvent), line items
 * (setCheckoutLineItems) and subscriptions (putSubscription), make requests fail (failNext) and deliver
 * events of their own (deliver). Anything else answers 404 like an unknown Stripe URL, and parameters an
 * endpoint does not take answer 400, so a client mistake shows up here before it reaches Stripe.
 *
 *   const stripe = await startLocalStripe();
 *   new Stripe('sk_test_anything', { ...stripe.stripeConfig });   // or give the code under test stripe.baseUrl
 */
import http from 'node:http';
import type Stripe from 'stripe';
import type { AddressInfo } from 'node:net';
import { invalidParam, StripeApiError } from './apiConventions';
import {
  LocalStripeResources,
  type CheckoutLineItemInput,
  type LocalStripeEvent,
  type WebhookEndpointWithSecret,
} from './resources';
import { LocalCommerce, type CheckoutOutcome, type DelayedPaymentOutcome, type EmittedEvent, type NewPrice } from './commerce';
import { DEFAULT_DELIVERY_SCHEDULE, postDelivery, WebhookDeliveries, type DeliveryAttempt, type DeliveryResult, type DeliverySchedule } from './delivery';
import { decodeStripeForm, FormDecodeError, type FormObject } from './form';
import { isHostedCheckoutPath, serveHostedCheckout } from './hostedCheckout';
import { DEFAULT_EVENT_API_VERSION, stripeEvent, stripeId } from './objects';
import { signedDelivery } from './signing';

export type { CheckoutLineItemInput, LocalStripeEvent, WebhookEndpointWithSecret } from './resources';
export type { CheckoutOutcome, DelayedPaymentOutcome, NewPrice } from './commerce';
export type { DeliveryAttempt, DeliveryResult, DeliverySchedule } from './delivery';

const LOOPBACK_HOST = '127.0.0.1';
const DEFAULT_DELIVERY_TIMEOUT_MILLIS = 30_000;
const API_KEY_PATTERN = /^(?:sk|rk)_(test|live)_\S+$/;
const FORM_CONTENT_TYPE = 'application/x-www-form-urlencoded';

export interface RecordedRequest {
  method: string;
  path: string;
  query: FormObject;
  body: FormObject;
  /** Request headers except `authorization`, which is never recorded. */
  headers: Record<string, string | string[] | undefined>;
  /** The mode of the API key used, or null when it was missing or malformed. */
  livemode: boolean | null;
  /** The status the local Stripe answered with. */
  status: number;
  /** When the request arrived (Date.now()). */
  receivedAtMillis: number;
}

export interface DeliverOptions {
  /** Default: the secrets of the endpoints (any status) with this url in the event's mode. */
  secrets?: readonly string[];
  /** Signature timestamp in Unix seconds; default now. */
  timestampSeconds?: number;
  timeoutMillis?: number;
}

export interface EndpointDeliveryResult extends DeliveryResult {
  endpointId: string;
  url: string;
}

export interface LocalStripeOptions {
  host?: typeof LOOPBACK_HOST;
  /** Default: a free port. */
  port?: number;
  /** When failed deliveries are retried, and how much the first attempts are spread. */
  delivery?: Partial<DeliverySchedule>;
}

export interface LocalStripe {
  /** e.g. `http://127.0.0.1:38211`: give it as STRIPE_API_BASE. */
  readonly baseUrl: string;
  /** Spread into stripe-node's config: `new Stripe(key, { ...stripe.stripeConfig })`. */
  readonly stripeConfig: { host: string; port: number; protocol: 'http' };
  /** Every API request received, oldest first. */
  readonly requests: readonly RecordedRequest[];
  /** Every webhook delivery attempt of the events the local Stripe created, oldest first. */
  readonly deliveryAttempts: readonly DeliveryAttempt[];
  /** Current endpoints of both modes, oldest first, including their signing secrets. */
  webhookEndpoints(): WebhookEndpointWithSecret[];
  /** Registers an endpoint as the Dashboard does, optionally with a signing secret of the caller's choice. */
  addWebhookEndpoint(input: { url: string; enabledEvents: string[]; secret?: string; livemode?: boolean; apiVersion?: string | null; description?: string }): WebhookEndpointWithSecret;
  /**
   * The Dashboard's "Roll secret": returns the endpoint's new signing secret; until `expiresInMillis` has
   * passed, every delivery is signed with the old secret and the new one (two v1 signatures). `newSecret`
   * lets a test know the secret before the roll (as addWebhookEndpoint does).
   */
  rollWebhookEndpointSecret(endpointId: string, expiresInMillis: number, newSecret?: string): string;
  /**
   * Publishes an event as Stripe does when something happens: stored (listable), then delivered to every
   * enabled endpoint of its mode subscribed to its type, each signed with that endpoint's own secrets.
   */
  publishEvent(type: string, object: object, options?: { livemode?: boolean }): LocalStripeEvent;
  /** A price to sell (as the Dashboard makes one); `id` may be chosen, for a fixed development catalog. */
  createPrice(input: NewPrice): Stripe.Price;
  /** What the buyer does on the hosted page of an open session (the page's buttons do the same). */
  completeCheckout(sessionId: string, outcome: CheckoutOutcome): Stripe.Checkout.Session;
  /** The payment of a session completed with "Pay later" arrives, or fails. */
  settleDelayedPayment(sessionId: string, outcome: DelayedPaymentOutcome): Stripe.Checkout.Session;
  /** Resolves once no delivery is in flight or about to start (retries due later are not waited for). */
  deliveriesSettled(): Promise<void>;
  /** Makes an event listable and retrievable (in its own mode), as if Stripe had created it; not delivered. Its
   *  `pending_webhooks` stays as given (deliveries Stripe had not completed), and `delivery_success` agrees with it. */
  addEvent(event: LocalStripeEvent): void;
  /** Line items of a Checkout Session; the mode follows the id (`cs_live_…`) unless given. */
  setCheckoutLineItems(sessionId: string, items: CheckoutLineItemInput[], options?: { livemode?: boolean }): void;
  /** Stores (or replaces) a subscription for `GET /v1/subscriptions/:id`. */
  putSubscription(subscription: Stripe.Subscription): void;
  /**
   * From now on only these API keys are valid (as after rolling a key in the Dashboard: the old one works
   * until it expires, then only the new one); others get Stripe's 401. Undefined: any well-formed key.
   */
  acceptOnlyApiKeys(keys: readonly string[] | undefined): void;
  /** The next `count` API requests (after recording them) fail with `status` and a Stripe error body. */
  failNext(count: number, status: number): void;
  /**
   * The next `count` API requests are refused by Stripe's rate limiter: 429, `Stripe-Rate-Limited-Reason`, the
   * `rate_limit` error body. Stripe documents no Retry-After for it; `retryAfterSeconds` adds one.
   */
  rateLimitNext(count: number, options?: { retryAfterSeconds?: number; reason?: RateLimitedReason }): void;
  /** POSTs the event to `url` signed as Stripe signs it; resolves with the receiver's answer. */
  deliver(event: object | string, url: string, options?: DeliverOptions): Promise<DeliveryResult>;
  /** Delivers to every enabled endpoint of the event's mode subscribed to its type (or '*'), one by one. */
  deliverToEndpoints(
    event: LocalStripeEvent,
    options?: Omit<DeliverOptions, 'secrets'>,
  ): Promise<EndpointDeliveryResult[]>;
  /** Forgets all objects, recorded requests and pending failures. */
  reset(): void;
  close(): Promise<void>;
}

export async function startLocalStripe(options: LocalStripeOptions = {}): Promise<LocalStripe> {
  const local = new LocalStripeServer(options.host ?? LOOPBACK_HOST, { ...DEFAULT_DELIVERY_SCHEDULE, ...options.delivery });
  await local.listen(options.port ?? 0);
  return local;
}

// ---------------------------------------------------------------------------------------------

class LocalStripeServer implements LocalStripe {
  private readonly server = http.createServer((req, res) => {
    this.handle(req, res).catch((error: unknown) => res.destroy(error instanceof Error ? error : undefined));
  });
  private port = 0;
  private closing: Promise<void> | undefined;
  private readonly recorded: RecordedRequest[] = [];
  private pendingFailures: PendingFailure[] = [];
  private validApiKeys: ReadonlySet<string> | undefined;
  private readonly commerce = new LocalCommerce(
    (sessionId) => `${this.baseUrl}/c/pay/${sessionId}`,
    (events, livemode) => this.publish(events, livemode),
  );
  private readonly resources = new LocalStripeResources(this.commerce);
  private readonly deliveries: WebhookDeliveries;
  /** First answer per Idempotency-Key (scoped by mode), with the request it answered. */
  private readonly idempotentResults = new Map<string, { request: string; status: number; payload: unknown }>();

  constructor(
    private readonly host: string,
    schedule: DeliverySchedule,
  ) {
    this.deliveries = new WebhookDeliveries(
      schedule,
      (eventId, endpointId) => this.resources.markDelivered(eventId, endpointId),
      (endpointId) => this.resources.currentDeliveryTarget(endpointId),
    );
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, this.host, () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  get baseUrl(): string {
    return `http://${this.host}:${this.port}`;
  }

  get stripeConfig(): LocalStripe['stripeConfig'] {
    return { host: this.host, port: this.port, protocol: 'http' };
  }

  get requests(): readonly RecordedRequest[] {
    return this.recorded;
  }

  get deliveryAttempts(): readonly DeliveryAttempt[] {
    return this.deliveries.attempts;
  }

  close(): Promise<void> {
    this.deliveries.close();
    this.closing ??= new Promise<void>((resolve, reject) => {
      this.server.close((error) => (error ? reject(error) : resolve()));
      // stripe-node keeps connections alive; do not wait for them to idle out.
      this.server.closeAllConnections();
    });
    return this.closing;
  }

  reset(): void {
    this.recorded.length = 0;
    this.idempotentResults.clear();
    this.pendingFailures = [];
    this.validApiKeys = undefined;
    this.deliveries.reset();
    this.resources.reset();
  }

  webhookEndpoints(): WebhookEndpointWithSecret[] {
    return this.resources.webhookEndpoints();
  }

  addEvent(event: LocalStripeEvent): void {
    this.resources.addEvent(event);
  }

  setCheckoutLineItems(sessionId: string, items: CheckoutLineItemInput[], options?: { livemode?: boolean }): void {
    this.resources.setCheckoutLineItems(sessionId, items, options);
  }

  putSubscription(subscription: Stripe.Subscription): void {
    this.resources.putSubscription(subscription);
  }

  addWebhookEndpoint(input: Parameters<LocalStripe['addWebhookEndpoint']>[0]): WebhookEndpointWithSecret {
    return this.resources.addWebhookEndpoint(input);
  }

  rollWebhookEndpointSecret(endpointId: string, expiresInMillis: number, newSecret?: string): string {
    return this.resources.rollWebhookEndpointSecret(endpointId, expiresInMillis, newSecret);
  }

  publishEvent(type: string, object: object, options: { livemode?: boolean } = {}): LocalStripeEvent {
    return this.publish([{ type, object, created: Math.floor(Date.now() / 1000) }], options.livemode ?? false)[0]!;
  }

  createPrice(input: NewPrice): Stripe.Price {
    return this.commerce.createPrice(input);
  }

  completeCheckout(sessionId: string, outcome: CheckoutOutcome): Stripe.Checkout.Session {
    return this.commerce.completeCheckout(sessionId, outcome);
  }

  settleDelayedPayment(sessionId: string, outcome: DelayedPaymentOutcome): Stripe.Checkout.Session {
    return this.commerce.settleDelayedPayment(sessionId, outcome);
  }

  deliveriesSettled(): Promise<void> {
    return this.deliveries.settled();
  }

  /** Events of something that happened: stored (listable), then delivered to each subscribed endpoint. */
  private publish(emitted: EmittedEvent[], livemode: boolean): LocalStripeEvent[] {
    return emitted.map(({ type, object, created, previousAttributes }) => {
      const endpoints = this.resources.subscribedEndpoints({ type, livemode });
      const event = stripeEvent(type, object, { created, livemode, previousAttributes, pendingWebhooks: endpoints.length });
      this.resources.addEvent(event, endpoints.map((endpoint) => endpoint.id));
      this.deliveries.enqueue(event, endpoints);
      return event;
    });
  }

  acceptOnlyApiKeys(keys: readonly string[] | undefined): void {
    this.validApiKeys = keys === undefined ? undefined : new Set(keys);
  }

  failNext(count: number, status: number): void {
    if (!Number.isInteger(count) || count < 1) {
      throw new RangeError('failNext count must be a positive integer');
    }
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new RangeError('failNext status must be an HTTP error status (400–599)');
    }
    this.pendingFailures.push(...Array.from({ length: count }, (): PendingFailure => ({ status })));
  }

  rateLimitNext(count: number, options: { retryAfterSeconds?: number; reason?: RateLimitedReason } = {}): void {
    if (!Number.isInteger(count) || count < 1) {
      throw new RangeError('rateLimitNext count must be a positive integer');
    }
    const rateLimit = { reason: options.reason ?? 'global-rate', retryAfterSeconds: options.retryAfterSeconds };
    this.pendingFailures.push(...Array.from({ length: count }, (): PendingFailure => ({ status: 429, rateLimit })));
  }

  // -- HTTP plumbing ----------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', this.baseUrl);
    if (isHostedCheckoutPath(url.pathname)) return serveHostedCheckout(req, res, url.pathname, this.commerce);
    const { authorization, ...headersWithoutAuthorization } = req.headers;
    const livemode = apiKeyLivemode(authorization);
    const record: RecordedRequest = {
      method,
      path: url.pathname,
      query: {},
      body: {},
      headers: headersWithoutAuthorization,
      livemode,
      status: 0,
      receivedAtMillis: Date.now(),
    };
    this.recorded.push(record);

    let status = 200;
    let payload: unknown;
    const responseHeaders: http.OutgoingHttpHeaders = {};
    try {
      const rawBody = await readBody(req);
      record.query = decodeStripeForm(url.search.slice(1));
      record.body = decodeRequestBody(rawBody, req.headers['content-type']);
      const injected = this.pendingFailures.shift();
      if (injected?.rateLimit) {
        responseHeaders['stripe-rate-limited-reason'] = injected.rateLimit.reason;
        if (injected.rateLimit.retryAfterSeconds !== undefined) responseHeaders['retry-after'] = String(injected.rateLimit.retryAfterSeconds);
        throw rateLimited();
      }
      if (injected !== undefined) {
        throw new StripeApiError(injected.status, `Simulated ${injected.status} failure (local Stripe failNext).`);
      }
      if (livemode === null || (this.validApiKeys && !this.validApiKeys.has(bearerKey(authorization) ?? ''))) {
        throw unauthenticated(authorization);
      }
      const params = method === 'POST' ? record.body : record.query;
      const idempotencyKey = method === 'POST' ? headerValue(req.headers['idempotency-key']) : undefined;
      if (idempotencyKey === undefined) {
        payload = this.resources.handle(method, url.pathname, { livemode, params });
      } else {
        // Stripe replays the first answer to a key (for 24 hours), and refuses the key with other parameters.
        const request = `${livemode}:${url.pathname}:${rawBody}`;
        const scopedKey = `${livemode}:${idempotencyKey}`;
        const first = this.idempotentResults.get(scopedKey);
        if (first && first.request !== request) {
          throw new StripeApiError(400, `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${idempotencyKey}' if you meant to execute a different request.`, { type: 'idempotency_error' });
        }
        if (first) {
          responseHeaders['idempotent-replayed'] = 'true';
          status = first.status;
          payload = first.payload;
        } else {
          try {
            payload = this.resources.handle(method, url.pathname, { livemode, params });
          } catch (error) {
            const apiError = toApiError(error);
            if (apiError.status < 500) this.idempotentResults.set(scopedKey, { request, status: apiError.status, payload: apiError.body() });
            throw error;
          }
          this.idempotentResults.set(scopedKey, { request, status: 200, payload });
        }
      }
    } catch (error) {
      const apiError = toApiError(error);
      if (apiError.status >= 500 && !(error instanceof StripeApiError)) {
        // A bug in the fake, not a simulated outage: tell stripe-node not to retry it.
        responseHeaders['stripe-should-retry'] = 'false';
      }
      status = apiError.status;
      payload = apiError.body();
    }
    record.status = status;
    res.writeHead(status, {
      ...responseHeaders,
      'content-type': 'application/json',
      'request-id': stripeId('req'),
      'stripe-version': req.headers['stripe-version'] ?? DEFAULT_EVENT_API_VERSION,
    });
    res.end(JSON.stringify(payload, null, 2));
  }

  // -- Webhook delivery ---------------------------------------------------------------------------

  async deliver(event: object | string, url: string, options: DeliverOptions = {}): Promise<DeliveryResult> {
    const livemode = eventLivemode(event);
    const secrets =
      options.secrets ??
      this.resources
        .webhookEndpoints()
        .filter((endpoint) => endpoint.url === url && endpoint.livemode === livemode)
        .flatMap((endpoint) => this.resources.currentDeliveryTarget(endpoint.id)?.secrets ?? []);
    if (secrets.length === 0) {
      const mode = livemode ? 'live' : 'test';
      throw new Error(
        `The local Stripe has no ${mode} mode webhook endpoint for ${url}: create one or pass options.secrets`,
      );
    }
    const delivery = signedDelivery(event, secrets, { timestampSeconds: options.timestampSeconds });
    return postDelivery(url, delivery, options.timeoutMillis ?? DEFAULT_DELIVERY_TIMEOUT_MILLIS);
  }

  async deliverToEndpoints(
    event: LocalStripeEvent,
    options: Omit<DeliverOptions, 'secrets'> = {},
  ): Promise<EndpointDeliveryResult[]> {
    const subscribed = this.resources.subscribedEndpoints(event);
    const results: EndpointDeliveryResult[] = [];
    for (const endpoint of subscribed) {
      const result = await this.deliver(event, endpoint.url, { ...options, secrets: this.resources.currentDeliveryTarget(endpoint.id)?.secrets ?? [endpoint.secret] });
      // A stored event this endpoint had not acknowledged yet is delivered now, as far as Stripe can tell.
      if (result.status >= 200 && result.status < 300) this.resources.markDelivered(event.id, endpoint.id);
      results.push({ ...result, endpointId: endpoint.id, url: endpoint.url });
    }
    return results;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** The values Stripe documents for `Stripe-Rate-Limited-Reason`. */
export type RateLimitedReason = 'global-rate' | 'endpoint-rate' | 'global-concurrency' | 'endpoint-concurrency' | 'resource-specific';

interface PendingFailure {
  status: number;
  rateLimit?: { reason: RateLimitedReason; retryAfterSeconds: number | undefined };
}

/** What Stripe answers over its rate limit (stripe-node makes it a StripeRateLimitError). */
function rateLimited(): StripeApiError {
  return new StripeApiError(429, 'Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.', {
    code: 'rate_limit',
    docUrl: 'https://stripe.com/docs/error-codes/rate-limit',
  });
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function bearerKey(authorization: string | undefined): string | undefined {
  return /^Bearer (\S+)$/.exec(authorization ?? '')?.[1];
}

function apiKeyLivemode(authorization: string | undefined): boolean | null {
  const key = bearerKey(authorization);
  const mode = key === undefined ? undefined : API_KEY_PATTERN.exec(key)?.[1];
  return mode === undefined ? null : mode === 'live';
}

function unauthenticated(authorization: string | undefined): StripeApiError {
  // Like Stripe, never echo the key back.
  const message =
    authorization === undefined
      ? 'You did not provide an API key. You need to provide your API key in the Authorization header, ' +
        "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
      : 'Invalid API Key provided.';
  return new StripeApiError(401, message);
}

function toApiError(error: unknown): StripeApiError {
  if (error instanceof StripeApiError) {
    return error;
  }
  if (error instanceof FormDecodeError) {
    return invalidParam(error.param, error.message);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new StripeApiError(500, `Internal error in the local Stripe: ${message}`);
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function decodeRequestBody(rawBody: string, contentType: string | undefined): FormObject {
  if (rawBody === '') {
    return {};
  }
  if (!(contentType ?? '').toLowerCase().startsWith(FORM_CONTENT_TYPE)) {
    throw new StripeApiError(
      400,
      `Invalid request: unsupported Content-Type ${contentType ?? '(none)'}. The v1 API takes ${FORM_CONTENT_TYPE}.`,
    );
  }
  return decodeStripeForm(rawBody);
}

function eventLivemode(event: object | string): boolean {
  let parsed: unknown = event;
  if (typeof event === 'string') {
    try {
      parsed = JSON.parse(event);
    } catch {
      return false;
    }
  }
  return typeof parsed === 'object' && parsed !== null && 'livemode' in parsed && parsed.livemode === true;
}
