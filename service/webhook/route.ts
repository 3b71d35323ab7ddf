import type Koa from 'koa';
import getRawBody from 'raw-body';
import { describeError, isDatabaseUnavailable, type Database } from '../db';
import type { Logger } from '../logger';
import type { Metrics } from '../metrics';
import { recordFailedEvent } from './eventLog';
import { processEvent, type EventContext } from './processEvent';
import type { SecretStore } from './secretStore';
import type { SecretUsage } from './secretUsage';
import { MalformedEventError, parseStripeEvent } from './stripeEvent';
import { verifyStripeSignature, WebhookVerificationError } from './verifySignature';

export const webhookPath = '/api/v1/billing/stripe/webhook';

/** Stripe's own tolerance; also the bound on how far in the future a timestamp may be. */
export const signatureToleranceSeconds = 300;
const retryAfterSeconds = 5;

export interface WebhookDeps {
  db: Database;
  secrets: SecretStore;
  secretUsage: SecretUsage;
  logger: Logger;
  metrics: Metrics;
  eventContext: EventContext;
  stripeMode: 'test' | 'live';
  maxBodyBytes: number;
  nowMillis: () => number;
  onBalanceChanged: (userId: string) => void;
}

/** POST handler for Stripe deliveries: verify, parse, apply once, answer so that Stripe retries only our faults. */
export function stripeWebhookHandler(deps: WebhookDeps): Koa.Middleware {
  const { logger, metrics } = deps;
  return async (ctx) => {
    const body = (await readRawBody(ctx, deps.maxBodyBytes)).toString('utf8');
    const receivedAtMillis = deps.nowMillis();

    let fingerprint: string;
    try {
      fingerprint = verifyStripeSignature({
        body,
        signatureHeader: ctx.get('stripe-signature') || undefined,
        secrets: deps.secrets.current(),
        nowMillis: receivedAtMillis,
        toleranceSeconds: signatureToleranceSeconds,
      });
    } catch (error) {
      if (!(error instanceof WebhookVerificationError)) throw error;
      metrics.signatureFailures.inc({ reason: error.reason });
      logger.warn({ reason: error.reason }, '[Stripe Webhook] Rejected delivery');
      return reject(ctx, 400, error.reason, error.message);
    }
    metrics.secretVerifications.inc({ fingerprint });
    deps.secretUsage.recordVerified(fingerprint, receivedAtMillis);

    let event;
    try {
      event = parseStripeEvent(body);
    } catch (error) {
      if (!(error instanceof MalformedEventError)) throw error;
      // Authentic but not an event: counted as an event outcome, not as a signature failure.
      metrics.events.inc({ type: 'unparsed', outcome: 'malformed' });
      logger.warn('[Stripe Webhook] Rejected an authentic body that is not a Stripe event');
      return reject(ctx, 400, 'malformed_event', error.message);
    }

    const eventFields = { eventId: event.id, eventType: event.type };
    logger.info(eventFields, `[Stripe Webhook] Received event: ${event.type} ${event.id}`);
    metrics.eventLagSeconds.observe(Math.max(0, receivedAtMillis / 1000 - event.created));

    if (event.livemode !== (deps.stripeMode === 'live')) {
      metrics.events.inc({ type: event.type, outcome: 'mode_mismatch' });
      logger.warn({ ...eventFields, livemode: event.livemode, stripeMode: deps.stripeMode }, '[Stripe Webhook] Event mode does not match STRIPE_MODE; nothing applied');
      return reject(
        ctx,
        400,
        'livemode_mismatch',
        `Event livemode=${event.livemode} but this service runs with STRIPE_MODE=${deps.stripeMode}: point this endpoint's mode at the matching deployment.`,
      );
    }

    const stopTimer = metrics.handlerSeconds.startTimer({ type: event.type });
    try {
      const result = await processEvent(deps.db, event, deps.eventContext);
      stopTimer();
      metrics.events.inc({ type: event.type, outcome: result.status });
      // An unmatched outcome may still have changed a user's credits (a subscription with a price not in the catalog).
      if ((result.status === 'processed' || result.status === 'unmatched') && result.userId) deps.onBalanceChanged(result.userId);
      if (result.status === 'processed') {
        if (result.userId) logger.info({ ...eventFields, userId: result.userId }, `[Stripe Webhook] ${appliedMessage(event.type)} ${result.userId}`);
      } else if (result.status === 'unmatched') {
        logger.warn({ ...eventFields, reason: result.reason, userId: result.userId }, '[Stripe Webhook] Event matched no user or credits; recorded as unmatched');
      } else {
        logger.info({ ...eventFields, outcome: result.status }, `[Stripe Webhook] Event ${result.status}`);
      }
      ctx.status = 200;
      ctx.body = { received: true, status: result.status };
    } catch (error) {
      stopTimer();
      if (isDatabaseUnavailable(error)) {
        metrics.events.inc({ type: event.type, outcome: 'unavailable' });
        logger.error({ ...eventFields, err: describeError(error) }, '[Stripe Webhook] Database unavailable; Stripe will retry');
        ctx.set('Retry-After', String(retryAfterSeconds));
        return reject(ctx, 503, 'database_unavailable', 'Database unavailable; nothing was applied. Stripe retries automatically.');
      }
      metrics.events.inc({ type: event.type, outcome: 'failed' });
      logger.error({ ...eventFields, err: describeError(error) }, '[Stripe Webhook] Handler failed; rolled back, Stripe will retry');
      await recordFailedEvent(deps.db, event, describeError(error).message).catch(() => undefined);
      return reject(ctx, 500, 'handler_failed', 'Processing failed and was rolled back; Stripe retries automatically.');
    }
  };
}

/** The setup guide's wording for purchases (operators grep for it), and its like for the other kinds. */
function appliedMessage(eventType: string): string {
  if (eventType.startsWith('checkout.session.')) return 'Processing credit purchase for user';
  if (eventType.startsWith('customer.subscription.') || eventType.startsWith('invoice')) return 'Processing subscription credits for user';
  if (eventType.startsWith('charge.dispute.')) return 'Processing dispute for user';
  return 'Processing refund for user';
}

/** The raw body, refused with 413 above `limitBytes` (the signature is over these exact bytes). */
export async function readRawBody(ctx: Koa.Context, limitBytes: number): Promise<Buffer> {
  try {
    return await getRawBody(ctx.req, { limit: limitBytes, length: ctx.get('content-length') || undefined });
  } catch (error) {
    const type = (error as { type?: string }).type;
    if (type === 'entity.too.large') ctx.throw(413, `Body larger than ${limitBytes} bytes (WEBHOOK_MAX_BODY_BYTES).`, { reason: 'body_too_large' });
    ctx.throw(400, 'Request body could not be read completely.', { reason: 'body_unreadable' });
  }
}

function reject(ctx: Koa.Context, status: number, reason: string, message: string): void {
  ctx.status = status;
  ctx.body = { received: false, error: reason, message };
}
