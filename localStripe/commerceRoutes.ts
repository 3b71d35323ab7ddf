/**
 * The v1 routes of what the local Stripe sells (commerce.ts): prices, Checkout Sessions (create, retrieve,
 * list, line items, expire), subscriptions, invoices and customers, with the parameters stripe-node v23
 * sends and Stripe's answers to parameters an endpoint does not take.
 */
import {
  integerParam,
  invalidParam,
  LIST_PARAMS,
  listPage,
  metadataParam,
  rangeFilter,
  rejectUnknownParams,
  requiredStringParam,
  stringParam,
} from './apiConventions';
import type { LocalCommerce } from './commerce';
import type { FormObject, FormValue } from './form';
import type { ApiCall, Route } from './resources';

const CHECKOUT_MODES = ['payment', 'subscription'] as const;
/** Stripe: a session may be made to expire between 30 minutes and 24 hours after it is created. */
const MIN_EXPIRY_SECONDS = 30 * 60;
const MAX_EXPIRY_SECONDS = 24 * 60 * 60;

export function commerceRoutes(commerce: LocalCommerce, nowSeconds: () => number): Route[] {
  return [
    { method: 'POST', pattern: /^\/v1\/prices$/, handle: (call) => createPrice(commerce, call) },
    { method: 'GET', pattern: /^\/v1\/prices$/, handle: ({ livemode, params }) => (rejectUnknownParams(params, [...LIST_PARAMS, 'active']), listPage(commerce.listPrices(livemode), params, '/v1/prices', 'price')) },
    { method: 'GET', pattern: /^\/v1\/prices\/([^/]+)$/, handle: ({ livemode, params, pathParams }) => (rejectUnknownParams(params, []), commerce.retrievePrice(pathParams[0]!, livemode)) },
    { method: 'POST', pattern: /^\/v1\/checkout\/sessions$/, handle: (call) => createCheckoutSession(commerce, call, nowSeconds()) },
    { method: 'GET', pattern: /^\/v1\/checkout\/sessions$/, handle: (call) => listCheckoutSessions(commerce, call) },
    { method: 'GET', pattern: /^\/v1\/checkout\/sessions\/([^/]+)$/, handle: (call) => retrieveCheckoutSession(commerce, call) },
    {
      method: 'POST',
      pattern: /^\/v1\/checkout\/sessions\/([^/]+)\/expire$/,
      handle: ({ livemode, params, pathParams }) => (rejectUnknownParams(params, []), commerce.expireCheckoutSession(pathParams[0]!, livemode)),
    },
    {
      method: 'GET',
      pattern: /^\/v1\/subscriptions$/,
      handle: ({ livemode, params }) => {
        rejectUnknownParams(params, [...LIST_PARAMS, 'customer', 'status', 'price']);
        const filter = { customer: stringParam(params, 'customer'), status: stringParam(params, 'status'), price: stringParam(params, 'price') };
        return listPage(commerce.listSubscriptions(livemode, filter), params, '/v1/subscriptions', 'subscription');
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/subscriptions\/([^/]+)$/,
      handle: ({ livemode, params, pathParams }) => (rejectUnknownParams(params, []), commerce.retrieveSubscription(pathParams[0]!, livemode)),
    },
    {
      method: 'GET',
      pattern: /^\/v1\/invoices$/,
      handle: ({ livemode, params }) => {
        rejectUnknownParams(params, [...LIST_PARAMS, 'customer', 'subscription', 'status']);
        const filter = { customer: stringParam(params, 'customer'), subscription: stringParam(params, 'subscription'), status: stringParam(params, 'status') };
        return listPage(commerce.listInvoices(livemode, filter), params, '/v1/invoices', 'invoice');
      },
    },
    { method: 'GET', pattern: /^\/v1\/invoices\/([^/]+)$/, handle: ({ livemode, params, pathParams }) => (rejectUnknownParams(params, []), commerce.retrieveInvoice(pathParams[0]!, livemode)) },
    { method: 'GET', pattern: /^\/v1\/customers\/([^/]+)$/, handle: ({ livemode, params, pathParams }) => (rejectUnknownParams(params, []), commerce.retrieveCustomer(pathParams[0]!, livemode)) },
  ];
}

function createPrice(commerce: LocalCommerce, { livemode, params }: ApiCall) {
  rejectUnknownParams(params, ['unit_amount', 'currency', 'product_data', 'recurring', 'metadata', 'nickname']);
  const productData = objectParam(params, 'product_data');
  const recurring = objectParam(params, 'recurring');
  if (recurring) {
    rejectUnknownParams(recurring, ['interval'], 'recurring');
    if (stringParam(recurring, 'interval') !== 'month') throw invalidParam('recurring[interval]', 'The local Stripe sells monthly prices only: recurring[interval]=month.');
  }
  const unitAmount = integerParam(params, 'unit_amount');
  if (unitAmount === undefined) throw invalidParam('unit_amount', 'Missing required param: unit_amount.', 'parameter_missing');
  return commerce.createPrice({
    unitAmount,
    currency: requiredStringParam(params, 'currency').toLowerCase(),
    productName: productData ? requiredStringParam(productData, 'name') : (stringParam(params, 'nickname') ?? 'Product'),
    recurring: recurring !== undefined,
    metadata: textRecord(params, 'metadata'),
    livemode,
  });
}

function createCheckoutSession(commerce: LocalCommerce, { livemode, params }: ApiCall, now: number) {
  rejectUnknownParams(params, [
    'mode',
    'line_items',
    'success_url',
    'cancel_url',
    'client_reference_id',
    'metadata',
    'subscription_data',
    'customer_email',
    'expires_at',
    'payment_method_types',
    'ui_mode',
  ]);
  const mode = requiredStringParam(params, 'mode');
  if (!(CHECKOUT_MODES as readonly string[]).includes(mode)) throw invalidParam('mode', `Invalid mode: the local Stripe sells in ${CHECKOUT_MODES.join(' or ')} mode.`);
  const lineItems = params.line_items;
  if (!Array.isArray(lineItems) || lineItems.length === 0) throw invalidParam('line_items', 'Missing required param: line_items.', 'parameter_missing');
  const subscriptionData = objectParam(params, 'subscription_data');
  if (subscriptionData) rejectUnknownParams(subscriptionData, ['metadata'], 'subscription_data');
  const expiresAt = integerParam(params, 'expires_at');
  if (expiresAt !== undefined && (expiresAt < now + MIN_EXPIRY_SECONDS || expiresAt > now + MAX_EXPIRY_SECONDS)) {
    throw invalidParam('expires_at', 'The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.');
  }
  const clientReferenceId = stringParam(params, 'client_reference_id');
  if (clientReferenceId !== undefined && clientReferenceId.length > 200) throw invalidParam('client_reference_id', 'client_reference_id may be at most 200 characters.');
  return commerce.createCheckoutSession({
    mode: mode as (typeof CHECKOUT_MODES)[number],
    lineItems: lineItems.map((entry, index) => {
      if (typeof entry !== 'object' || Array.isArray(entry)) throw invalidParam(`line_items[${index}]`, `Invalid object for line_items[${index}]`);
      rejectUnknownParams(entry, ['price', 'quantity'], `line_items[${index}]`);
      return { price: requiredStringParam(entry, 'price'), quantity: integerParam(entry, 'quantity') ?? 1 };
    }),
    successUrl: requiredStringParam(params, 'success_url'),
    cancelUrl: stringParam(params, 'cancel_url') ?? null,
    clientReferenceId: clientReferenceId ?? null,
    metadata: textRecord(params, 'metadata'),
    subscriptionMetadata: subscriptionData ? textRecord(subscriptionData, 'metadata') : {},
    customerEmail: stringParam(params, 'customer_email') ?? null,
    expiresAt: expiresAt ?? null,
    livemode,
  });
}

function retrieveCheckoutSession(commerce: LocalCommerce, { livemode, params, pathParams }: ApiCall) {
  rejectUnknownParams(params, []);
  const id = pathParams[0]!;
  const session = commerce.retrieveCheckoutSession(id, livemode);
  const expand = params.expand;
  if (expand !== undefined) {
    const fields = Array.isArray(expand) ? expand : [expand];
    if (fields.some((field) => field !== 'line_items')) throw invalidParam('expand', 'The local Stripe expands line_items only.');
    const items = commerce.checkoutLineItems(id, livemode) ?? [];
    return { ...session, line_items: { object: 'list', data: items, has_more: false, url: `/v1/checkout/sessions/${id}/line_items` } };
  }
  return session;
}

function listCheckoutSessions(commerce: LocalCommerce, { livemode, params }: ApiCall) {
  rejectUnknownParams(params, [...LIST_PARAMS, 'status', 'customer', 'subscription', 'payment_intent', 'created']);
  const isInCreatedRange = rangeFilter(params, 'created');
  const sessions = commerce
    .listCheckoutSessions(livemode, {
      status: stringParam(params, 'status'),
      customer: stringParam(params, 'customer'),
      subscription: stringParam(params, 'subscription'),
      paymentIntent: stringParam(params, 'payment_intent'),
    })
    .filter((session) => isInCreatedRange(session.created));
  return listPage(sessions, params, '/v1/checkout/sessions', 'checkout.session');
}

function objectParam(params: FormObject, name: string): FormObject | undefined {
  const value: FormValue | undefined = params[name];
  if (value === undefined) return undefined;
  if (typeof value === 'string' || Array.isArray(value)) throw invalidParam(name, `Invalid object for ${name}`);
  return value;
}

/** Metadata given on create: every key a string; an empty value means no such key. */
function textRecord(params: FormObject, name: string): Record<string, string> {
  const update = metadataParam(params, name);
  if (!update) return {};
  return Object.fromEntries(Object.entries(update).filter((entry): entry is [string, string] => entry[1] !== null));
}
