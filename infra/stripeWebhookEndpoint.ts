import * as pulumi from '@pulumi/pulumi';

/**
 * The Stripe webhook endpoint as a Pulumi resource, through a dynamic provider that speaks Stripe's
 * REST API with `fetch`. Pulumi stores the provider's code in the state and runs it later, on its own
 * (update, refresh, destroy), so everything the provider calls lives in this file and uses only Node's
 * globals: no import is captured and no secret is part of the code, only of its (secret) inputs.
 *
 * Stripe returns an endpoint's signing secret once, on create. It is kept in the outputs and carried
 * through every update and refresh; when Pulumi did not create the endpoint (adoption) or the secret
 * was rolled in the Dashboard, it comes from `suppliedSecret`. A supplied secret belongs to the endpoint
 * it was supplied for: an endpoint created later (a replacement, or a recreation after the endpoint was
 * deleted in Stripe) signs with its own secret, and the supplied one stays beside it in `signingSecrets`
 * only for the deliveries its old endpoint still makes.
 *
 * Creation is idempotent: the request carries an Idempotency-Key derived from its parameters, so a
 * `pulumi up` run again after an interrupted one gets Stripe's first answer, secret included, instead
 * of a second endpoint; an endpoint of this stack left behind by an interruption older than Stripe keeps
 * keys (24 h), found by its metadata, URL and API version, is deleted: nobody has its secret.
 */

export const STRIPE_API_BASE = 'https://api.stripe.com';

export type StripeMode = 'test' | 'live';

/** The mode of a Stripe secret (`sk_`) or restricted (`rk_`) key, read from its prefix; undefined otherwise. */
export function stripeKeyMode(key: string): StripeMode | undefined {
  const match = /^(?:sk|rk)_(test|live)_[A-Za-z0-9]+$/.exec(key);
  return match ? (match[1] as StripeMode) : undefined;
}

/** What the provider receives, every Input resolved. */
export interface WebhookEndpointInputs {
  apiBase: string;
  apiKey: string;
  /** The mode this stack runs in: the key must belong to it, and so must the endpoint. */
  mode: StripeMode;
  url: string;
  enabledEvents: string[];
  apiVersion: string;
  description: string;
  metadata: Record<string, string>;
  disabled: boolean;
  /** Id of an existing endpoint to manage instead of creating one; empty to create. */
  adoptId: string;
  /** The endpoint's signing secret when Pulumi cannot have it from create; empty otherwise. */
  suppliedSecret: string;
}

export interface WebhookEndpointOutputs extends WebhookEndpointInputs {
  /** This endpoint's signing secret: from create, or a supplied secret given for this endpoint. */
  secret: string;
  /** The endpoint `suppliedSecret` was given for; '' when it belongs to an earlier endpoint (or none is supplied). */
  suppliedSecretFor: string;
  /** What the service must accept: this endpoint's secret, then a supplied secret of an earlier endpoint. */
  signingSecrets: string[];
  livemode: boolean;
  status: string;
}

/** The Stripe API's view of an endpoint (the fields this provider reads). */
interface StripeEndpoint {
  id: string;
  url: string;
  enabled_events: string[];
  api_version: string | null;
  description: string | null;
  metadata: Record<string, string>;
  status: string;
  livemode: boolean;
  secret?: string;
}

const requestTimeoutMillis = 30_000;

/** Why this key cannot manage this stack's endpoint, if it cannot. Never quotes the key. */
function keyModeProblem(inputs: Pick<WebhookEndpointInputs, 'apiKey' | 'mode'>): string | undefined {
  const keyMode = stripeKeyMode(inputs.apiKey);
  if (keyMode === undefined) return 'not a Stripe secret (sk_…) or restricted (rk_…) key';
  if (keyMode !== inputs.mode) {
    return `a ${keyMode}-mode key, which cannot manage the ${inputs.mode}-mode endpoint: set a ${inputs.mode}-mode key (sk_${inputs.mode}_… or rk_${inputs.mode}_…)`;
  }
  return undefined;
}

