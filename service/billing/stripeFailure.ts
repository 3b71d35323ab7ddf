import type Koa from 'koa';
import type { Logger } from '../logger';

const stripeRetryAfterSeconds = 10;

/**
 * A failed Stripe call as the caller's answer: Stripe unreachable or failing is a 503 to retry later;
 * Stripe refusing what we asked (a price it does not know) is a 502 naming Stripe's reason, which is our
 * configuration's fault, never the caller's.
 */
export function throwStripeFailure(ctx: Koa.Context, logger: Logger, error: unknown, doing: string): never {
  const { type, message, statusCode } = error as { type?: string; message?: string; statusCode?: number };
  if (typeof type !== 'string' || !type.startsWith('Stripe')) throw error;
  // Stripe's answer to a bad key quotes part of it: neither logged nor shown.
  if (type === 'StripeAuthenticationError' || type === 'StripePermissionError') {
    logger.error({ stripeError: type, statusCode }, `Stripe refused the API key while ${doing}: check STRIPE_API_KEY`);
    return ctx.throw(502, `Stripe refused this service's API key (${doing}); the operator must check STRIPE_API_KEY.`, { reason: 'stripe_refused' });
  }
  logger.warn({ stripeError: type, statusCode, reason: message }, `Stripe call failed while ${doing}`);
  if (type === 'StripeConnectionError' || type === 'StripeAPIError' || type === 'StripeRateLimitError' || (statusCode ?? 0) >= 500) {
    ctx.set('Retry-After', String(stripeRetryAfterSeconds));
    return ctx.throw(503, `Stripe cannot be reached right now (${doing}); try again shortly.`, { reason: 'stripe_unavailable' });
  }
  return ctx.throw(502, `Stripe refused ${doing}: ${message ?? type}.`, { reason: 'stripe_refused' });
}
