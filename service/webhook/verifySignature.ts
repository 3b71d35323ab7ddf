import Stripe from 'stripe';
import type { SigningSecret } from './secretStore';

export type VerificationFailureReason = 'missing_signature' | 'malformed_signature' | 'timestamp_outside_tolerance' | 'no_matching_signature';

const failureMessages: Record<VerificationFailureReason, string> = {
  missing_signature: 'Missing Stripe-Signature header: only Stripe may call this endpoint.',
  malformed_signature: 'Malformed Stripe-Signature header: expected "t=<unix seconds>,v1=<hex signature>".',
  timestamp_outside_tolerance:
    'Stripe-Signature timestamp is outside the accepted window: the delivery is a replay, or this server\'s clock is wrong (check NTP).',
  no_matching_signature:
    'No signature matches a configured webhook secret: check that STRIPE_WEBHOOK_SECRET(_FILE) holds this endpoint\'s signing secret.',
};

export class WebhookVerificationError extends Error {
  override name = 'WebhookVerificationError';
  constructor(readonly reason: VerificationFailureReason) {
    super(failureMessages[reason]);
  }
}

export interface VerifyOptions {
  /** The raw body as UTF-8 text (stripe-node decodes a Buffer the same way before hashing). */
  body: string;
  signatureHeader: string | undefined;
  secrets: readonly SigningSecret[];
  nowMillis: number;
  toleranceSeconds: number;
}

const stripeSignature = Stripe.webhooks.signature!;
const headerPattern = /^t=\d{1,12}(,[a-z0-9]+=[^,=\s]+)+$/;
const hexSignaturePattern = /^[0-9a-f]{64}$/;

/**
 * Checks a Stripe-Signature header against every secret in force (several during a rotation) with
 * stripe-node's verifier, and returns the fingerprint of the secret that matched. The age window is
 * enforced here in both directions, since stripe-node accepts timestamps from the future.
 *
 * Secrets are tried newest first (the file's last line is the newest: a rotation appends). During a
 * Dashboard roll Stripe signs each delivery with both secrets, and the delivery must be credited to the
 * new one: then "no delivery verified with the old secret for a while" means retiring it rejects nothing.
 */
export function verifyStripeSignature({ body, signatureHeader, secrets, nowMillis, toleranceSeconds }: VerifyOptions): string {
  if (!signatureHeader) throw new WebhookVerificationError('missing_signature');
  const header = signatureHeader.replace(/\s+/g, '');
  if (!headerPattern.test(header)) throw new WebhookVerificationError('malformed_signature');
  const fields = header.split(',').map((field) => field.split('=') as [string, string]);
  const timestampSeconds = Number(fields[0]![1]);
  const signatures = fields.filter(([scheme]) => scheme === 'v1').map(([, value]) => value);
  if (signatures.length === 0 || !signatures.some((value) => hexSignaturePattern.test(value))) {
    throw new WebhookVerificationError('malformed_signature');
  }
  if (Math.abs(nowMillis / 1000 - timestampSeconds) > toleranceSeconds) {
    throw new WebhookVerificationError('timestamp_outside_tolerance');
  }
  for (const secret of [...secrets].reverse()) {
    try {
      stripeSignature.verifyHeader(body, header, secret.value, toleranceSeconds, undefined, nowMillis);
      return secret.fingerprint;
    } catch {
      // Not this secret (the error carries the payload and header: never log it); try the next one.
    }
  }
  throw new WebhookVerificationError('no_matching_signature');
}
