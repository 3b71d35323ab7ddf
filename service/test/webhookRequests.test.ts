import { createTestDatabase, type TestDatabase } from './support/testDatabase';
import { deliver, startTestApp, testWebhookSecret, type TestApp } from './support/testApp';
import { checkoutSession, signStripePayload, stripeEvent, unixSeconds } from './support/stripeFixtures';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import { otherSpellings } from './support/pathSpellings';
import { rawExchange } from './support/rawHttp';
import { webhookPath } from '../webhook/route';

let database: TestDatabase;
let app: TestApp;
const maxBodyBytes = 64 * 1024;

beforeAll(async () => {
  database = await createTestDatabase();
  app = await startTestApp(database.db, { maxBodyBytes });
});
afterAll(async () => {
  await app.close();
  await database.drop();
});

const paidPurchase = (userId: string, credits = 100) =>
  stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) } }));

async function post(body: string, headers: Record<string, string>) {
  const response = await fetch(app.webhookUrl, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  return { status: response.status, body: (await response.json()) as { error?: string; message?: string } };
}

async function eventCount(): Promise<number> {
  const { rows } = await database.db.query<{ count: number }>('SELECT count(*)::int AS count FROM stripe_events');
  return rows[0]!.count;
}

describe('deliveries that are not authentic get a 400 and change nothing', () => {
  const body = JSON.stringify(paidPurchase('user_forged', 1_000_000));
  // Headers are built when each case runs, so the clock is read then.
  const cases: Array<[string, (now: number) => Record<string, string>, string]> = [
    ['no Stripe-Signature header', () => ({}), 'missing_signature'],
    ['a header without t=', () => ({ 'stripe-signature': `v1=${'a'.repeat(64)}` }), 'malformed_signature'],
    ['a header without v1=', (now) => ({ 'stripe-signature': `t=${now},v0=${'a'.repeat(64)}` }), 'malformed_signature'],
    ['a non-numeric timestamp', () => ({ 'stripe-signature': `t=abc,v1=${'a'.repeat(64)}` }), 'malformed_signature'],
    ['garbage', () => ({ 'stripe-signature': 'not a signature at all' }), 'malformed_signature'],
    ['a signature made with another secret', (now) => ({ 'stripe-signature': signStripePayload(body, ['whsec_someone_else'], now) }), 'no_matching_signature'],
    ['a signature of another body', (now) => ({ 'stripe-signature': signStripePayload(`${body} `, [testWebhookSecret], now) }), 'no_matching_signature'],
    ['a timestamp older than 300 s', (now) => ({ 'stripe-signature': signStripePayload(body, [testWebhookSecret], now - 302) }), 'timestamp_outside_tolerance'],
    ['a timestamp more than 300 s in the future', (now) => ({ 'stripe-signature': signStripePayload(body, [testWebhookSecret], now + 302) }), 'timestamp_outside_tolerance'],
  ];

  test.each(cases)('%s', async (_name, headersAt, reason) => {
    const before = await eventCount();
    const response = await post(body, headersAt(unixSeconds()));
    expect(response.status).toBe(400);
    expect(response.body.error).toBe(reason);
    expect(response.body.message).toMatch(/\w+/);
    expect(await eventCount()).toBe(before);
    expect(await balanceOf(database.db, 'user_forged')).toEqual({ purchased: 0, subscription: 0 });
  });
});

test('a timestamp 299 s old or ahead is still accepted', async () => {
  const now = unixSeconds();
  expect((await deliver(app.webhookUrl, paidPurchase('user_edge_old'), { timestampSeconds: now - 298 })).status).toBe(200);
  expect((await deliver(app.webhookUrl, paidPurchase('user_edge_new'), { timestampSeconds: now + 298 })).status).toBe(200);
});

test('a header carrying several v1 signatures is accepted when any of them matches', async () => {
  const event = paidPurchase('user_multi_v1', 5);
  const response = await deliver(app.webhookUrl, event, { secrets: ['whsec_retired_one', testWebhookSecret] });
  expect(response.body).toEqual({ received: true, status: 'processed' });
});

describe('authentic bodies that are not Stripe events get a 400', () => {
  test.each([
    ['not JSON', 'this is not json'],
    ['a JSON array', '[1,2,3]'],
    ['JSON without an event envelope', '{"hello":"world"}'],
    ['an event without data.object', JSON.stringify({ id: 'evt_1', object: 'event', type: 'x.y', livemode: false, created: 1, data: {} })],
  ])('%s', async (_name, body) => {
    const response = await post(body, { 'stripe-signature': signStripePayload(body, [testWebhookSecret]) });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('malformed_event');
  });
});

test('authentic non-events are counted as malformed events, not as signature failures', async () => {
  const metrics = await (await fetch(`${app.url}/metrics`)).text();
  expect(metrics).toMatch(/stripe_webhook_events_total\{type="unparsed",outcome="malformed"\} 4/);
  expect(metrics).not.toContain('reason="malformed_event"');
});

test('a live-mode event sent to a test-mode deployment is refused and applies nothing', async () => {
  const event = stripeEvent('checkout.session.completed', checkoutSession({ livemode: true, client_reference_id: 'user_live', metadata: { credits: '9' } }));
  const response = await deliver(app.webhookUrl, event);
  expect(response.status).toBe(400);
  expect(response.body.error).toBe('livemode_mismatch');
  expect(await balanceOf(database.db, 'user_live')).toEqual({ purchased: 0, subscription: 0 });
  const metrics = await (await fetch(`${app.url}/metrics`)).text();
  expect(metrics).toMatch(/stripe_webhook_events_total\{type="checkout.session.completed",outcome="mode_mismatch"\} 1/);
});

test('a body over the limit gets a 413', async () => {
  const body = JSON.stringify({ padding: 'x'.repeat(maxBodyBytes) });
  const response = await post(body, { 'stripe-signature': signStripePayload(body, [testWebhookSecret]) });
  expect(response.status).toBe(413);
});

test('other methods on the webhook path get a 405 naming POST', async () => {
  for (const method of ['GET', 'PUT', 'DELETE', 'PATCH']) {
    const response = await fetch(app.webhookUrl, { method });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('POST');
  }
});

test('only the exact spelling of the webhook path reaches the handler: other spellings are 404 and apply nothing', async () => {
  const before = await eventCount();
  const port = Number(new URL(app.url).port);
  for (const target of otherSpellings(webhookPath)) {
    const body = JSON.stringify(paidPurchase('user_other_spelling', 7));
    const request =
      `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `Stripe-Signature: ${signStripePayload(body, [testWebhookSecret])}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
    const response = await rawExchange(port, request);
    expect({ target, status: response.status }).toEqual({ target, status: 404 });
  }
  expect(await eventCount()).toBe(before);
  expect(await balanceOf(database.db, 'user_other_spelling')).toEqual({ purchased: 0, subscription: 0 });
});

test('an event type we do not handle is acknowledged as ignored and recorded once', async () => {
  const event = stripeEvent('plan.created', { id: 'plan_x', object: 'plan', livemode: false });
  expect((await deliver(app.webhookUrl, event)).body).toEqual({ received: true, status: 'ignored' });
  expect((await deliver(app.webhookUrl, event)).body).toEqual({ received: true, status: 'duplicate' });
  const { rows } = await database.db.query('SELECT status FROM stripe_events WHERE id = $1', [event.id]);
  expect(rows).toEqual([{ status: 'ignored' }]);
});

test('health, readiness and metrics answer; unknown paths are 404', async () => {
  expect((await fetch(`${app.url}/healthz`)).status).toBe(200);
  expect(await (await fetch(`${app.url}/readyz`)).json()).toEqual({ status: 'ready', problems: [] });
  const metrics = await (await fetch(`${app.url}/metrics`)).text();
  expect(metrics).toContain('stripe_webhook_signature_failures_total');
  expect(metrics).toContain('stripe_webhook_secret_verifications_total');
  expect(metrics).toContain('stripe_webhook_handler_duration_seconds_bucket');
  expect(metrics).toContain('stripe_webhook_event_lag_seconds_bucket');
  expect((await fetch(`${app.url}/nothing-here`)).status).toBe(404);
});

test('log lines name the event but never carry the payload, signature or secret', async () => {
  const event = paidPurchase('user_logged', 3);
  await deliver(app.webhookUrl, event);
  const logs = app.logLines.join('\n');
  expect(logs).toContain(`[Stripe Webhook] Received event: checkout.session.completed ${event.id}`);
  expect(logs).toContain('Processing credit purchase for user user_logged');
  expect(logs).not.toContain(testWebhookSecret);
  expect(logs).not.toMatch(/v1=[0-9a-f]{64}/);
  expect(logs).not.toContain('"client_reference_id"');
});

test('balances still equal ledger sums after all of the above', async () => {
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});
