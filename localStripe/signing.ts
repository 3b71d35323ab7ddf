/**
 * Webhook signatures and deliveries exactly as Stripe makes them, so tests, scripts and the local Stripe
 * all sign one way. The HMAC itself is stripe-node's own `generateTestHeaderString`.
 */
import Stripe from 'stripe';
import { unixSeconds } from './buildingBlocks';

/** The headers Stripe sends with every webhook POST. */
export const STRIPE_WEBHOOK_USER_AGENT = 'Stripe/1.0 (+https://stripe.com/docs/webhooks)';
export const STRIPE_WEBHOOK_CONTENT_TYPE = 'application/json; charset=utf-8';

/**
 * The `Stripe-Signature` header: `t=<ts>,v1=<hmac>[,v1=<hmac>…]`, where each v1 is the hex HMAC-SHA256 of
 * `<ts>.<payload>` under one active secret (several while a secret is being rolled).
 */
export function signStripePayload(payload: string, secrets: readonly string[], timestampSeconds: number = unixSeconds()): string {
  if (secrets.length === 0) {
    throw new Error('signStripePayload needs at least one webhook signing secret');
  }
  if (!Number.isInteger(timestampSeconds)) {
    throw new RangeError('timestampSeconds must be a whole number of Unix seconds');
  }
  const signatures = secrets.map((secret) => {
    const header = Stripe.webhooks.generateTestHeaderString({ payload, secret, timestamp: timestampSeconds });
    return header.slice(header.indexOf(',') + 1);
  });
  return [`t=${timestampSeconds}`, ...signatures].join(',');
}

export interface WebhookDelivery {
  body: string;
  headers: {
    'content-type': typeof STRIPE_WEBHOOK_CONTENT_TYPE;
    'stripe-signature': string;
    'user-agent': typeof STRIPE_WEBHOOK_USER_AGENT;
  };
}

/** The body and headers of one webhook POST. Stripe pretty-prints the event with two spaces. */
export function signedDelivery(
  eventOrRawBody: object | string,
  secrets: readonly string[],
  options: { timestampSeconds?: number } = {},
): WebhookDelivery {
  const body = typeof eventOrRawBody === 'string' ? eventOrRawBody : JSON.stringify(eventOrRawBody, null, 2);
  return {
    body,
    headers: {
      'content-type': STRIPE_WEBHOOK_CONTENT_TYPE,
      'stripe-signature': signStripePayload(body, secrets, options.timestampSeconds),
      'user-agent': STRIPE_WEBHOOK_USER_AGENT,
    },
  };
}
