/**
 * Stripe's side: the key belongs to the stack's mode; the endpoint exists in that mode, is enabled, and
 * delivers exactly the handled event types at the pinned API version to the public URL; and no recent
 * event of those types is still waiting for a delivery (a wrong secret or a dead URL shows this way).
 */
import type Stripe from 'stripe';
import { apiKeyMode, type StripeMode } from '../../service/config';
import { createStripeClient, stripeApiVersion } from '../../service/stripeApi';
import { HANDLED_EVENT_TYPES } from '../../service/webhook/handledEventTypes';
import { failed, ok, skipped, type CheckResult } from './report';

export interface StripeCheckOptions {
  apiKey: string;
  apiBase: URL;
  mode: StripeMode;
  /** The public webhook URL the endpoint must deliver to, when known. */
  webhookUrl?: string;
  /** The endpoint the deployment manages (stack output webhookEndpointId); else found by URL. */
  endpointId?: string;
  /** A delivery still pending after this long is a problem (Stripe delivers within seconds). */
  pendingAfterSeconds: number;
  /** How far back events are read. */
  sinceSeconds: number;
  nowMillis: number;
  /** The command that re-applies one event (printed in fixes). */
  replayCommand: (eventId: string) => string;
}

const maxEventsRead = 1_000;
const maxEventsListed = 20;

/** Stripe's answer to a failed call, named for a person: never the key. */
function stripeProblem(error: unknown, apiBase: URL): { detail: string; fix: string } {
  const status = (error as { statusCode?: number }).statusCode;
  const type = (error as { type?: string }).type;
  const message = (error as Error).message;
  if (type === 'StripeConnectionError' || status === undefined) {
    return { detail: `cannot reach Stripe at ${apiBase.origin}: ${message}`, fix: `check STRIPE_API_BASE (${apiBase.origin}) and the network; a local Stripe must be running.` };
  }
  if (status === 401) return { detail: `Stripe refused the key (401): ${message}`, fix: 'STRIPE_API_KEY_FILE must hold a valid secret or restricted key of this account (Dashboard → Developers → API keys).' };
  if (status === 403) return { detail: `the key may not read this (403): ${message}`, fix: 'give the doctor a key with read access to Webhook Endpoints and Events (a restricted key is enough).' };
  return { detail: `Stripe answered ${status}: ${message}`, fix: 'run the doctor again; if it persists, see https://status.stripe.com.' };
}

async function findEndpoint(stripe: Stripe, options: StripeCheckOptions): Promise<Stripe.WebhookEndpoint | undefined> {
  if (options.endpointId) {
    try {
      return await stripe.webhookEndpoints.retrieve(options.endpointId);
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return undefined;
      throw error;
    }
  }
  const endpoints = await stripe.webhookEndpoints.list({ limit: 100 }).autoPagingToArray({ limit: 1_000 });
  return endpoints.find((endpoint) => endpoint.url === options.webhookUrl);
}

