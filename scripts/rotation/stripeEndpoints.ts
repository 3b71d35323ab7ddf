/** The webhook endpoint calls of an endpoint replacement, through stripe-node at the configured base URL. */
import { readFileSync } from 'node:fs';
import type Stripe from 'stripe';
import { ConfigError } from '../../service/config';
import { createStripeClient } from '../../service/stripeApi';

export interface StripeEndpoints {
  /** The endpoint, or undefined when Stripe has none with this id (in the key's mode). */
  retrieve(id: string): Promise<Stripe.WebhookEndpoint | undefined>;
  /** An endpoint like `old` (URL, events, API version, description, metadata), with its secret; the same one on a rerun. */
  createLike(old: Stripe.WebhookEndpoint, oldId: string): Promise<Stripe.WebhookEndpoint & { secret: string }>;
  /** Deletes the endpoint; one already gone counts as deleted. */
  delete(id: string): Promise<void>;
}

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
          enabled_events: old.enabled_events as Stripe.WebhookEndpointCreateParams.EnabledEvent[],
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
    async delete(id) {
      try {
        await stripe.webhookEndpoints.del(id);
      } catch (error) {
        if (!notFound(error)) throw error;
      }
    },
  };
}
