/**
 * Behaviour of the local Stripe, checked with the real stripe-node client so the fake stays faithful to
 * how our code (and Stripe) speak. The object builders and signing are tested in localStripe/test/.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { startLocalStripe, type LocalStripe } from '../server';
import { charge, checkoutSession, stripeEvent, subscription } from '../objects';
import { signedDelivery } from '../signing';
import { decodeStripeForm, FormDecodeError } from '../form';

const TEST_KEY = 'sk_test_fake_key_for_tests';
const LIVE_KEY = 'sk_live_fake_key_for_tests';
const LOCAL_WEBHOOK_URL = 'http://127.0.0.1:9/stripe/webhook';
const HTTPS_WEBHOOK_URL = 'https://credits.example.com/stripe/webhook';

let fake: LocalStripe;

beforeAll(async () => {
  fake = await startLocalStripe();
});

afterAll(async () => {
  await fake.close();
});

beforeEach(() => {
  fake.reset();
});

function stripeClient(key = TEST_KEY, config: Stripe.StripeConfig = {}): Stripe {
  return new Stripe(key, { ...fake.stripeConfig, maxNetworkRetries: 0, ...config });
}

function createEndpoint(client: Stripe, overrides: Partial<Stripe.WebhookEndpointCreateParams> = {}) {
  return client.webhookEndpoints.create({
    url: HTTPS_WEBHOOK_URL,
    enabled_events: ['checkout.session.completed', 'charge.refunded'],
    ...overrides,
  });
}

describe('webhook endpoints', () => {
  it('replays the first answer to an Idempotency-Key, secret included, and refuses the key with other parameters', async () => {
    const client = stripeClient();
    const first = await createEndpoint(client);
    const key = 'endpoint-create-1';
    const created = await client.webhookEndpoints.create({ url: HTTPS_WEBHOOK_URL, enabled_events: ['charge.refunded'] }, { idempotencyKey: key });
    const replayed = await client.webhookEndpoints.create({ url: HTTPS_WEBHOOK_URL, enabled_events: ['charge.refunded'] }, { idempotencyKey: key });

    expect(replayed).toEqual(created);
    expect(created.secret).toMatch(/^whsec_/);
    expect(fake.webhookEndpoints().map((endpoint) => endpoint.id)).toEqual([first.id, created.id]);
    await expect(
      client.webhookEndpoints.create({ url: HTTPS_WEBHOOK_URL, enabled_events: ['charge.dispute.created'] }, { idempotencyKey: key }),
    ).rejects.toMatchObject({ type: 'StripeIdempotencyError', statusCode: 400 });
  });

  it('reveals the signing secret only in the create response', async () => {
    const client = stripeClient();
    const created = await createEndpoint(client, {
      description: 'credits service',
      metadata: { stack: 'test' },
      api_version: '2025-03-31.basil',
    });

    expect(created).toMatchObject({
      object: 'webhook_endpoint',
      url: HTTPS_WEBHOOK_URL,
      enabled_events: ['checkout.session.completed', 'charge.refunded'],
      description: 'credits service',
      metadata: { stack: 'test' },
      api_version: '2025-03-31.basil',
      status: 'enabled',
      livemode: false,
    });
    expect(created.id).toMatch(/^we_/);
    expect(created.secret).toMatch(/^whsec_/);

    const retrieved = await client.webhookEndpoints.retrieve(created.id);
    const updated = await client.webhookEndpoints.update(created.id, { description: 'renamed' });
    const listed = await client.webhookEndpoints.list();
    for (const endpoint of [retrieved, updated, ...listed.data]) {
      expect(endpoint).not.toHaveProperty('secret');
    }
    expect(fake.webhookEndpoints()).toEqual([expect.objectContaining({ id: created.id, secret: created.secret })]);
  });

  it('decodes stripe-node form bodies into arrays and nested objects', async () => {
    await createEndpoint(stripeClient(), { metadata: { stack: 'test', owner: 'credits' } });

    const request = fake.requests.at(-1);
    expect(request).toMatchObject({
      method: 'POST',
      path: '/v1/webhook_endpoints',
      status: 200,
      livemode: false,
      body: {
        url: HTTPS_WEBHOOK_URL,
        enabled_events: ['checkout.session.completed', 'charge.refunded'],
        metadata: { stack: 'test', owner: 'credits' },
      },
    });
    expect(request?.headers['content-type']).toBe('application/x-www-form-urlencoded');
  });

  it('merges metadata on update and deletes a key sent as an empty string', async () => {
    const client = stripeClient();
    const { id } = await createEndpoint(client, { metadata: { stack: 'test', owner: 'credits' } });

    const updated = await client.webhookEndpoints.update(id, { metadata: { owner: '', region: 'eu' } });

    expect(updated.metadata).toEqual({ stack: 'test', region: 'eu' });
  });

  it('updates url and enabled events, and disabling or enabling sets the status', async () => {
    const client = stripeClient();
    const { id } = await createEndpoint(client);

    const disabled = await client.webhookEndpoints.update(id, {
      disabled: true,
      url: 'https://other.example.com/hook',
      enabled_events: ['*'],
    });
    expect(disabled).toMatchObject({
      status: 'disabled',
      url: 'https://other.example.com/hook',
      enabled_events: ['*'],
    });

    const enabled = await client.webhookEndpoints.update(id, { disabled: false });
    expect(enabled.status).toBe('enabled');
  });

  it('deletes an endpoint, answering the deleted shape, after which it is not found', async () => {
    const client = stripeClient();
    const { id } = await createEndpoint(client);

    await expect(client.webhookEndpoints.del(id)).resolves.toMatchObject({
      id,
      object: 'webhook_endpoint',
      deleted: true,
    });
    await expect(client.webhookEndpoints.retrieve(id)).rejects.toMatchObject({
      type: 'StripeInvalidRequestError',
      statusCode: 404,
      code: 'resource_missing',
      message: `No such webhook endpoint: '${id}'`,
    });
    expect(fake.webhookEndpoints()).toEqual([]);
  });

  it('accepts http only for loopback URLs in test mode', async () => {
    await expect(createEndpoint(stripeClient(), { url: LOCAL_WEBHOOK_URL })).resolves.toMatchObject({
      url: LOCAL_WEBHOOK_URL,
    });
    await expect(createEndpoint(stripeClient(), { url: 'http://credits.example.com/hook' })).rejects.toMatchObject({
      statusCode: 400,
      param: 'url',
    });
    await expect(createEndpoint(stripeClient(LIVE_KEY), { url: LOCAL_WEBHOOK_URL })).rejects.toMatchObject({
      statusCode: 400,
      param: 'url',
    });
  });

  it('rejects an endpoint without enabled events, and unknown parameters, with 400', async () => {
    await expect(createEndpoint(stripeClient(), { enabled_events: [] })).rejects.toMatchObject({
      statusCode: 400,
      param: 'enabled_events',
      code: 'parameter_missing',
    });
    const withTypo = { enabled_event: ['charge.refunded'] } as unknown as Partial<Stripe.WebhookEndpointCreateParams>;
    await expect(createEndpoint(stripeClient(), withTypo)).rejects.toMatchObject({
      statusCode: 400,
      param: 'enabled_event',
      code: 'parameter_unknown',
    });
  });

  it('lists endpoints newest first in pages, and auto-pagination visits each once', async () => {
    const client = stripeClient();
    const created = [];
    for (let i = 0; i < 5; i += 1) {
      created.push(await createEndpoint(client, { description: `endpoint ${i}` }));
    }
    const newestFirst = created.map((endpoint) => endpoint.id).reverse();

    const firstPage = await client.webhookEndpoints.list({ limit: 2 });
    expect(firstPage).toMatchObject({ object: 'list', has_more: true, url: '/v1/webhook_endpoints' });
    expect(firstPage.data.map((endpoint) => endpoint.id)).toEqual(newestFirst.slice(0, 2));

    const lastPage = await client.webhookEndpoints.list({ limit: 2, starting_after: newestFirst[3] });
    expect(lastPage.data.map((endpoint) => endpoint.id)).toEqual(newestFirst.slice(4));
    expect(lastPage.has_more).toBe(false);

    const newerPage = await client.webhookEndpoints.list({ limit: 2, ending_before: newestFirst[3] });
    expect(newerPage.data.map((endpoint) => endpoint.id)).toEqual(newestFirst.slice(1, 3));
    expect(newerPage.has_more).toBe(true);

    const all = await client.webhookEndpoints.list({ limit: 2 }).autoPagingToArray({ limit: 100 });
    expect(all.map((endpoint) => endpoint.id)).toEqual(newestFirst);
  });
});

describe('authentication and modes', () => {
  it('answers 401 with a Stripe error body when no API key is sent', async () => {
    const response = await fetch(`${fake.baseUrl}/v1/webhook_endpoints`);

    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({
      error: { type: 'invalid_request_error', message: expect.stringContaining('did not provide an API key') },
    });
  });

  it('rejects a key that is not a secret or restricted key', async () => {
    await expect(stripeClient('pk_test_publishable').webhookEndpoints.list()).rejects.toMatchObject({
      type: 'StripeAuthenticationError',
      statusCode: 401,
    });
  });

  it('keeps test and live objects apart, as each key mode sees only its own', async () => {
    const live = await createEndpoint(stripeClient(LIVE_KEY));
    expect(live.livemode).toBe(true);

    const testClient = stripeClient(TEST_KEY);
    await expect(testClient.webhookEndpoints.list()).resolves.toMatchObject({ data: [] });
    await expect(testClient.webhookEndpoints.retrieve(live.id)).rejects.toMatchObject({
      statusCode: 404,
      message: expect.stringContaining('exists in live mode, but a test mode key was used'),
    });
    await expect(testClient.webhookEndpoints.del(live.id)).rejects.toMatchObject({ statusCode: 404 });

    const restricted = stripeClient('rk_live_restricted');
    await expect(restricted.webhookEndpoints.retrieve(live.id)).resolves.toMatchObject({ id: live.id });
  });

  it('answers 404 for API paths it does not fake, and 400 for a JSON body', async () => {
    const headers = { authorization: `Bearer ${TEST_KEY}` };
    const unknown = await fetch(`${fake.baseUrl}/v1/customers`, { headers });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({
      error: { type: 'invalid_request_error', message: expect.stringContaining('Unrecognized request URL') },
    });

    const json = await fetch(`${fake.baseUrl}/v1/webhook_endpoints`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ url: HTTPS_WEBHOOK_URL, enabled_events: ['*'] }),
    });
    expect(json.status).toBe(400);
    expect(fake.webhookEndpoints()).toEqual([]);
  });

  it('never records the Authorization header', async () => {
    await stripeClient().webhookEndpoints.list();

    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]?.headers).not.toHaveProperty('authorization');
    expect(JSON.stringify(fake.requests)).not.toContain(TEST_KEY);
  });
});

describe('events', () => {
  const BASE_CREATED = 1_750_000_000;

  function seedEvents(count: number, livemode = false) {
    const events = [];
    for (let i = 0; i < count; i += 1) {
      const event = stripeEvent('checkout.session.completed', checkoutSession({ livemode }), {
        created: BASE_CREATED + i,
      });
      fake.addEvent(event);
      events.push(event);
    }
    return events;
  }

  it('lists newest first with limit, has_more and starting_after, like stripe.events.list', async () => {
    const events = seedEvents(5);
    const newestFirst = events.map((event) => event.id).reverse();
    const client = stripeClient();

    const firstPage = await client.events.list({ limit: 3 });
    expect(firstPage.data.map((event) => event.id)).toEqual(newestFirst.slice(0, 3));
    expect(firstPage.has_more).toBe(true);

    const secondPage = await client.events.list({ limit: 3, starting_after: firstPage.data.at(-1)?.id });
    expect(secondPage.data.map((event) => event.id)).toEqual(newestFirst.slice(3));
    expect(secondPage.has_more).toBe(false);

    const walked = await client.events.list({ limit: 2 }).autoPagingToArray({ limit: 100 });
    expect(walked.map((event) => event.id)).toEqual(newestFirst);
    expect(walked[0]).toEqual(events.at(-1));
  });

  it('filters by created range in Unix seconds', async () => {
    const events = seedEvents(5);
    const client = stripeClient();

    const between = await client.events.list({ created: { gte: BASE_CREATED + 1, lte: BASE_CREATED + 3 } });
    expect(between.data.map((event) => event.created)).toEqual([BASE_CREATED + 3, BASE_CREATED + 2, BASE_CREATED + 1]);

    const after = await client.events.list({ created: { gt: BASE_CREATED + 3 } });
    expect(after.data.map((event) => event.id)).toEqual([events[4]?.id]);

    const exact = await client.events.list({ created: BASE_CREATED });
    expect(exact.data.map((event) => event.id)).toEqual([events[0]?.id]);
  });

  it('filters by type, with wildcards, or by a list of types', async () => {
    const completed = stripeEvent('checkout.session.completed', checkoutSession());
    const refunded = stripeEvent('charge.refunded', charge({ refunded: true }));
    const expired = stripeEvent('checkout.session.expired', checkoutSession({ status: 'expired' }));
    [completed, refunded, expired].forEach((event) => fake.addEvent(event));
    const client = stripeClient();

    const ids = async (params: Stripe.EventListParams) =>
      (await client.events.list(params)).data.map((event) => event.id).sort();
    await expect(ids({ type: 'charge.refunded' })).resolves.toEqual([refunded.id]);
    await expect(ids({ type: 'checkout.session.*' })).resolves.toEqual([completed.id, expired.id].sort());
    await expect(ids({ types: ['charge.refunded', 'checkout.session.expired'] })).resolves.toEqual(
      [refunded.id, expired.id].sort(),
    );
  });

  it('pages with ending_before towards newer events, keeping the types[] and created filters, as Stripe does', async () => {
    const events = seedEvents(7);
    const refund = stripeEvent('charge.refunded', charge({ refunded: true }), { created: BASE_CREATED + 3 });
    fake.addEvent(refund);
    const client = stripeClient();
    const filters = { types: ['checkout.session.completed'], created: { gte: BASE_CREATED + 1 } };

    // From the oldest matching event, each page holds the events just newer than the cursor, newest first.
    const newer = await client.events.list({ ...filters, limit: 2, ending_before: events[1]?.id });
    expect(newer.data.map((event) => event.id)).toEqual([events[3]?.id, events[2]?.id]);
    expect(newer.has_more).toBe(true);
    // stripe-node's auto-pagination with ending_before walks them oldest to newest.
    const walked = await client.events.list({ ...filters, limit: 2, ending_before: events[1]?.id }).autoPagingToArray({ limit: 100 });
    expect(walked.map((event) => event.id)).toEqual(events.slice(2).map((event) => event.id));
    expect(walked.map((event) => event.type)).not.toContain('charge.refunded');
  });

  it('lists events of the same second newest first in the order they were created', async () => {
    const first = stripeEvent('checkout.session.completed', checkoutSession(), { created: BASE_CREATED });
    const second = stripeEvent('charge.refunded', charge({ refunded: true }), { created: BASE_CREATED });
    fake.addEvent(first);
    fake.addEvent(second);
    const listed = await stripeClient().events.list({ types: ['checkout.session.completed', 'charge.refunded'], created: { gte: BASE_CREATED } });
    expect(listed.data.map((event) => event.id)).toEqual([second.id, first.id]);
  });

  it('retrieves an event by id only in its own mode', async () => {
    const [liveEvent] = seedEvents(1, true);
    const id = liveEvent?.id as string;

    await expect(stripeClient(LIVE_KEY).events.retrieve(id)).resolves.toMatchObject({ id, livemode: true });
    await expect(stripeClient(TEST_KEY).events.retrieve(id)).rejects.toMatchObject({ statusCode: 404 });
    await expect(stripeClient(TEST_KEY).events.list()).resolves.toMatchObject({ data: [] });
  });
});

describe('checkout line items and subscriptions', () => {
  it('lists the line items set for a session, with prices and amounts', async () => {
    const session = checkoutSession();
    fake.setCheckoutLineItems(session.id, [
      { priceId: 'price_credits_100', quantity: 2, unitAmount: 500, priceMetadata: { credits: '100' } },
      { priceId: 'price_credits_1000', quantity: 1 },
    ]);

    const items = await stripeClient().checkout.sessions.listLineItems(session.id);

    expect(items).toMatchObject({
      object: 'list',
      has_more: false,
      url: `/v1/checkout/sessions/${session.id}/line_items`,
    });
    expect(items.data).toEqual([
      expect.objectContaining({
        object: 'item',
        quantity: 2,
        amount_subtotal: 1000,
        amount_total: 1000,
        currency: 'usd',
        price: expect.objectContaining({
          id: 'price_credits_100',
          object: 'price',
          unit_amount: 500,
          type: 'one_time',
          metadata: { credits: '100' },
        }),
      }),
      expect.objectContaining({ quantity: 1, price: expect.objectContaining({ id: 'price_credits_1000' }) }),
    ]);
  });

  it('answers 404 for the line items of an unknown session', async () => {
    await expect(stripeClient().checkout.sessions.listLineItems('cs_test_unknown')).rejects.toMatchObject({
      statusCode: 404,
      code: 'resource_missing',
    });
  });

  it('retrieves a stored subscription in its mode', async () => {
    const sub = subscription({}, { priceId: 'price_monthly', monthlyCredits: 500 });
    fake.putSubscription(sub);

    // stripe-node turns *_decimal strings of API responses into Decimal objects, so compare the rest.
    const retrieved = await stripeClient().subscriptions.retrieve(sub.id);
    expect(retrieved).toMatchObject({
      id: sub.id,
      status: 'active',
      customer: sub.customer,
      items: {
        data: [
          {
            id: sub.items.data[0]?.id,
            current_period_end: sub.items.data[0]?.current_period_end,
            price: { id: 'price_monthly', metadata: { monthly_credits: '500' } },
          },
        ],
      },
    });
    await expect(stripeClient(LIVE_KEY).subscriptions.retrieve(sub.id)).rejects.toMatchObject({ statusCode: 404 });
  });
});

describe('failNext', () => {
  it('fails the next requests with the given status and then recovers', async () => {
    const client = stripeClient();
    fake.failNext(1, 503);

    await expect(client.events.list()).rejects.toMatchObject({ type: 'StripeAPIError', statusCode: 503 });
    await expect(client.events.list()).resolves.toMatchObject({ object: 'list' });
    expect(fake.requests.map((request) => request.status)).toEqual([503, 200]);
  });

  it('lets stripe-node retries succeed after transient server errors', async () => {
    const client = stripeClient(TEST_KEY, { maxNetworkRetries: 2 });
    fake.failNext(2, 500);

    await expect(createEndpoint(client)).resolves.toMatchObject({ object: 'webhook_endpoint' });

    expect(fake.requests.map((request) => request.status)).toEqual([500, 500, 200]);
    const idempotencyKeys = new Set(fake.requests.map((request) => request.headers['idempotency-key']));
    expect(idempotencyKeys.size).toBe(1);
    expect(fake.webhookEndpoints()).toHaveLength(1);
  });
});

describe('rateLimitNext', () => {
  it("answers 429 with Stripe's rate-limit error and header, which stripe-node reads as a StripeRateLimitError, then recovers", async () => {
    const client = stripeClient(TEST_KEY, { maxNetworkRetries: 2 });
    fake.rateLimitNext(1);
    fake.rateLimitNext(1, { retryAfterSeconds: 3, reason: 'endpoint-rate' });

    const first = await client.events.list().catch((error: unknown) => error);
    expect(first).toMatchObject({ type: 'StripeRateLimitError', statusCode: 429, code: 'rate_limit', doc_url: 'https://stripe.com/docs/error-codes/rate-limit' });
    expect((first as { headers: Record<string, string> }).headers).toMatchObject({ 'stripe-rate-limited-reason': 'global-rate' });
    expect((first as { headers: Record<string, string> }).headers['retry-after']).toBeUndefined();
    const second = await client.events.list().catch((error: unknown) => error);
    expect((second as { headers: Record<string, string> }).headers).toMatchObject({ 'stripe-rate-limited-reason': 'endpoint-rate', 'retry-after': '3' });
    await expect(client.events.list()).resolves.toMatchObject({ object: 'list' });
    // stripe-node does not retry a 429 by itself: each refusal was one request.
    expect(fake.requests.map((request) => request.status)).toEqual([429, 429, 200]);
  });
});

// ---------------------------------------------------------------------------------------------
// Webhook delivery

interface Receiver {
  url: string;
  received: Stripe.Event[];
  close(): Promise<void>;
}

/** A tiny webhook receiver that verifies each delivery with stripe-node, as our service does. */
async function startReceiver(secret: string): Promise<Receiver> {
  const received: Stripe.Event[] = [];
  const verifier = new Stripe('sk_test_receiver');
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      try {
        const signature = req.headers['stripe-signature'] ?? '';
        const event = verifier.webhooks.constructEvent(Buffer.concat(chunks), signature, secret);
        received.push(event);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"received":true}');
      } catch {
        res.writeHead(400).end('bad signature');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/stripe/webhook`,
    received,
    close: () => new Promise((resolve, reject) => server.close((error) => (error ? reject(error) : resolve()))),
  };
}

describe('webhook delivery', () => {
  const receivers: Receiver[] = [];

  afterEach(async () => {
    await Promise.all(receivers.splice(0).map((receiver) => receiver.close()));
  });

  async function endpointWithReceiver(
    client: Stripe,
    enabledEvents: Stripe.WebhookEndpointCreateParams.EnabledEvent[] = ['checkout.session.completed'],
  ) {
    // Create first to learn the secret, then point the endpoint at a receiver that holds it.
    const endpoint = await createEndpoint(client, { enabled_events: enabledEvents });
    const receiver = await startReceiver(endpoint.secret as string);
    receivers.push(receiver);
    await client.webhookEndpoints.update(endpoint.id, { url: receiver.url });
    return { endpoint, receiver };
  }

  it('signs a delivery with the endpoint secret so constructEvent accepts it', async () => {
    const { receiver } = await endpointWithReceiver(stripeClient());
    const event = stripeEvent('checkout.session.completed', checkoutSession());

    const result = await fake.deliver(event, receiver.url);

    expect(result).toMatchObject({ status: 200, body: '{"received":true}' });
    expect(receiver.received).toEqual([event]);
  });

  it('sends one v1 signature per secret during a roll, and either secret verifies', async () => {
    const oldSecret = 'whsec_old_secret';
    const newSecret = 'whsec_new_secret';
    const oldReceiver = await startReceiver(oldSecret);
    const newReceiver = await startReceiver(newSecret);
    receivers.push(oldReceiver, newReceiver);
    const event = stripeEvent('charge.refunded', charge({ refunded: true, amount_refunded: 1000 }));

    const delivery = signedDelivery(event, [oldSecret, newSecret]);
    expect(delivery.headers['stripe-signature']).toMatch(/^t=\d+,v1=[0-9a-f]{64},v1=[0-9a-f]{64}$/);

    const options = { secrets: [oldSecret, newSecret] };
    await expect(fake.deliver(event, oldReceiver.url, options)).resolves.toMatchObject({ status: 200 });
    await expect(fake.deliver(event, newReceiver.url, options)).resolves.toMatchObject({ status: 200 });
  });

  it('is rejected by a receiver holding a different secret', async () => {
    const receiver = await startReceiver('whsec_receiver_secret');
    receivers.push(receiver);
    const event = stripeEvent('checkout.session.completed', checkoutSession());

    const result = await fake.deliver(event, receiver.url, { secrets: ['whsec_someone_else'] });

    expect(result.status).toBe(400);
    expect(receiver.received).toEqual([]);
  });

  it('delivers to every enabled endpoint of the event mode subscribed to its type', async () => {
    const client = stripeClient();
    const subscribed = await endpointWithReceiver(client, ['checkout.session.completed']);
    const wildcard = await endpointWithReceiver(client, ['*']);
    const otherType = await endpointWithReceiver(client, ['charge.refunded']);
    const disabled = await endpointWithReceiver(client, ['*']);
    await client.webhookEndpoints.update(disabled.endpoint.id, { disabled: true });
    const event = stripeEvent('checkout.session.completed', checkoutSession());

    const results = await fake.deliverToEndpoints(event);

    expect(results.map((result) => [result.endpointId, result.status])).toEqual([
      [subscribed.endpoint.id, 200],
      [wildcard.endpoint.id, 200],
    ]);
    expect(subscribed.receiver.received).toHaveLength(1);
    expect(wildcard.receiver.received).toHaveLength(1);
    expect(otherType.receiver.received).toHaveLength(0);
    expect(disabled.receiver.received).toHaveLength(0);
  });

  it('refuses to deliver to a URL with no endpoint in the event mode unless given secrets', async () => {
    await createEndpoint(stripeClient(), { url: LOCAL_WEBHOOK_URL });
    const liveEvent = stripeEvent('checkout.session.completed', checkoutSession({ livemode: true }));

    await expect(fake.deliver(liveEvent, LOCAL_WEBHOOK_URL)).rejects.toThrow(/no live mode webhook endpoint/);
  });
});

describe('stripe form decoding', () => {
  it('turns bracket notation into nested objects and arrays', () => {
    const encoded =
      'enabled_events[1]=b&enabled_events[0]=a&metadata[stack]=test&created[gte]=1&types[]=x&types[]=y&q=a%20b';
    expect(decodeStripeForm(encoded)).toEqual({
      enabled_events: ['a', 'b'],
      metadata: { stack: 'test' },
      created: { gte: '1' },
      types: ['x', 'y'],
      q: 'a b',
    });
  });

  it('rejects conflicting keys and prototype-polluting names', () => {
    expect(() => decodeStripeForm('a=1&a[b]=2')).toThrow(FormDecodeError);
    expect(() => decodeStripeForm('a=1&a=2')).toThrow(FormDecodeError);
    expect(() => decodeStripeForm('__proto__[x]=1')).toThrow(FormDecodeError);
  });
});
