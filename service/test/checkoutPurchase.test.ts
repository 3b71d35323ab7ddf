import { deliver, useAppOnFreshDatabase } from './support/testApp';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';

const service = useAppOnFreshDatabase();

test('a paid checkout session grants its metadata credits to client_reference_id', async () => {
  const session = checkoutSession({ client_reference_id: 'user_paid_1', metadata: { credits: '500' } });
  const response = await deliver(service.webhookUrl, stripeEvent('checkout.session.completed', session));
  expect(response.status).toBe(200);
  expect(response.body).toEqual({ received: true, status: 'processed' });
  expect(await balanceOf(service.db, 'user_paid_1')).toEqual({ purchased: 500, subscription: 0 });
  expect(await checkInvariants(service.db)).toEqual(invariantsHold);
});

test('a duplicate delivery grants credits once', async () => {
  const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: 'user_dup', metadata: { credits: '70' } }));
  expect((await deliver(service.webhookUrl, event)).body.status).toBe('processed');
  expect((await deliver(service.webhookUrl, event)).body.status).toBe('duplicate');
  expect(await balanceOf(service.db, 'user_dup')).toEqual({ purchased: 70, subscription: 0 });
});
