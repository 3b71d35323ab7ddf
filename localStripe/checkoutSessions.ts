/**
 * Checkout Sessions as `checkout.session.*` events carry them (API 2025-03-31.basil): a completed hosted
 * Checkout page paid by card, with the customer details Checkout collected.
 */
import type Stripe from 'stripe';
import {
  blankAddress,
  DEFAULT_AMOUNT_CENTS,
  DEFAULT_CURRENCY,
  mergeDeep,
  SECONDS_PER_DAY,
  stripeId,
  unixSeconds,
  type DeepPartial,
} from './buildingBlocks';

const CHECKOUT_SESSION_LIFETIME_SECONDS = SECONDS_PER_DAY;
const SHOP_URL = 'https://credits.example.com/billing';

/** The buyer as Checkout's payment page collected them. */
export const DEFAULT_CUSTOMER_EMAIL = 'jenny.rosen@example.com';
export const DEFAULT_CUSTOMER_NAME = 'Jenny Rosen';

/** A paid one-off purchase (mode 'payment', status 'complete') of DEFAULT_AMOUNT_CENTS in usd. */
export function checkoutSession(overrides: DeepPartial<Stripe.Checkout.Session> = {}): Stripe.Checkout.Session {
  const livemode = overrides.livemode ?? false;
  const created = overrides.created ?? unixSeconds();
  const amount = overrides.amount_total ?? DEFAULT_AMOUNT_CENTS;
  const session: Stripe.Checkout.Session = {
    id: stripeId(livemode ? 'cs_live' : 'cs_test'),
    object: 'checkout.session',
    adaptive_pricing: null,
    after_expiration: null,
    allow_promotion_codes: null,
    allowed_payment_method_types: null,
    amount_subtotal: amount,
    amount_total: amount,
    automatic_tax: { enabled: false, liability: null, provider: null, status: null },
    billing_address_collection: null,
    cancel_url: `${SHOP_URL}?checkout=cancelled`,
    client_reference_id: null,
    client_secret: null,
    collected_information: null,
    consent: null,
    consent_collection: null,
    created,
    currency: DEFAULT_CURRENCY,
    currency_conversion: null,
    custom_fields: [],
    custom_text: { after_submit: null, shipping_address: null, submit: null, terms_of_service_acceptance: null },
    customer: null,
    customer_account: null,
    customer_creation: 'if_required',
    customer_details: {
      address: { ...blankAddress(), country: 'US', postal_code: '94107' },
      business_name: null,
      email: DEFAULT_CUSTOMER_EMAIL,
      individual_name: null,
      name: DEFAULT_CUSTOMER_NAME,
      phone: null,
      tax_exempt: 'none',
      tax_ids: [],
    },
    customer_email: null,
    discounts: [],
    expires_at: created + CHECKOUT_SESSION_LIFETIME_SECONDS,
    integration_identifier: null,
    invoice: null,
    invoice_creation: {
      enabled: false,
      invoice_data: {
        account_tax_ids: null,
        custom_fields: null,
        description: null,
        footer: null,
        issuer: null,
        metadata: {},
        rendering_options: null,
      },
    },
    livemode,
    locale: null,
    managed_payments: null,
    metadata: {},
    mode: 'payment',
    origin_context: null,
    payment_intent: stripeId('pi'),
    payment_link: null,
    payment_method_collection: 'if_required',
    payment_method_configuration_details: { id: stripeId('pmc'), parent: null },
    payment_method_options: { card: { request_three_d_secure: 'automatic' } },
    payment_method_types: ['card', 'link'],
    payment_status: 'paid',
    permissions: null,
    phone_number_collection: { enabled: false },
    recovered_from: null,
    saved_payment_method_options: null,
    setup_intent: null,
    shipping_address_collection: null,
    shipping_cost: null,
    shipping_options: [],
    status: 'complete',
    submit_type: null,
    subscription: null,
    success_url: `${SHOP_URL}?checkout=success&session_id={CHECKOUT_SESSION_ID}`,
    total_details: { amount_discount: 0, amount_shipping: 0, amount_tax: 0 },
    ui_mode: 'hosted',
    // A completed session has no payable URL.
    url: null,
    wallet_options: null,
  };
  return mergeDeep(session, overrides);
}

/**
 * A paid subscription sign-up: Checkout created the customer and the subscription, and the subscription's
 * first invoice took the payment, so the session has no payment intent of its own.
 */
export function subscriptionCheckoutSession(overrides: DeepPartial<Stripe.Checkout.Session> = {}): Stripe.Checkout.Session {
  const subscriptionDefaults: DeepPartial<Stripe.Checkout.Session> = {
    mode: 'subscription',
    payment_status: 'paid',
    customer: stripeId('cus'),
    customer_creation: null,
    subscription: stripeId('sub'),
    invoice: stripeId('in'),
    payment_intent: null,
    payment_method_collection: 'always',
    payment_method_options: { card: { request_three_d_secure: 'automatic' } },
    saved_payment_method_options: { allow_redisplay_filters: ['always'], payment_method_remove: null, payment_method_save: null },
  };
  return checkoutSession(mergeDeep(subscriptionDefaults, overrides));
}