/** Refuses a key of the wrong mode (or not a key) before any request is made. */
function assertKeyMode(inputs: Pick<WebhookEndpointInputs, 'apiKey' | 'mode'>): void {
  const problem = keyModeProblem(inputs);
  if (problem) throw new Error(`The Stripe API key is ${problem}.`);
}

/** Stripe's messages may quote a key or secret (redacted or not): keep anything key-like out of errors. */
function redact(text: string): string {
  return text.replace(/\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]+/g, '[redacted]');
}

async function stripeRequest(
  inputs: Pick<WebhookEndpointInputs, 'apiBase' | 'apiKey' | 'apiVersion'>,
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  form?: URLSearchParams,
  idempotencyKey?: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${inputs.apiBase.replace(/\/+$/, '')}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${inputs.apiKey}`,
      'Stripe-Version': inputs.apiVersion,
      ...(form ? { 'Content-Type': 'application/x-www-form-urlencoded' } : {}),
      ...(idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : {}),
    },
    body: form?.toString(),
    signal: AbortSignal.timeout(requestTimeoutMillis),
  });
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    // not JSON: reported below by status
  }
  return { status: response.status, body };
}

function stripeFailure(method: string, path: string, status: number, body: Record<string, unknown>): Error {
  const error = body.error as { message?: string } | undefined;
  return new Error(redact(`Stripe ${method} ${path} failed with HTTP ${status}: ${error?.message ?? 'no error message'}`));
}

async function stripeCall(
  inputs: Pick<WebhookEndpointInputs, 'apiBase' | 'apiKey' | 'apiVersion'>,
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  form?: URLSearchParams,
  idempotencyKey?: string,
): Promise<Record<string, unknown>> {
  const { status, body } = await stripeRequest(inputs, method, path, form, idempotencyKey);
  if (status >= 200 && status < 300) return body;
  throw stripeFailure(method, path, status, body);
}

/** The fields Stripe lets us set on create and update, form-encoded the way stripe-node encodes them. */
function endpointForm(inputs: WebhookEndpointInputs, removedMetadataKeys: string[] = []): URLSearchParams {
  const form = new URLSearchParams();
  form.set('url', inputs.url);
  inputs.enabledEvents.forEach((type, index) => form.set(`enabled_events[${index}]`, type));
  form.set('description', inputs.description);
  for (const [key, value] of Object.entries(inputs.metadata)) form.set(`metadata[${key}]`, value);
  for (const key of removedMetadataKeys) form.set(`metadata[${key}]`, '');
  return form;
}

function toOutputs(inputs: WebhookEndpointInputs, endpoint: StripeEndpoint, secret: string, suppliedSecretFor: string): WebhookEndpointOutputs {
  const supplied = inputs.suppliedSecret;
  return {
    secret,
    suppliedSecretFor,
    signingSecrets: supplied && supplied !== secret ? [secret, supplied] : [secret],
    apiBase: inputs.apiBase,
    apiKey: inputs.apiKey,
    mode: inputs.mode,
    adoptId: inputs.adoptId,
    suppliedSecret: inputs.suppliedSecret,
    url: endpoint.url,
    enabledEvents: [...endpoint.enabled_events],
    apiVersion: endpoint.api_version ?? inputs.apiVersion,
    description: endpoint.description ?? '',
    metadata: { ...endpoint.metadata },
    disabled: endpoint.status === 'disabled',
    status: endpoint.status,
    livemode: endpoint.livemode,
  };
}

function assertEndpointMode(endpoint: StripeEndpoint, mode: StripeMode): void {
  if (endpoint.livemode !== (mode === 'live')) {
    throw new Error(`Stripe endpoint ${endpoint.id} is a ${endpoint.livemode ? 'live' : 'test'}-mode endpoint, not ${mode}.`);
  }
}

/** Sets url, events, description, metadata and the disabled flag of an existing endpoint. */
async function updateEndpoint(id: string, inputs: WebhookEndpointInputs, removedMetadataKeys: string[]): Promise<StripeEndpoint> {
  const form = endpointForm(inputs, removedMetadataKeys);
  form.set('disabled', String(inputs.disabled));
  return (await stripeCall(inputs, 'POST', `/v1/webhook_endpoints/${encodeURIComponent(id)}`, form)) as unknown as StripeEndpoint;
}

/** Endpoints of this project and stack at this URL and API version (our metadata), newest first. */
async function endpointsLike(inputs: WebhookEndpointInputs): Promise<StripeEndpoint[]> {
  const list = (await stripeCall(inputs, 'GET', '/v1/webhook_endpoints?limit=100')) as { data?: StripeEndpoint[] };
  const ours = (endpoint: StripeEndpoint) => Object.entries(inputs.metadata).every(([key, value]) => endpoint.metadata[key] === value);
  return (list.data ?? []).filter((endpoint) => ours(endpoint) && endpoint.url === inputs.url && endpoint.api_version === inputs.apiVersion);
}

/** The same key for the same creation request: a rerun after an interruption gets Stripe's first answer. */
async function creationKey(form: URLSearchParams, mode: StripeMode): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`${mode}\n${form.toString()}`));
  return `webhook-endpoint-create-${Buffer.from(digest).toString('hex').slice(0, 40)}`;
}

/**
 * Creates the endpoint, idempotently. Stripe replays the first answer to a key: when that endpoint has
 * been deleted since (recreating after a destroy or a deletion in the Dashboard), a fresh key creates
 * another. Endpoints like it that remain are leftovers of older interruptions: deleted.
 */
async function createEndpoint(inputs: WebhookEndpointInputs): Promise<{ endpoint: StripeEndpoint; secret: string }> {
  const leftovers = await endpointsLike(inputs);
  const form = endpointForm(inputs);
  form.set('api_version', inputs.apiVersion);
  const key = await creationKey(form, inputs.mode);
  const post = (idempotencyKey: string) => stripeCall(inputs, 'POST', '/v1/webhook_endpoints', form, idempotencyKey) as Promise<unknown> as Promise<StripeEndpoint>;

  let created = await post(key);
  const replayed = leftovers.some((endpoint) => endpoint.id === created.id);
  if (!replayed) {
    const { status } = await stripeRequest(inputs, 'GET', `/v1/webhook_endpoints/${encodeURIComponent(created.id)}`);
    if (status === 404) created = await post(`${key}-${crypto.randomUUID()}`);
  }
  if (typeof created.secret !== 'string' || !created.secret) {
    throw new Error(`Stripe created endpoint ${created.id} but returned no signing secret.`);
  }
  for (const leftover of leftovers) {
    if (leftover.id !== created.id) await stripeCall(inputs, 'DELETE', `/v1/webhook_endpoints/${encodeURIComponent(leftover.id)}`);
  }
  // A replayed endpoint may have been changed since it was created; a new one takes `disabled` only by update.
  const endpoint = replayed || inputs.disabled ? await updateEndpoint(created.id, inputs, []) : created;
  return { endpoint, secret: created.secret };
}

function sameSet(a: string[], b: string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');
}

function sameMetadata(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key]);
}

/** Whom the stored supplied secret was given for; state written before this was recorded used it for this endpoint. */
function suppliedSecretHolder(id: string, state: Partial<WebhookEndpointOutputs>): string {
  if (typeof state.suppliedSecretFor === 'string') return state.suppliedSecretFor;
  return state.suppliedSecret ? id : '';
}

/**
 * `rotate-webhook-secret --replace-endpoint` deletes the endpoint after creating its successor (metadata
 * `replaces`). Dropping the old one from the state would make the next `pulumi up` create a third endpoint
 * and write its secret over the successor's, so a refresh refuses instead and says how to adopt the successor
 * (its secret is shown only on create: only the operator can give it to Pulumi).
 */
async function refuseIfReplaced(id: string, props: WebhookEndpointOutputs): Promise<void> {
  const list = (await stripeCall(props, 'GET', '/v1/webhook_endpoints?limit=100')) as { data?: StripeEndpoint[] };
  const successor = (list.data ?? []).find((endpoint) => endpoint.metadata.replaces === id);
  if (!successor) return;
  throw new Error(
    `Stripe endpoint ${id} was replaced by ${successor.id} (rotate-webhook-secret), whose signing secret Pulumi cannot read from Stripe. ` +
      `Adopt it: pulumi config set stripeWebhookEndpointId ${successor.id}; pulumi config set --secret stripeWebhookSecret < <the secrets file, which holds only its secret>; ` +
      `then pulumi up without --refresh: it manages ${successor.id} in place and drops ${id} from the state.`,
  );
}

export const webhookEndpointProvider: pulumi.dynamic.ResourceProvider<WebhookEndpointInputs, WebhookEndpointOutputs> = {
  async check(_olds, news) {
    const failures: pulumi.dynamic.CheckFailure[] = [];
    const keyProblem = keyModeProblem(news);
    if (keyProblem) failures.push({ property: 'apiKey', reason: keyProblem });
    if (!/^https:\/\/[^\s/]+\//.test(news.url)) failures.push({ property: 'url', reason: 'must be an https:// URL' });
    if (news.enabledEvents.length === 0) failures.push({ property: 'enabledEvents', reason: 'must name at least one event type' });
    if (!news.apiVersion) failures.push({ property: 'apiVersion', reason: 'must pin a Stripe API version' });
    if (news.adoptId && !/^we_\w+$/.test(news.adoptId)) failures.push({ property: 'adoptId', reason: 'must be a webhook endpoint id (we_…)' });
    if (news.adoptId && !news.suppliedSecret) {
      failures.push({ property: 'suppliedSecret', reason: 'an adopted endpoint needs its signing secret: Stripe shows it only in the Dashboard' });
    }
    if (news.suppliedSecret && !/^whsec_\w+$/.test(news.suppliedSecret)) {
      failures.push({ property: 'suppliedSecret', reason: 'must be a signing secret (whsec_…)' });
    }
    return { inputs: news, failures };
  },

  async diff(id, olds, news) {
    const replaces: string[] = [];
    if (olds.apiVersion !== news.apiVersion) replaces.push('apiVersion'); // Stripe cannot change it in place
    if (olds.mode !== news.mode) replaces.push('mode');
    if (news.adoptId && news.adoptId !== id) replaces.push('adoptId');
    const changes =
      replaces.length > 0 ||
      olds.url !== news.url ||
      !sameSet(olds.enabledEvents, news.enabledEvents) ||
      olds.description !== news.description ||
      !sameMetadata(olds.metadata, news.metadata) ||
      olds.disabled !== news.disabled ||
      olds.apiKey !== news.apiKey ||
      olds.apiBase !== news.apiBase ||
      olds.adoptId !== news.adoptId ||
      olds.suppliedSecret !== news.suppliedSecret ||
      // State written before signingSecrets existed: an update records them (the endpoint is untouched).
      !Array.isArray((olds as Partial<WebhookEndpointOutputs>).signingSecrets);
    // Create the new endpoint before deleting the old one, so events always have somewhere to go.
    return { changes, replaces, deleteBeforeReplace: false };
  },

  async create(inputs) {
    assertKeyMode(inputs);
    if (inputs.adoptId) {
      const existing = (await stripeCall(inputs, 'GET', `/v1/webhook_endpoints/${encodeURIComponent(inputs.adoptId)}`)) as unknown as StripeEndpoint;
      assertEndpointMode(existing, inputs.mode);
      if (existing.api_version !== inputs.apiVersion) {
        throw new Error(
          `Stripe endpoint ${existing.id} sends events as API version ${existing.api_version ?? '(account default)'}, ` +
            `not ${inputs.apiVersion}, and Stripe cannot change that in place. Adopt an endpoint with the pinned version, ` +
            'or drop the adoption so that Pulumi creates a new endpoint.',
        );
      }
      const updated = await updateEndpoint(existing.id, inputs, Object.keys(existing.metadata).filter((key) => !(key in inputs.metadata)));
      return { id: existing.id, outs: toOutputs(inputs, updated, inputs.suppliedSecret, existing.id) };
    }
    // A new endpoint (first deployment, replacement, recreation) signs with its own secret; a supplied
    // secret was given for an endpoint before it.
    const { endpoint, secret } = await createEndpoint(inputs);
    return { id: endpoint.id, outs: toOutputs(inputs, endpoint, secret, '') };
  },

  async read(id, props) {
    // `pulumi import` has no state to take the key and secret from: adopt through config instead.
    if (!props) throw new Error('A Stripe webhook endpoint cannot be imported; adopt it with stripeWebhookEndpointId instead.');
    const path = `/v1/webhook_endpoints/${encodeURIComponent(id)}`;
    const { status, body } = await stripeRequest(props, 'GET', path);
    if (status === 404) {
      await refuseIfReplaced(id, props);
      return { id: '' }; // deleted outside Pulumi
    }
    if (status < 200 || status >= 300) throw stripeFailure('GET', path, status, body);
    return { id, props: toOutputs(props, body as unknown as StripeEndpoint, props.secret, suppliedSecretHolder(id, props)) };
  },

  async update(id, olds, news) {
    assertKeyMode(news);
    const removed = Object.keys(olds.metadata).filter((key) => !(key in news.metadata));
    const updated = await updateEndpoint(id, news, removed);
    assertEndpointMode(updated, news.mode);
    if (news.suppliedSecret && news.suppliedSecret !== olds.suppliedSecret) {
      return { outs: toOutputs(news, updated, news.suppliedSecret, id) }; // rolled in the Dashboard for this endpoint
    }
    const holder = news.suppliedSecret === olds.suppliedSecret ? suppliedSecretHolder(id, olds) : '';
    return { outs: toOutputs(news, updated, olds.secret, holder) };
  },

  async delete(id, props) {
    const path = `/v1/webhook_endpoints/${encodeURIComponent(id)}`;
    const { status, body } = await stripeRequest(props, 'DELETE', path);
    if (status === 404 || (status >= 200 && status < 300)) return; // already gone counts as deleted
    throw stripeFailure('DELETE', path, status, body);
  },
};

export interface StripeWebhookEndpointArgs {
  apiBase: pulumi.Input<string>;
  /** Pass a secret: it is stored (encrypted) so that refresh and destroy can call Stripe later. */
  apiKey: pulumi.Input<string>;
  mode: pulumi.Input<StripeMode>;
  url: pulumi.Input<string>;
  enabledEvents: pulumi.Input<pulumi.Input<string>[]>;
  apiVersion: pulumi.Input<string>;
  description: pulumi.Input<string>;
  metadata: pulumi.Input<Record<string, pulumi.Input<string>>>;
  disabled?: pulumi.Input<boolean>;
  adoptId?: pulumi.Input<string>;
  suppliedSecret?: pulumi.Input<string>;
}

/** A Stripe webhook endpoint; `secret` is its signing secret, always a Pulumi secret. */
export class StripeWebhookEndpoint extends pulumi.dynamic.Resource {
  declare readonly url: pulumi.Output<string>;
  declare readonly enabledEvents: pulumi.Output<string[]>;
  declare readonly apiVersion: pulumi.Output<string>;
  declare readonly disabled: pulumi.Output<boolean>;
  declare readonly livemode: pulumi.Output<boolean>;
  declare readonly status: pulumi.Output<string>;
  declare readonly secret: pulumi.Output<string>;
  declare readonly suppliedSecretFor: pulumi.Output<string>;
  declare readonly signingSecrets: pulumi.Output<string[]>;

  constructor(name: string, args: StripeWebhookEndpointArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      webhookEndpointProvider,
      name,
      {
        ...args,
        disabled: args.disabled ?? false,
        adoptId: args.adoptId ?? '',
        suppliedSecret: args.suppliedSecret ?? '',
        secret: undefined,
        suppliedSecretFor: undefined,
        signingSecrets: undefined,
        livemode: undefined,
        status: undefined,
      },
      { ...opts, additionalSecretOutputs: ['apiKey', 'suppliedSecret', 'secret', 'signingSecrets'] },
      'stripe',
      'WebhookEndpoint',
    );
  }
}
