/**
 * The billing API as a product and a buyer meet it: the real app on a real port against a fresh database,
 * the local Stripe (its API, hosted checkout page and webhook delivery) with a small catalog, and helpers to
 * call the API as a signed-in user.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import Stripe from 'stripe';
import { startLocalStripe, type LocalStripe } from '../../../localStripe';
import { parseCatalog } from '../../credits/catalog';
import { createStripeClient, lineItemsFetcher } from '../../stripeApi';
import { HANDLED_EVENT_TYPES } from '../../webhook/handledEventTypes';
import { startTestApp, testWebhookSecret, type TestApp, type TestAppOptions } from './testApp';
import type { TestDatabase } from './testDatabase';

export const sessionSecret = 'billing-api-session-secret-0123456789abcdef';
export const serviceApiToken = 'billing-api-service-token-0123456789abcdef';
export const packageId = 'price_test_credits_500';
export const packageCredits = 500;
export const planId = 'price_test_plan_pro';
export const planMonthlyCredits = 3000;
export const successUrl = 'https://shop.example.com/billing/?checkout=success&session_id={CHECKOUT_SESSION_ID}';

export interface BillingHarness {
  local: LocalStripe;
  stripe: Stripe;
  app: TestApp;
  /** The app's webhook endpoint in the local Stripe. */
  endpointId: string;
  /** Another instance of the app on the same database (a second replica). */
  startReplica(options?: TestAppOptions): Promise<TestApp>;
  close(): Promise<void>;
}

export async function startBillingHarness(database: TestDatabase, options: TestAppOptions = {}): Promise<BillingHarness> {
  const local = await startLocalStripe({ delivery: { retryDelaysMillis: [], jitterMillis: 20 } });
  local.createPrice({ id: packageId, productName: '500 credits', unitAmount: 450 });
  local.createPrice({ id: planId, productName: 'Pro', unitAmount: 2900, recurring: true });
  const stripe = createStripeClient('sk_test_billing_api', new URL(local.baseUrl));
  const catalog = parseCatalog({ packages: { [packageId]: { credits: packageCredits, name: '500 credits' } }, plans: { [planId]: { monthlyCredits: planMonthlyCredits, name: 'Pro' } } }, 'test catalog');
  const appOptions: TestAppOptions = {
    sessionTokens: { key: { kind: 'secret', secret: sessionSecret } },
    serviceApiToken,
    stripe,
    checkoutUrls: { successUrl, cancelUrl: 'https://shop.example.com/billing/?checkout=cancelled' },
    eventContext: { catalog, fetchLineItems: lineItemsFetcher(stripe) },
    ...options,
  };
  const app = await startTestApp(database.db, appOptions);
  const endpoint = local.addWebhookEndpoint({ url: app.webhookUrl, enabledEvents: [...HANDLED_EVENT_TYPES], secret: testWebhookSecret });
  const replicas: TestApp[] = [];
  return {
    local,
    stripe,
    app,
    endpointId: endpoint.id,
    async startReplica(extra = {}) {
      const replica = await startTestApp(database.db, { ...appOptions, ...extra });
      replicas.push(replica);
      return replica;
    },
    async close() {
      await Promise.all([app, ...replicas].map((instance) => instance.close()));
      await local.close();
    },
  };
}

export const newUser = () => `user_${randomUUID()}`;

export function sessionToken(userId: string, expiresIn = '10m'): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setIssuedAt().setExpirationTime(expiresIn).sign(new TextEncoder().encode(sessionSecret));
}

export interface ApiAnswer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/** One request to the app as `user` (a session token in the Authorization header) or with raw headers. */
export async function callApi(
  base: string,
  method: string,
  path: string,
  options: { user?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<ApiAnswer> {
  const headers: Record<string, string> = { ...(options.user ? { authorization: `Bearer ${await sessionToken(options.user)}` } : {}) };
  let body: string | undefined = options.rawBody;
  if (options.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(options.body);
  }
  const response = await fetch(`${base}${path}`, { method, headers: { ...headers, ...options.headers }, body });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: parseJsonObject(text) };
}

function parseJsonObject(text: string): Record<string, unknown> {
  try {
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    return { text };
  }
}

/** What the buyer does on the local Stripe's hosted page: the same form POST its buttons send. */
export async function pressCheckoutButton(sessionUrl: string, action: 'pay' | 'decline' | 'pay_later' | 'succeeded' | 'failed'): Promise<number> {
  const response = await fetch(sessionUrl, { method: 'POST', body: new URLSearchParams({ action }), redirect: 'manual' });
  await response.arrayBuffer();
  return response.status;
}