export async function checkStripe(options: StripeCheckOptions): Promise<CheckResult[]> {
  const { mode } = options;
  const keyTitle = `the Stripe API key is a ${mode}-mode key`;
  const keyMode = apiKeyMode(options.apiKey);
  const skip = (ids: readonly string[], why: string) => ids.map((id) => skipped('stripe', id, id.replace(/-/g, ' '), why));
  const endpointDetails = ['endpoint-enabled', 'endpoint-url', 'endpoint-events', 'endpoint-api-version'];
  if (keyMode !== mode) {
    const what = keyMode ? `a ${keyMode}-mode key` : 'not a Stripe secret (sk_…) or restricted (rk_…) key';
    return [
      failed('stripe', 'stripe-key', keyTitle, {
        detail: `STRIPE_API_KEY_FILE holds ${what}, and the stack runs in ${mode} mode: it would see the ${keyMode ?? 'wrong'}-mode endpoints and events only`,
        fix: `put a ${mode}-mode key (sk_${mode}_… or rk_${mode}_…) into STRIPE_API_KEY_FILE; if the stack itself is the wrong mode, check its stripeMode (pulumi config get stripeMode) and the key the service got (serviceStripeApiKey).`,
      }),
      ...skip(['endpoint-found', ...endpointDetails, 'pending-deliveries'], `the key is not a ${mode}-mode key`),
    ];
  }
  const results: CheckResult[] = [ok('stripe', 'stripe-key', keyTitle, { detail: `a ${mode}-mode key, at ${options.apiBase.origin}` })];
  const stripe = createStripeClient(options.apiKey, options.apiBase);

  const foundTitle = `the webhook endpoint exists in Stripe (${mode} mode)`;
  let endpoint: Stripe.WebhookEndpoint | undefined;
  try {
    endpoint = await findEndpoint(stripe, options);
  } catch (error) {
    return [...results, failed('stripe', 'endpoint-found', foundTitle, stripeProblem(error, options.apiBase)), ...skip([...endpointDetails, 'pending-deliveries'], 'Stripe could not be asked')];
  }
  if (!endpoint) {
    const which = options.endpointId ? `no ${mode}-mode endpoint ${options.endpointId}` : `no ${mode}-mode endpoint delivers to ${options.webhookUrl ?? '(no URL given)'}`;
    results.push(
      failed('stripe', 'endpoint-found', foundTitle, {
        detail: which,
        fix: options.endpointId
          ? `it was deleted in Stripe (or belongs to the other mode): \`pulumi up\` creates a new one and installs its secret; with stripeWebhookEndpointId set, clear it first (pulumi config rm stripeWebhookEndpointId).`
          : `\`pulumi up\` registers it; for a local run, npm start registers one on its local Stripe. Pass --endpoint-id we_… if it delivers to another URL.`,
      }),
      ...skip(endpointDetails, 'no endpoint to check'),
    );
  } else {
    results.push(...checkEndpoint(endpoint, options));
  }
  results.push(await checkPendingDeliveries(stripe, options));
  return results;
}

function checkEndpoint(endpoint: Stripe.WebhookEndpoint, options: StripeCheckOptions): CheckResult[] {
  const results: CheckResult[] = [ok('stripe', 'endpoint-found', `the webhook endpoint exists in Stripe (${options.mode} mode)`, { detail: `${endpoint.id} (${endpoint.livemode ? 'live' : 'test'} mode)` })];
  results.push(
    endpoint.status === 'enabled'
      ? ok('stripe', 'endpoint-enabled', 'the endpoint is enabled', { detail: 'status enabled' })
      : failed('stripe', 'endpoint-enabled', 'the endpoint is enabled', {
          detail: `status ${endpoint.status}: Stripe sends it nothing`,
          fix: `pulumi config set stripeWebhookDisabled false && pulumi up (or enable ${endpoint.id} in the Dashboard → Developers → Webhooks); Stripe does not resend what it skipped meanwhile: then \`npm run replay-events -- --since <when it was disabled>\`.`,
        }),
  );
  if (options.webhookUrl === undefined) results.push(skipped('stripe', 'endpoint-url', 'the endpoint delivers to the public webhook URL', 'no webhook URL known: give --webhook-url'));
  else if (endpoint.url === options.webhookUrl) results.push(ok('stripe', 'endpoint-url', 'the endpoint delivers to the public webhook URL', { detail: endpoint.url }));
  else {
    results.push(
      failed('stripe', 'endpoint-url', 'the endpoint delivers to the public webhook URL', {
        detail: `it delivers to ${endpoint.url}, not ${options.webhookUrl}`,
        fix: '`pulumi up` sets the URL from the domain setting; by hand, change it in the Dashboard (the secret stays the same).',
      }),
    );
  }
  const handled: readonly string[] = HANDLED_EVENT_TYPES;
  const enabled = endpoint.enabled_events;
  const missing = enabled.includes('*') ? [] : handled.filter((type) => !enabled.includes(type));
  const extra = enabled.filter((type) => !handled.includes(type));
  const eventsTitle = `the endpoint sends exactly the ${handled.length} event types the service handles`;
  if (missing.length === 0 && extra.length === 0) results.push(ok('stripe', 'endpoint-events', eventsTitle, { detail: `${enabled.length} types, as HANDLED_EVENT_TYPES` }));
  else {
    const problems = [missing.length > 0 ? `missing ${missing.join(', ')} (never delivered: their credits never arrive)` : '', extra.length > 0 ? `not handled ${extra.join(', ')} (delivered and ignored)` : ''].filter(Boolean);
    results.push(
      failed('stripe', 'endpoint-events', eventsTitle, {
        detail: problems.join('; '),
        fix: '`pulumi up` registers exactly HANDLED_EVENT_TYPES (service/webhook/handledEventTypes.ts); by hand, set the endpoint\'s events in the Dashboard. Then re-apply what was never sent: npm run replay-events -- --since <when the type went missing>.',
      }),
    );
  }
  const versionTitle = `the endpoint's API version is the pinned ${stripeApiVersion}`;
  if (endpoint.api_version === stripeApiVersion) results.push(ok('stripe', 'endpoint-api-version', versionTitle, { detail: stripeApiVersion }));
  else {
    results.push(
      failed('stripe', 'endpoint-api-version', versionTitle, {
        detail: `it is ${endpoint.api_version ?? "the account's default version"}: events arrive in another shape than the service reads`,
        fix: `Stripe cannot change an endpoint's version in place: let \`pulumi up\` create the endpoint (it pins ${stripeApiVersion}) and delete ${endpoint.id}, or create one with api_version ${stripeApiVersion} in the Dashboard and adopt it (README "Later changes").`,
      }),
    );
  }
  return results;
}

