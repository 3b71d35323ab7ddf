/**
 * Card payments after the fact: the charge (`charge.refunded` carries it), its refunds (`refund.*`,
 * `charge.refund.updated`) and its disputes (`charge.dispute.*`), as API 2025-03-31.basil sends them.
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
import { DEFAULT_CUSTOMER_EMAIL, DEFAULT_CUSTOMER_NAME } from './checkoutSessions';

/** Stripe's fee for a dispute, in cents of the charge's currency (US accounts). */
const DISPUTE_FEE_CENTS = 1500;
/** Time the merchant has to answer a dispute: typically 7 to 21 days. */
const DISPUTE_RESPONSE_DAYS = 14;
const CARD_EXPIRY_YEARS_AHEAD = 3;

/**
 * A captured, paid card charge of DEFAULT_AMOUNT_CENTS. `refunded` follows `amount_refunded` (true once
 * all of it is refunded) unless given. Since API 2022-11-15 a charge carries no `refunds` list.
 */
export function charge(overrides: DeepPartial<Stripe.Charge> = {}): Stripe.Charge {
  const id = overrides.id ?? stripeId('ch');
  const amount = overrides.amount ?? DEFAULT_AMOUNT_CENTS;
  const amountRefunded = overrides.amount_refunded ?? 0;
  const created = overrides.created ?? unixSeconds();
  const livemode = overrides.livemode ?? false;
  const defaults: Stripe.Charge = {
    id,
    object: 'charge',
    amount,
    amount_captured: amount,
    amount_refunded: amountRefunded,
    application: null,
    application_fee: null,
    application_fee_amount: null,
    balance_transaction: stripeId('txn'),
    billing_details: {
      address: { ...blankAddress(), country: 'US', postal_code: '94107' },
      email: DEFAULT_CUSTOMER_EMAIL,
      name: DEFAULT_CUSTOMER_NAME,
      phone: null,
      tax_id: null,
    },
    calculated_statement_descriptor: 'CREDITS.EXAMPLE.COM',
    captured: true,
    created,
    currency: DEFAULT_CURRENCY,
    customer: null,
    description: null,
    disputed: false,
    failure_balance_transaction: null,
    failure_code: null,
    failure_message: null,
    fraud_details: {},
    livemode,
    metadata: {},
    on_behalf_of: null,
    outcome: {
      advice_code: null,
      network_advice_code: null,
      network_decline_code: null,
      network_status: 'approved_by_network',
      reason: null,
      risk_level: 'normal',
      risk_score: 32,
      seller_message: 'Payment complete.',
      type: 'authorized',
    },
    paid: true,
    payment_intent: stripeId('pi'),
    payment_method: stripeId('pm'),
    payment_method_details: {
      card: {
        amount_authorized: amount,
        authorization_code: null,
        brand: 'visa',
        checks: { address_line1_check: null, address_postal_code_check: 'pass', cvc_check: 'pass' },
        country: 'US',
        electronic_commerce_indicator: null,
        exp_month: 12,
        exp_year: new Date(created * 1000).getUTCFullYear() + CARD_EXPIRY_YEARS_AHEAD,
        extended_authorization: { status: 'disabled' },
        fingerprint: 'Xt5EWLLDS7FJjR1c',
        funding: 'credit',
        incremental_authorization: { status: 'unavailable' },
        installments: null,
        last4: '4242',
        mandate: null,
        multicapture: { status: 'unavailable' },
        network: 'visa',
        network_token: { used: false },
        network_transaction_id: '104102978678771',
        overcapture: { maximum_amount_capturable: amount, status: 'unavailable' },
        regulated_status: 'unregulated',
        three_d_secure: null,
        transaction_link_id: null,
        wallet: null,
      },
      type: 'card',
    },
    receipt_email: null,
    receipt_number: null,
    receipt_url: `https://pay.stripe.com/receipts/payment/${stripeId(livemode ? 'live' : 'test')}`,
    refunded: amountRefunded > 0 && amountRefunded >= amount,
    review: null,
    shipping: null,
    // Charges made through PaymentIntents carry no legacy source and, without Connect, no transfer.
    source: null,
    source_transfer: null,
    statement_descriptor: null,
    statement_descriptor_suffix: null,
    status: 'succeeded',
    transfer_data: null,
    transfer_group: null,
  };
  return mergeDeep(defaults, overrides);
}

/** Refund statuses Stripe reports; `requires_action` only for some non-card methods. */
export type RefundStatus = 'pending' | 'requires_action' | 'succeeded' | 'failed' | 'canceled';

/**
 * A card refund of DEFAULT_AMOUNT_CENTS against a fresh charge id, 'succeeded' by default. A 'failed' one
 * has its failure reason and the balance transaction that gave the money back; a 'pending' one is still
 * with the card network.
 */
