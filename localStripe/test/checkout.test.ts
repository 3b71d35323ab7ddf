/**
 * What the local Stripe sells and how a purchase unfolds: prices and Checkout Sessions through stripe-node,
 * the hosted page's buttons, the events each outcome creates, and their delivery to webhook endpoints
 * (signed per endpoint, retried on failure, listed by delivery success).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { startLocalStripe, type LocalStripe } from '../server';

const TEST_KEY = 'sk_test_local_checkout';
const SUCCESS_URL = 'https://shop.example.com/billing/?checkout=success&session_id={CHECKOUT_SESSION_ID}';

interface Received {
  event: Stripe.Event;
  status: number;
}

/** A webhook receiver that verifies each delivery with stripe-node, as our service does; it may fail on purpose. */
class Receiver {
  readonly received: Received[] = [];
  failuresLeft = 0;
  private readonly server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const event = Stripe.webhooks.constructEvent(Buffer.concat(chunks), String(request.headers['stripe-signature']), this.secret);
      const status = this.failuresLeft-- > 0 ? 500 : 200;
      this.received.push({ event, status });
      response.writeHead(status).end();
    });
  });
  secret = '';
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/webhook`;
  }
  types(): string[] {
    return this.received.filter((entry) => entry.status === 200).map((entry) => entry.event.type);
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

let local: LocalStripe;
let client: Stripe;
let receiver: Receiver;
let receiverUrl: string;

beforeAll(async () => {
  local = await startLocalStripe({ delivery: { retryDelaysMillis: [20, 40, 80], jitterMillis: 20 } });
  client = new Stripe(TEST_KEY, { ...local.stripeConfig, maxNetworkRetries: 0 });
  receiver = new Receiver();
  receiverUrl = await receiver.start();
});
afterAll(async () => {
  await local.close();
  await receiver.close();
});
beforeEach(() => {
  local.reset();
  receiver.received.length = 0;
  receiver.failuresLeft = 0;
  receiver.secret = local.addWebhookEndpoint({ url: receiverUrl, enabledEvents: ['*'] }).secret;
});

async function packagePrice() {
  return client.prices.create({ unit_amount: 500, currency: 'usd', product_data: { name: '500 credits' } });
}

async function planPrice() {
  return client.prices.create({ unit_amount: 2000, currency: 'usd', recurring: { interval: 'month' }, product_data: { name: 'Pro' } });
}

function openSession(priceId: string, mode: 'payment' | 'subscription' = 'payment', idempotencyKey?: string) {
  return client.checkout.sessions.create(
    {
      mode,
      line_items: [{ price: priceId, quantity: 1 }],
      success_url: SUCCESS_URL,
      cancel_url: 'https://shop.example.com/billing/?checkout=cancelled',
      client_reference_id: 'user_42',
      metadata: { user_id: 'user_42', credits: '500' },
      ...(mode === 'subscription' ? { subscription_data: { metadata: { user_id: 'user_42' } } } : {}),
    },
    idempotencyKey ? { idempotencyKey } : {},
  );
}

async function pressButton(url: string, action: string): Promise<Response> {
  return fetch(url, { method: 'POST', body: new URLSearchParams({ action }), redirect: 'manual' });
}

describe('prices and Checkout Sessions through stripe-node', () => {
  test('a price is created, retrieved and listed; a session opens at the hosted page with its line items', async () => {
    const price = await packagePrice();
    expect(price).toMatchObject({ object: 'price', unit_amount: 500, currency: 'usd', type: 'one_time', livemode: false });
    expect(await client.prices.retrieve(price.id)).toEqual(price);
    expect((await client.prices.list()).data.map((listed) => listed.id)).toEqual([price.id]);

    const session = await openSession(price.id);
    expect(session).toMatchObject({ object: 'checkout.session', status: 'open', payment_status: 'unpaid', mode: 'payment', amount_total: 500, client_reference_id: 'user_42' });
    expect(session.id).toMatch(/^cs_test_/);
    expect(session.url).toBe(`${local.baseUrl}/c/pay/${session.id}`);
    expect(await client.checkout.sessions.retrieve(session.id)).toEqual(session);
    const items = await client.checkout.sessions.listLineItems(session.id);
    expect(items.data).toEqual([expect.objectContaining({ quantity: 1, amount_total: 500, price: expect.objectContaining({ id: price.id }) })]);
    const expanded = await client.checkout.sessions.retrieve(session.id, { expand: ['line_items'] });
    expect(expanded.line_items?.data).toHaveLength(1);
    expect((await client.checkout.sessions.list({ status: 'open' })).data.map((listed) => listed.id)).toEqual([session.id]);
  });

  test('an Idempotency-Key replays the first session; the same key with another price is refused', async () => {
    const [first, second] = [await packagePrice(), await packagePrice()];
    const created = await openSession(first.id, 'payment', 'checkout-key-1');
    expect(await openSession(first.id, 'payment', 'checkout-key-1')).toEqual(created);
    await expect(openSession(second.id, 'payment', 'checkout-key-1')).rejects.toMatchObject({ type: 'StripeIdempotencyError' });
    expect((await client.checkout.sessions.list()).data).toHaveLength(1);
  });

  test('a recurring price is refused in payment mode, a one-time price in subscription mode, an unknown price always', async () => {
    await expect(openSession((await planPrice()).id, 'payment')).rejects.toMatchObject({ statusCode: 400, param: 'line_items[0][price]' });
    await expect(openSession((await packagePrice()).id, 'subscription')).rejects.toMatchObject({ statusCode: 400 });
    await expect(openSession('price_missing')).rejects.toMatchObject({ statusCode: 400, code: 'resource_missing' });
  });

  test('an open session can be expired, and then cannot be paid', async () => {
    const session = await openSession((await packagePrice()).id);
    expect(await client.checkout.sessions.expire(session.id)).toMatchObject({ status: 'expired', url: null });
    const page = await pressButton(session.url!, 'pay');
    expect(page.status).toBe(409);
    await local.deliveriesSettled();
    expect(receiver.types()).toEqual(['checkout.session.expired']);
  });
});

describe('the hosted checkout page', () => {
  test('shows what the session sells and the three buttons; Pay sends the buyer to the success URL', async () => {
    const session = await openSession((await packagePrice()).id);
    const page = await (await fetch(session.url!)).text();
    expect(page).toContain('500 credits');
    for (const label of ['Pay', 'Decline', 'Pay later']) expect(page).toContain(`>${label}</button>`);

    const paid = await pressButton(session.url!, 'pay');
    expect(paid.status).toBe(303);
    expect(paid.headers.get('location')).toBe(SUCCESS_URL.replace('{CHECKOUT_SESSION_ID}', session.id));
    const completed = await client.checkout.sessions.retrieve(session.id);
    expect(completed).toMatchObject({ status: 'complete', payment_status: 'paid', url: null });
    expect(completed.payment_intent).toMatch(/^pi_/);

    await local.deliveriesSettled();
    expect(receiver.types().sort()).toEqual(['charge.succeeded', 'checkout.session.completed', 'payment_intent.created', 'payment_intent.succeeded']);
    const completion = receiver.received.find((entry) => entry.event.type === 'checkout.session.completed')!.event;
    expect(completion.data.object).toMatchObject({ id: session.id, payment_status: 'paid', client_reference_id: 'user_42', metadata: { credits: '500' } });
    // Stripe's times have one-second resolution: several events of one payment share a second.
    const seconds = receiver.received.map((entry) => entry.event.created);
    expect(Math.max(...seconds) - Math.min(...seconds)).toBeLessThanOrEqual(1);
    expect(new Set(seconds).size).toBeLessThan(seconds.length);
  });

  test('Decline answers as a declined card: the session stays open and can be paid afterwards', async () => {
    const session = await openSession((await packagePrice()).id);
    const declined = await pressButton(session.url!, 'decline');
    expect(declined.status).toBe(402);
    expect(await declined.text()).toContain('Your card was declined');
    expect(await client.checkout.sessions.retrieve(session.id)).toMatchObject({ status: 'open', payment_status: 'unpaid' });
    expect((await pressButton(session.url!, 'pay')).status).toBe(303);
    await local.deliveriesSettled();
    expect(receiver.types().filter((type) => type.startsWith('checkout.'))).toEqual(['checkout.session.completed']);
    expect(receiver.types()).toEqual(expect.arrayContaining(['charge.failed', 'payment_intent.payment_failed']));
  });

  test('Pay later completes the session unpaid; its payment then arrives (async_payment_succeeded) or fails', async () => {
    const price = await packagePrice();
    for (const outcome of ['succeeded', 'failed'] as const) {
      receiver.received.length = 0;
      const session = await openSession(price.id);
      expect((await pressButton(session.url!, 'pay_later')).status).toBe(303);
      expect(await client.checkout.sessions.retrieve(session.id)).toMatchObject({ status: 'complete', payment_status: 'unpaid' });
      const later = await pressButton(session.url!, outcome);
      expect(later.status).toBe(200);
      await local.deliveriesSettled();
      const checkoutEvents = receiver.received.filter((entry) => entry.event.type.startsWith('checkout.')).map((entry) => entry.event);
      expect(checkoutEvents.map((event) => event.type).sort()).toEqual([`checkout.session.async_payment_${outcome}`, 'checkout.session.completed']);
      expect(checkoutEvents.find((event) => event.type === 'checkout.session.completed')!.data.object).toMatchObject({ payment_status: 'unpaid' });
      expect((await client.checkout.sessions.retrieve(session.id)).payment_status).toBe(outcome === 'succeeded' ? 'paid' : 'unpaid');
    }
  });

  test('a subscription sign-up creates the customer, an active subscription and its paid first invoice, with their events', async () => {
    const price = await planPrice();
    const session = await openSession(price.id, 'subscription');
    expect(await (await fetch(session.url!)).text()).not.toContain('Pay later');
    expect((await pressButton(session.url!, 'pay')).status).toBe(303);
    const completed = await client.checkout.sessions.retrieve(session.id);
    expect(completed).toMatchObject({ status: 'complete', payment_status: 'paid', mode: 'subscription', payment_intent: null });

    const subscription = await client.subscriptions.retrieve(completed.subscription as string);
    expect(subscription).toMatchObject({ status: 'active', customer: completed.customer, metadata: { user_id: 'user_42' } });
    expect(subscription.items.data[0]!.price.id).toBe(price.id);
    const invoices = await client.invoices.list({ subscription: subscription.id });
    expect(invoices.data).toEqual([expect.objectContaining({ id: completed.invoice, status: 'paid', billing_reason: 'subscription_create' })]);
    expect((await client.subscriptions.list({ customer: completed.customer as string })).data.map((listed) => listed.id)).toEqual([subscription.id]);

    await local.deliveriesSettled();
    expect(receiver.types()).toEqual(
      expect.arrayContaining(['customer.created', 'customer.subscription.created', 'invoice.paid', 'invoice_payment.paid', 'customer.subscription.updated', 'checkout.session.completed']),
    );
    const objectOf = (type: string) => receiver.received.find((entry) => entry.event.type === type)!.event.data.object;
    const paidInvoice = objectOf('invoice.paid') as Stripe.Invoice;
    expect(paidInvoice.parent?.subscription_details?.subscription).toBe(subscription.id);
    // Created incomplete, active once the first invoice is paid; the invoice payment names the charged intent.
    expect(objectOf('customer.subscription.created')).toMatchObject({ id: subscription.id, status: 'incomplete' });
    expect(objectOf('customer.subscription.updated')).toMatchObject({ id: subscription.id, status: 'active' });
    const payment = objectOf('invoice_payment.paid') as Stripe.InvoicePayment;
    const charged = objectOf('payment_intent.succeeded') as Stripe.PaymentIntent;
    expect(payment).toMatchObject({ invoice: paidInvoice.id, status: 'paid', payment: { type: 'payment_intent', payment_intent: charged.id } });
  });
});

describe('webhook delivery', () => {
  test('a failed delivery is retried until it is acknowledged, each attempt signed anew', async () => {
    local.reset();
    receiver.secret = local.addWebhookEndpoint({ url: receiverUrl, enabledEvents: ['checkout.session.completed'] }).secret;
    receiver.failuresLeft = 2;
    const session = await openSession((await packagePrice()).id);
    local.completeCheckout(session.id, 'pay');
    // The receiver has the event before the local Stripe has read the answer: wait for the attempts to end.
    await waitFor(() => receiver.types().includes('checkout.session.completed'));
    await local.deliveriesSettled();
    const attempts = local.deliveryAttempts.filter((attempt) => attempt.eventType === 'checkout.session.completed');
    expect(attempts.map((attempt) => [attempt.attempt, attempt.status])).toEqual([
      [1, 500],
      [2, 500],
      [3, 200],
    ]);
    const [completed] = (await client.events.list({ type: 'checkout.session.completed' })).data;
    expect(completed?.pending_webhooks).toBe(0);
  });

  test('events list by delivery success; a disabled endpoint gets nothing while events are still listed', async () => {
    receiver.failuresLeft = 100;
    const [endpoint] = local.webhookEndpoints();
    const price = await packagePrice();
    local.completeCheckout((await openSession(price.id)).id, 'pay');
    await waitFor(() => local.deliveryAttempts.filter((attempt) => attempt.eventType === 'checkout.session.completed').length === 4);
    const undelivered = await client.events.list({ delivery_success: false });
    expect(undelivered.data.map((event) => event.type)).toContain('checkout.session.completed');
    expect((await client.events.list({ delivery_success: true })).data).toEqual([]);

    await client.webhookEndpoints.update(endpoint!.id, { disabled: true });
    const eventsBefore = new Set((await client.events.list({ limit: 100 })).data.map((event) => event.id));
    local.completeCheckout((await openSession(price.id)).id, 'pay');
    await local.deliveriesSettled();
    const newEvents = (await client.events.list({ limit: 100 })).data.filter((event) => !eventsBefore.has(event.id));
    expect(newEvents.length).toBeGreaterThan(0);
    expect(local.deliveryAttempts.filter((attempt) => newEvents.some((event) => event.id === attempt.eventId))).toEqual([]);
    expect((await client.events.list({ type: 'checkout.session.completed' })).data).toHaveLength(2);
  });
});

describe('pending_webhooks', () => {
  test('counts the endpoints that have not answered 2xx: one refusing every attempt (a wrong secret) keeps the event pending after its retries', async () => {
    const refusing = http.createServer((request, response) => {
      request.resume();
      request.on('end', () => response.writeHead(400).end('{"error":"signature_mismatch"}'));
    });
    await new Promise<void>((resolve) => refusing.listen(0, '127.0.0.1', resolve));
    try {
      const refusingUrl = `http://127.0.0.1:${(refusing.address() as AddressInfo).port}/webhook`;
      local.addWebhookEndpoint({ url: refusingUrl, enabledEvents: ['checkout.session.completed'] });
      local.completeCheckout((await openSession((await packagePrice()).id)).id, 'pay');
      await waitFor(() => local.deliveryAttempts.filter((attempt) => attempt.url === refusingUrl).length === 4);
      await local.deliveriesSettled();

      const [completed] = (await client.events.list({ type: 'checkout.session.completed' })).data;
      expect(completed?.pending_webhooks).toBe(1);
      expect((await client.events.list({ delivery_success: false, type: 'checkout.session.completed' })).data.map((event) => event.id)).toEqual([completed?.id]);
      // The receiver (subscribed to everything, answering 200) acknowledged every other event.
      const others = (await client.events.list({ limit: 100 })).data.filter((event) => event.type !== 'checkout.session.completed');
      expect(others.length).toBeGreaterThan(0);
      expect(others.map((event) => event.pending_webhooks)).toEqual(others.map(() => 0));
    } finally {
      refusing.closeAllConnections();
      await new Promise((resolve) => refusing.close(resolve));
    }
  });

  test('a seeded event keeps the count it was given (what Stripe reported), and delivery_success agrees with it', async () => {
    const seeded = { id: 'evt_seeded_pending', object: 'event' as const, type: 'invoice.paid', created: 1_750_000_000, livemode: false, pending_webhooks: 2 };
    const seededDone = { ...seeded, id: 'evt_seeded_done', pending_webhooks: 0 };
    local.addEvent(seeded);
    local.addEvent(seededDone);

    await expect(client.events.retrieve(seeded.id)).resolves.toMatchObject({ pending_webhooks: 2 });
    expect((await client.events.list({ delivery_success: false, type: 'invoice.paid' })).data.map((event) => event.id)).toEqual([seeded.id]);
    expect((await client.events.list({ delivery_success: true, type: 'invoice.paid' })).data.map((event) => event.id)).toEqual([seededDone.id]);
  });
});

async function waitFor(condition: () => boolean, timeoutMillis = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMillis;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