async function checkPendingDeliveries(stripe: Stripe, options: StripeCheckOptions): Promise<CheckResult> {
  const nowSeconds = Math.floor(options.nowMillis / 1000);
  const title = `no handled event waits for delivery longer than ${formatSeconds(options.pendingAfterSeconds)}`;
  let events: Stripe.Event[];
  try {
    events = await stripe.events
      .list({
        types: [...HANDLED_EVENT_TYPES],
        delivery_success: false,
        created: { gte: nowSeconds - options.sinceSeconds, lte: nowSeconds - options.pendingAfterSeconds },
        limit: 100,
      })
      .autoPagingToArray({ limit: maxEventsRead });
  } catch (error) {
    return failed('stripe', 'pending-deliveries', title, stripeProblem(error, options.apiBase));
  }
  const pending = events.filter((event) => event.pending_webhooks > 0);
  if (pending.length === 0) return ok('stripe', 'pending-deliveries', title, { detail: `none in the last ${formatSeconds(options.sinceSeconds)}` });
  return failed('stripe', 'pending-deliveries', title, {
    detail: `${pending.length} event${pending.length > 1 ? 's' : ''} of the last ${formatSeconds(options.sinceSeconds)} not acknowledged by every endpoint`,
    items: pending
      .slice(0, maxEventsListed)
      .map((event) => `${event.id} ${event.type}, created ${formatSeconds(nowSeconds - event.created)} ago, ${event.pending_webhooks} delivery pending → ${options.replayCommand(event.id)}`),
    fix:
      'Stripe got no 2xx for these. Usually a wrong signing secret (see "the running service has loaded the endpoint\'s secret") or a URL that does not answer 400 (see Edge); pending_webhooks counts every endpoint of the account, so another failing endpoint shows here too. ' +
      'Stripe retries (live: up to 3 days; test: a few times); once fixed, apply them now with the command after each.',
    data: { eventIds: pending.map((event) => event.id) },
  });
}

export function formatSeconds(seconds: number): string {
  if (seconds % 86_400 === 0 && seconds >= 2 * 86_400) return `${seconds / 86_400} d`;
  if (seconds % 3_600 === 0 && seconds >= 3_600) return `${seconds / 3_600} h`;
  if (seconds % 60 === 0 && seconds >= 60) return `${seconds / 60} min`;
  return `${seconds} s`;
}
