/** Deliveries signed by the local Stripe are the ones Stripe would send: stripe-node and our verifier accept them. */
import Stripe from 'stripe';
import { fingerprintSecret } from '../../service/webhook/secretFingerprint';
import { verifyStripeSignature } from '../../service/webhook/verifySignature';
import { checkoutSession, stripeEvent, unixSeconds } from '../objects';
import { signedDelivery, signStripePayload } from '../signing';

const secret = 'whsec_fixture_secret';

it('signs exactly like stripe-node generateTestHeaderString for one secret', () => {
  const payload = JSON.stringify(stripeEvent('checkout.session.completed', checkoutSession()), null, 2);
  const timestamp = unixSeconds();

  expect(signStripePayload(payload, [secret], timestamp)).toBe(Stripe.webhooks.generateTestHeaderString({ payload, secret, timestamp }));
});

it('produces deliveries that stripe-node constructEvent accepts, with the headers Stripe sends', () => {
  const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_1' }));
  const delivery = signedDelivery(event, [secret]);

  const verified = new Stripe('sk_test_x').webhooks.constructEvent(delivery.body, delivery.headers['stripe-signature'], secret);

  expect(verified).toEqual(event);
  expect(delivery.body).toBe(JSON.stringify(event, null, 2));
  expect(delivery.headers).toEqual({
    'content-type': 'application/json; charset=utf-8',
    'stripe-signature': expect.stringMatching(/^t=\d+,v1=[0-9a-f]{64}$/),
    'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
  });
});

it('signs with every secret while one is rolled, and the service verifies either one alone', () => {
  const [oldSecret, newSecret] = ['whsec_old_secret', 'whsec_new_secret'];
  const delivery = signedDelivery(stripeEvent('checkout.session.completed', checkoutSession()), [oldSecret, newSecret]);
  const verify = (value: string) =>
    verifyStripeSignature({
      body: delivery.body,
      signatureHeader: delivery.headers['stripe-signature'],
      secrets: [{ value, fingerprint: fingerprintSecret(value) }],
      nowMillis: Date.now(),
      toleranceSeconds: 300,
    });

  expect(delivery.headers['stripe-signature']).toMatch(/^t=\d+,v1=[0-9a-f]{64},v1=[0-9a-f]{64}$/);
  expect(verify(oldSecret)).toBe(fingerprintSecret(oldSecret));
  expect(verify(newSecret)).toBe(fingerprintSecret(newSecret));
  expect(() => verify('whsec_someone_else')).toThrow(/No signature matches/);
});

it('refuses to sign without a secret or at a fractional timestamp', () => {
  expect(() => signStripePayload('{}', [])).toThrow(/at least one webhook signing secret/);
  expect(() => signStripePayload('{}', [secret], 1.5)).toThrow(RangeError);
});
