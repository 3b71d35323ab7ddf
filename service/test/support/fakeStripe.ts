/**
 * A local fake of the parts of the Stripe API this project calls, and of Stripe's webhook delivery.
 *
 * It is a real HTTP server on 127.0.0.1 (random port) that speaks the v1 API the way stripe-node v23
 * calls it: Bearer API keys, form-encoded bodies with bracket notation, JSON answers, Stripe-shaped
 * errors, cursor pagination, and test/live mode separation decided by the key. Point a client at it with
 * `new Stripe(key, { ...fake.stripeConfig })`, or give the code under test `fake.baseUrl`.
 *
 * Supported: Idempotency-Key on POST (the first answer is replayed, other parameters refused),
 * webhook endpoints (create/retrieve/update/list/delete), events (list/retrieve; seeded
 * with addEvent), Checkout Session line items (seeded with setCheckoutLineItems) and subscriptions
 * (seeded with putSubscription). Anything else answers 404 like an unknown Stripe URL, and parameters
 * an endpoint does not take answer 400, so a client mistake shows up here before it reaches Stripe.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { invalidParam, StripeApiError } from './fakeStripeApi';
import {
  FakeStripeResources,
  type CheckoutLineItemInput,
  type FakeStripeEvent,
  type WebhookEndpointWithSecret,
} from './fakeStripeResources';
import { DEFAULT_EVENT_API_VERSION, signedDelivery, stripeId, type WebhookDelivery } from './stripeFixtures';
import { decodeStripeForm, FormDecodeError, type FormObject } from './stripeForm';

export type { CheckoutLineItemInput, FakeStripeEvent, WebhookEndpointWithSecret } from './fakeStripeResources';

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
  /** The status the fake answered with. */
  status: number;
}

export interface DeliverOptions {
  /** Default: the secrets of the endpoints (any status) with this url in the event's mode. */
  secrets?: readonly string[];
  /** Signature timestamp in Unix seconds; default now. */
  timestampSeconds?: number;
  timeoutMillis?: number;
}

export interface DeliveryResult {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

export interface EndpointDeliveryResult extends DeliveryResult {
  endpointId: string;
  url: string;
}

export interface FakeStripe {
  /** e.g. `http://127.0.0.1:38211` */
  readonly baseUrl: string;
  /** Spread into stripe-node's config: `new Stripe(key, { ...fake.stripeConfig })`. */
  readonly stripeConfig: { host: string; port: number; protocol: 'http' };
  /** Every API request received, oldest first. */
  readonly requests: readonly RecordedRequest[];
  /** Current endpoints of both modes, oldest first, including their signing secrets. */
  webhookEndpoints(): WebhookEndpointWithSecret[];
  /** Makes an event listable and retrievable (in its own mode), as if Stripe had created it. */
  addEvent(event: FakeStripeEvent): void;
  /** Line items of a Checkout Session; the mode follows the id (`cs_live_…`) unless given. */
  setCheckoutLineItems(sessionId: string, items: CheckoutLineItemInput[], options?: { livemode?: boolean }): void;
  /** Stores (or replaces) a subscription for `GET /v1/subscriptions/:id`. */
  putSubscription(subscription: { id: string; object: 'subscription'; livemode: boolean }): void;
  /** The next `count` API requests (after recording them) fail with `status` and a Stripe error body. */
  failNext(count: number, status: number): void;
  /** POSTs the event to `url` signed as Stripe signs it; resolves with the receiver's answer. */
  deliver(event: object | string, url: string, options?: DeliverOptions): Promise<DeliveryResult>;
  /** Delivers to every enabled endpoint of the event's mode subscribed to its type (or '*'), one by one. */
  deliverToEndpoints(
    event: FakeStripeEvent,
    options?: Omit<DeliverOptions, 'secrets'>,
  ): Promise<EndpointDeliveryResult[]>;
  /** Forgets all objects, recorded requests and pending failures. */
  reset(): void;
  close(): Promise<void>;
}

export async function startFakeStripe(options: { host?: typeof LOOPBACK_HOST } = {}): Promise<FakeStripe> {
  const fake = new FakeStripeServer(options.host ?? LOOPBACK_HOST);
  await fake.listen();
  return fake;
}

// ---------------------------------------------------------------------------------------------

class FakeStripeServer implements FakeStripe {
  private readonly server = http.createServer((req, res) => {
    this.handle(req, res).catch((error: unknown) => res.destroy(error instanceof Error ? error : undefined));
  });
  private port = 0;
  private closing: Promise<void> | undefined;
  private readonly recorded: RecordedRequest[] = [];
  private pendingFailures: number[] = [];
  private readonly resources = new FakeStripeResources();
  /** First answer per Idempotency-Key (scoped by mode), with the request it answered. */
  private readonly idempotentResults = new Map<string, { request: string; status: number; payload: unknown }>();

