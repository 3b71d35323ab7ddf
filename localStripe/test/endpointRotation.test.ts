/**
 * What the two ways of changing an endpoint's signing secret look like from the receiving side: a Dashboard
 * roll (both secrets sign until the old one expires) and a second endpoint for the same URL (each delivery
 * signed with its own endpoint's secret; a deleted endpoint gets nothing more).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { checkoutSession } from '../objects';
import { startLocalStripe, type LocalStripe } from '../server';

interface Received {
  eventId: string;
  signature: string;
  body: string;
}

let local: LocalStripe;
let receiver: http.Server;
let received: Received[];
let url: string;
let answerStatus: number;

beforeEach(async () => {
  received = [];
  answerStatus = 200;
  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      received.push({ eventId: (JSON.parse(body) as { id: string }).id, signature: String(req.headers['stripe-signature']), body });
      res.writeHead(answerStatus).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/webhook`;
  local = await startLocalStripe({ delivery: { retryDelaysMillis: [30, 30], jitterMillis: 5 } });
});
afterEach(async () => {
  await local.close();
  await new Promise((resolve) => receiver.close(resolve));
});

/** Whether `secret` produced one of the header's v1 signatures (stripe-node's own check). */
function signedWith(delivery: Received, secret: string): boolean {
  try {
    Stripe.webhooks.signature!.verifyHeader(delivery.body, delivery.signature, secret, 300);
    return true;
  } catch {
    return false;
  }
}

test('after a Dashboard roll each delivery carries a signature by the old and by the new secret, until the old one expires', async () => {
  const endpoint = local.addWebhookEndpoint({ url, enabledEvents: ['*'] });
  const newSecret = local.rollWebhookEndpointSecret(endpoint.id, 60_000);
  local.publishEvent('checkout.session.completed', checkoutSession());
  await local.deliveriesSettled();
  expect(received).toHaveLength(1);
  expect(received[0]!.signature).toMatch(/^t=\d+,v1=[0-9a-f]{64},v1=[0-9a-f]{64}$/);
  expect(signedWith(received[0]!, endpoint.secret)).toBe(true);
  expect(signedWith(received[0]!, newSecret)).toBe(true);

  const newestSecret = local.rollWebhookEndpointSecret(endpoint.id, 0); // "expire now"
  local.publishEvent('checkout.session.completed', checkoutSession());
  await local.deliveriesSettled();
  expect(received).toHaveLength(2);
  expect(received[1]!.signature).toMatch(/^t=\d+,v1=[0-9a-f]{64},v1=[0-9a-f]{64}$/); // the first roll's new secret has not expired
  expect(signedWith(received[1]!, endpoint.secret)).toBe(true);
  expect(signedWith(received[1]!, newestSecret)).toBe(true);
  expect(local.webhookEndpoints()[0]!.secret).toBe(newestSecret);
});

test('two endpoints for one URL each deliver every event, signed with their own secret only', async () => {
  const stripe = new Stripe('sk_test_rotation', { ...local.stripeConfig });
  const first = await stripe.webhookEndpoints.create({ url, enabled_events: ['checkout.session.completed'] });
  const second = await stripe.webhookEndpoints.create({ url, enabled_events: ['checkout.session.completed'] });
  const event = local.publishEvent('checkout.session.completed', checkoutSession());
  await local.deliveriesSettled();
  expect(received.map((delivery) => delivery.eventId)).toEqual([event.id, event.id]);
  const signers = received.map((delivery) => [first.secret!, second.secret!].filter((secret) => signedWith(delivery, secret)));
  expect(signers.map((list) => list.length)).toEqual([1, 1]);
  expect(new Set(signers.flat())).toEqual(new Set([first.secret, second.secret]));
});

test('a deleted endpoint gets no further delivery, not even the retries of a failed one', async () => {
  const stripe = new Stripe('sk_test_rotation', { ...local.stripeConfig });
  const endpoint = await stripe.webhookEndpoints.create({ url, enabled_events: ['*'] });
  answerStatus = 500;
  local.publishEvent('checkout.session.completed', checkoutSession());
  await local.deliveriesSettled();
  expect(received.length).toBeGreaterThanOrEqual(1);
  await stripe.webhookEndpoints.del(endpoint.id);
  // On a slow machine the first retry (30 ms) may come before the delete: what counts is that none comes after.
  await local.deliveriesSettled();
  const [receivedAtDelete, attemptsAtDelete] = [received.length, local.deliveryAttempts.length];
  expect(attemptsAtDelete).toBeLessThan(3);
  await new Promise((resolve) => setTimeout(resolve, 150)); // both retry delays have passed
  await local.deliveriesSettled();
  expect(received).toHaveLength(receivedAtDelete);
  expect(local.deliveryAttempts).toHaveLength(attemptsAtDelete);
});
