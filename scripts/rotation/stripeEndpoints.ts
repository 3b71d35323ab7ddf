/** The webhook endpoint calls of an endpoint replacement, through stripe-node at the configured base URL. */
import { readFileSync } from 'node:fs';
import type Stripe from 'stripe';
import { ConfigError } from '../../service/config';
import { createStripeClient } from '../../service/stripeApi';

export interface StripeEndpoints {
  /** The endpoint, or undefined when Stripe has none with this id (in the key's mode). */
  retrieve(id: string): Promise<Stripe.WebhookEndpoint | undefined>;
  /**
   * An endpoint like `old` (URL, API version, description, metadata) with its secret, the same one on a rerun,
   * subscribed to a placeholder event only: Stripe delivers at once, and the replicas do not know its secret yet.
   */
  createLike(old: Stripe.WebhookEndpoint, oldId: string): Promise<Stripe.WebhookEndpoint & { secret: string }>;
  /** Subscribes the endpoint to these event types (the old endpoint's), once the replicas know its secret. */
  subscribe(id: string, enabledEvents: string[]): Promise<Stripe.WebhookEndpoint>;
  /** Deletes the endpoint; one already gone counts as deleted. */
  delete(id: string): Promise<void>;
}

/**
 * What a new endpoint listens to until the replicas have its secret: Stripe's create takes no `disabled`, and
 * an event delivered in between would be refused (400). Test clocks exist in test mode only and fail
 * internally next to never.
 */
export const placeholderEventType = 'test_helpers.test_clock.internal_failure';

/** STRIPE_API_KEY_FILE or STRIPE_API_KEY (never an argument), and STRIPE_API_BASE (default Stripe itself). */
export function openStripeEndpoints(env: NodeJS.ProcessEnv): StripeEndpoints {
  const file = env.STRIPE_API_KEY_FILE?.trim();
  let key = env.STRIPE_API_KEY?.trim();
  if (file) {
    try {
      key = readFileSync(file, 'utf8').trim();
    } catch (error) {
      throw new ConfigError(`STRIPE_API_KEY_FILE ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'unknown error'})`);
    }
  }
  if (!key || !/^(sk|rk)_(test|live)_\S+$/.test(key)) {
    throw new ConfigError('set STRIPE_API_KEY_FILE (or STRIPE_API_KEY) to a Stripe key that may write webhook endpoints (sk_… or rk_…)');
  }
  let base: URL;
  try {
    base = new URL(env.STRIPE_API_BASE?.trim() || 'https://api.stripe.com');
  } catch {
    throw new ConfigError(`STRIPE_API_BASE must be an absolute URL, got "${env.STRIPE_API_BASE}"`);
  }
  const stripe = createStripeClient(key, base);
  const notFound = (error: unknown) => (error as { statusCode?: number }).statusCode === 404;
  return {
    async retrieve(id) {
      try {
        return await stripe.webhookEndpoints.retrieve(id);
      } catch (error) {
        if (notFound(error)) return undefined;
        throw error;
      }
    },
    async createLike(old, oldId) {
      const created = await stripe.webhookEndpoints.create(
        {
          url: old.url,
          enabled_events: [placeholderEventType],
          ...(old.api_version ? { api_version: old.api_version as Stripe.WebhookEndpointCreateParams.ApiVersion } : {}),
          ...(old.description ? { description: old.description } : {}),
          // Says where it came from: `pulumi refresh` names it when the endpoint in its state is gone.
          metadata: { ...old.metadata, replaces: oldId },
        },
        { idempotencyKey: `rotate-webhook-secret-replace-${oldId}` },
      );
      if (!created.secret) throw new Error(`Stripe created endpoint ${created.id} but returned no signing secret`);
      return created as Stripe.WebhookEndpoint & { secret: string };
    },
    subscribe(id, enabledEvents) {
      return stripe.webhookEndpoints.update(id, { enabled_events: enabledEvents as Stripe.WebhookEndpointUpdateParams.EnabledEvent[] });
    },
    async delete(id) {
      try {
        await stripe.webhookEndpoints.del(id);
      } catch (error) {
        if (!notFound(error)) throw error;
      }
    },
  };
}