  constructor(private readonly host: string) {}

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, this.host, () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  get baseUrl(): string {
    return `http://${this.host}:${this.port}`;
  }

  get stripeConfig(): FakeStripe['stripeConfig'] {
    return { host: this.host, port: this.port, protocol: 'http' };
  }

  get requests(): readonly RecordedRequest[] {
    return this.recorded;
  }

  close(): Promise<void> {
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
    this.resources.reset();
  }

  webhookEndpoints(): WebhookEndpointWithSecret[] {
    return this.resources.webhookEndpoints();
  }

  addEvent(event: FakeStripeEvent): void {
    this.resources.addEvent(event);
  }

  setCheckoutLineItems(sessionId: string, items: CheckoutLineItemInput[], options?: { livemode?: boolean }): void {
    this.resources.setCheckoutLineItems(sessionId, items, options);
  }

  putSubscription(subscription: { id: string; object: 'subscription'; livemode: boolean }): void {
    this.resources.putSubscription(subscription);
  }

  failNext(count: number, status: number): void {
    if (!Number.isInteger(count) || count < 1) {
      throw new RangeError('failNext count must be a positive integer');
    }
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new RangeError('failNext status must be an HTTP error status (400–599)');
    }
    this.pendingFailures.push(...Array<number>(count).fill(status));
  }

  // -- HTTP plumbing ----------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', this.baseUrl);
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
    };
    this.recorded.push(record);

    let status = 200;
    let payload: unknown;
    const responseHeaders: http.OutgoingHttpHeaders = {};
    try {
      const rawBody = await readBody(req);
      record.query = decodeStripeForm(url.search.slice(1));
      record.body = decodeRequestBody(rawBody, req.headers['content-type']);
      const injectedStatus = this.pendingFailures.shift();
      if (injectedStatus !== undefined) {
        throw new StripeApiError(injectedStatus, `Simulated ${injectedStatus} failure (fake Stripe failNext).`);
      }
      if (livemode === null) {
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
        .map((endpoint) => endpoint.secret);
    if (secrets.length === 0) {
      const mode = livemode ? 'live' : 'test';
      throw new Error(
        `The fake Stripe has no ${mode} mode webhook endpoint for ${url}: create one or pass options.secrets`,
      );
    }
    const delivery = signedDelivery(event, secrets, { timestampSeconds: options.timestampSeconds });
    return postDelivery(url, delivery, options.timeoutMillis ?? DEFAULT_DELIVERY_TIMEOUT_MILLIS);
  }

  async deliverToEndpoints(
    event: FakeStripeEvent,
    options: Omit<DeliverOptions, 'secrets'> = {},
  ): Promise<EndpointDeliveryResult[]> {
    const subscribed = this.resources.webhookEndpoints().filter(
      (endpoint) =>
        endpoint.livemode === event.livemode &&
        endpoint.status === 'enabled' &&
        (endpoint.enabled_events.includes('*') || endpoint.enabled_events.includes(event.type)),
    );
    const results: EndpointDeliveryResult[] = [];
    for (const endpoint of subscribed) {
      const result = await this.deliver(event, endpoint.url, { ...options, secrets: [endpoint.secret] });
      results.push({ ...result, endpointId: endpoint.id, url: endpoint.url });
    }
    return results;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function apiKeyLivemode(authorization: string | undefined): boolean | null {
  const key = /^Bearer (\S+)$/.exec(authorization ?? '')?.[1];
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
  return new StripeApiError(500, `Internal error in the fake Stripe: ${message}`);
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

/** One webhook POST on a fresh connection (no keep-alive to hold the receiver's server open). */
function postDelivery(url: string, delivery: WebhookDelivery, timeoutMillis: number): Promise<DeliveryResult> {
  const target = new URL(url);
  const transport = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = transport.request(
      target,
      {
        method: 'POST',
        agent: false,
        timeout: timeoutMillis,
        headers: { ...delivery.headers, 'content-length': Buffer.byteLength(delivery.body) },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            headers: response.headers,
          }),
        );
        response.on('error', reject);
      },
    );
    request.on('timeout', () => {
      request.destroy(new Error(`Webhook delivery to ${url} timed out after ${timeoutMillis} ms`));
    });
    request.on('error', reject);
    request.end(delivery.body);
  });
}