export function refund(overrides: DeepPartial<Stripe.Refund> = {}): Stripe.Refund {
  const status = (overrides.status ?? 'succeeded') as RefundStatus;
  const defaults: Stripe.Refund = {
    id: stripeId('re'),
    object: 'refund',
    amount: DEFAULT_AMOUNT_CENTS,
    balance_transaction: stripeId('txn'),
    charge: stripeId('ch'),
    created: unixSeconds(),
    currency: DEFAULT_CURRENCY,
    customer: null,
    customer_account: null,
    destination_details: {
      card: status === 'succeeded'
        ? { reference: '74989904286713510264582', reference_status: 'available', reference_type: 'acquirer_reference_number', type: 'refund' }
        : { reference_status: 'pending', type: 'refund' },
      type: 'card',
    },
    metadata: {},
    payment_intent: stripeId('pi'),
    payment_method: stripeId('pm'),
    reason: 'requested_by_customer',
    receipt_number: null,
    source_transfer_reversal: null,
    status,
    transfer_reversal: null,
    ...(status === 'failed' ? { failure_balance_transaction: stripeId('txn'), failure_reason: 'expired_or_canceled_card' } : {}),
  };
  return mergeDeep(defaults, overrides);
}

/** Money a dispute took from the balance (or gave back), as Stripe lists it on the dispute. */
function disputeBalanceTransaction(
  dispute: { id: string; amount: number; currency: string; charge: string },
  direction: 'withdrawal' | 'reinstatement',
  created: number,
): Stripe.BalanceTransaction {
  const withdrawn = direction === 'withdrawal';
  const amount = withdrawn ? -dispute.amount : dispute.amount;
  const fee = withdrawn ? DISPUTE_FEE_CENTS : 0;
  return {
    id: stripeId('txn'),
    object: 'balance_transaction',
    amount,
    available_on: created + 2 * SECONDS_PER_DAY,
    balance_type: 'payments',
    created,
    currency: dispute.currency,
    description: `Chargeback ${withdrawn ? 'withdrawal' : 'reversal'} for ${dispute.charge}`,
    exchange_rate: null,
    fee,
    fee_details: withdrawn
      ? [{ amount: fee, application: null, currency: dispute.currency, description: 'Dispute fee', type: 'stripe_fee' }]
      : [],
    net: amount - fee,
    reporting_category: withdrawn ? 'dispute' : 'dispute_reversal',
    source: dispute.id,
    status: 'pending',
    type: 'adjustment',
  };
}

/**
 * A card chargeback of DEFAULT_AMOUNT_CENTS (`charge.dispute.*`), 'needs_response' by default. Its
 * balance transactions follow the status: none for an inquiry (`warning_*`), the withdrawal once funds
 * are taken, and the reinstatement too once the dispute is won.
 */
export function dispute(overrides: DeepPartial<Stripe.Dispute> = {}): Stripe.Dispute {
  const id = overrides.id ?? stripeId('dp');
  const status = overrides.status ?? 'needs_response';
  const created = overrides.created ?? unixSeconds();
  const amount = overrides.amount ?? DEFAULT_AMOUNT_CENTS;
  const currency = overrides.currency ?? DEFAULT_CURRENCY;
  const chargeId = typeof overrides.charge === 'string' ? overrides.charge : stripeId('ch');
  const isInquiry = status.startsWith('warning_');
  const money = { id, amount, currency, charge: chargeId };
  const balanceTransactions = isInquiry
    ? []
    : status === 'won'
      ? [disputeBalanceTransaction(money, 'withdrawal', created), disputeBalanceTransaction(money, 'reinstatement', created)]
      : [disputeBalanceTransaction(money, 'withdrawal', created)];
  const defaults: Stripe.Dispute = {
    id,
    object: 'dispute',
    amount,
    balance_transactions: balanceTransactions,
    charge: chargeId,
    created,
    currency,
    enhanced_eligibility_types: [],
    evidence: {
      access_activity_log: null,
      billing_address: null,
      cancellation_policy: null,
      cancellation_policy_disclosure: null,
      cancellation_rebuttal: null,
      customer_communication: null,
      customer_email_address: null,
      customer_name: null,
      customer_purchase_ip: null,
      customer_signature: null,
      duplicate_charge_documentation: null,
      duplicate_charge_explanation: null,
      duplicate_charge_id: null,
      enhanced_evidence: {},
      product_description: null,
      receipt: null,
      refund_policy: null,
      refund_policy_disclosure: null,
      refund_refusal_explanation: null,
      service_date: null,
      service_documentation: null,
      shipping_address: null,
      shipping_carrier: null,
      shipping_date: null,
      shipping_documentation: null,
      shipping_tracking_number: null,
      uncategorized_file: null,
      uncategorized_text: null,
    },
    evidence_details: {
      due_by: created + DISPUTE_RESPONSE_DAYS * SECONDS_PER_DAY,
      enhanced_eligibility: {},
      has_evidence: false,
      past_due: false,
      submission_count: 0,
      submission_method: 'not_submitted',
    },
    intended_submission_method: null,
    // An inquiry can still be settled by refunding the charge; a chargeback already took the money.
    is_charge_refundable: isInquiry,
    livemode: false,
    metadata: {},
    network_reason_code: isInquiry ? null : '10.4',
    payment_intent: stripeId('pi'),
    payment_method_details: {
      card: { brand: 'visa', case_type: isInquiry ? 'inquiry' : 'chargeback', network: 'visa', network_reason_code: isInquiry ? null : '10.4' },
      type: 'card',
    },
    reason: 'fraudulent',
    status,
  };
  return mergeDeep(defaults, overrides);
}
