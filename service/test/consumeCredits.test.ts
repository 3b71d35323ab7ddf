/**
 * POST /api/v1/billing/credits/consume: the product's back end spends a user's credits with the service
 * token, subscription credits first, in one transaction, once per idempotency key (the first answer is
 * returned again), never below zero; open streams see the change.
 */
import { listenForBalanceChanges } from '../users/balanceChanges';
import { checkInvariants, invariantsHold, balanceOf } from './support/invariants';
import { bucketLedger } from './support/records';
import { callApi, newUser, serviceApiToken, sessionToken, startBillingHarness, type BillingHarness } from './support/billingHarness';
import { StreamClient } from './support/streamClient';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

const consumePath = '/api/v1/billing/credits/consume';

let database: TestDatabase;
let harness: BillingHarness;
let base: string;

beforeAll(async () => {
  database = await createTestDatabase();
  harness = await startBillingHarness(database);
  base = harness.app.url;
});
afterAll(async () => {
  await harness.close();
  await database.drop();
});

/** Credits as the webhook would have granted them: a ledger entry and the balance together. */
async function grant(userId: string, purchased: number, subscription = 0): Promise<void> {
  await database.db.withTransaction(async (tx) => {
    for (const [bucket, delta] of [['purchased', purchased], ['subscription', subscription]] as const) {
      if (delta !== 0) await tx.query("INSERT INTO credit_ledger (user_id, bucket, delta, reason) VALUES ($1, $2, $3, 'test_grant')", [userId, bucket, delta]);
    }
    await tx.query(
      `INSERT INTO service_subscriptions (user_id, purchased_credits_balance, credits_remaining) VALUES ($1, $2, $3)
       ON CONFLICT (user_id) DO UPDATE SET purchased_credits_balance = service_subscriptions.purchased_credits_balance + $2,
         credits_remaining = service_subscriptions.credits_remaining + $3`,
      [userId, purchased, subscription],
    );
  });
}

function consume(body: unknown, token = serviceApiToken, instance = base) {
  return callApi(instance, 'POST', consumePath, { body, headers: { authorization: `Bearer ${token}` } });
}

const spend = (userId: string, amount: number, key = `key_${Math.random()}`, reason = 'image generation') => ({ user_id: userId, amount, idempotency_key: key, reason });

test('spends subscription credits first, then purchased ones, with a ledger entry per bucket naming the reason', async () => {
  const user = newUser();
  await grant(user, 100, 30);
  const answer = await consume(spend(user, 50, 'first-spend', 'chat message'));
  expect(answer.status).toBe(200);
  expect(answer.body).toEqual({
    idempotency_key: 'first-spend',
    user_id: user,
    amount: 50,
    reason: 'chat message',
    from_subscription: 30,
    from_purchased: 20,
    credits_remaining: 0,
    purchased_credits_balance: 80,
    total_credits: 80,
  });
  expect(await bucketLedger(database.db, user, 'subscription')).toEqual([{ delta: 30, reason: 'test_grant' }, { delta: -30, reason: 'usage' }]);
  expect(await bucketLedger(database.db, user, 'purchased')).toEqual([{ delta: 100, reason: 'test_grant' }, { delta: -20, reason: 'usage' }]);
  const ledger = await callApi(base, 'GET', '/api/v1/billing/ledger', { user });
  expect((ledger.body.data as Array<Record<string, unknown>>).slice(0, 2)).toEqual([
    expect.objectContaining({ delta: -20, reason: 'usage', description: 'chat message', source_id: 'first-spend' }),
    expect.objectContaining({ delta: -30, reason: 'usage', description: 'chat message' }),
  ]);
});

test('a balance too low is a 409 that spends nothing; so is a debt left by a refund of spent credits', async () => {
  const user = newUser();
  await grant(user, 10, 5);
  const refused = await consume(spend(user, 16));
  expect(refused.status).toBe(409);
  expect(refused.body).toMatchObject({ error: 'insufficient_credits', total_credits: 15 });
  expect(await balanceOf(database.db, user)).toEqual({ purchased: 10, subscription: 5 });

  const indebted = newUser();
  await grant(indebted, -40, 100);
  const blocked = await consume(spend(indebted, 1));
  expect(blocked.status).toBe(409);
  expect(blocked.body.message).toMatch(/owes 40 credits/);
  expect((await consume(spend(newUser(), 1))).status).toBe(409);
});

test('the same key spends once and answers the first answer again, also when sent at once from two replicas', async () => {
  const user = newUser();
  await grant(user, 100);
  const first = await consume(spend(user, 30, 'once-only'));
  const again = await consume(spend(user, 30, 'once-only'));
  expect(again.status).toBe(200);
  expect(again.body).toEqual(first.body);
  expect(again.headers.get('idempotent-replayed')).toBe('true');
  expect(first.headers.get('idempotent-replayed')).toBeNull();

  const replica = await harness.startReplica();
  const burst = await Promise.all(Array.from({ length: 10 }, (_, i) => consume(spend(user, 7, 'burst-key'), serviceApiToken, i % 2 ? replica.url : base)));
  expect(new Set(burst.map((answer) => JSON.stringify([answer.status, answer.body])))).toHaveProperty('size', 1);
  expect(await balanceOf(database.db, user)).toEqual({ purchased: 63, subscription: 0 });

  // A refused spend's key keeps its answer too: the product uses a new key for a new try.
  const poor = newUser();
  expect((await consume(spend(poor, 5, 'too-early'))).status).toBe(409);
  await grant(poor, 10);
  expect((await consume(spend(poor, 5, 'too-early'))).status).toBe(409);
  expect((await consume(spend(poor, 5, 'next-try'))).status).toBe(200);
});

test('the same key with another user, amount or reason is a 409 naming what differs', async () => {
  const user = newUser();
  await grant(user, 100);
  await consume(spend(user, 10, 'conflict-key', 'export'));
  for (const [body, named] of [
    [spend(user, 11, 'conflict-key', 'export'), 'amount'],
    [spend(user, 10, 'conflict-key', 'import'), 'reason'],
    [spend(newUser(), 10, 'conflict-key', 'export'), 'user_id'],
  ] as const) {
    const answer = await consume(body);
    expect(answer.status).toBe(409);
    expect(answer.body.error).toBe('idempotency_key_reused');
    expect(answer.body.message).toContain(named);
  }
  expect(await balanceOf(database.db, user)).toEqual({ purchased: 90, subscription: 0 });
});

test('parallel spends of one user never take more than there is', async () => {
  const user = newUser();
  await grant(user, 50);
  const answers = await Promise.all(Array.from({ length: 12 }, () => consume(spend(user, 10))));
  expect(answers.filter((answer) => answer.status === 200)).toHaveLength(5);
  expect(answers.filter((answer) => answer.status === 409)).toHaveLength(7);
  expect(await balanceOf(database.db, user)).toEqual({ purchased: 0, subscription: 0 });
});

test('bad bodies are refused with a 400 that names the field, spending nothing', async () => {
  const user = newUser();
  await grant(user, 100);
  for (const [body, error] of [
    [{ ...spend(user, 1), amount: 0 }, 'invalid_amount'],
    [{ ...spend(user, 1), amount: -5 }, 'invalid_amount'],
    [{ ...spend(user, 1), amount: 1.5 }, 'invalid_amount'],
    [{ ...spend(user, 1), amount: '10' }, 'invalid_amount'],
    [{ ...spend(user, 1), amount: 2 ** 60 }, 'invalid_amount'],
    [{ user_id: user, amount: 1, reason: 'x' }, 'missing_field'],
    [{ ...spend(user, 1), idempotency_key: '' }, 'invalid_field'],
    [{ ...spend(user, 1), reason: 'r'.repeat(201) }, 'invalid_field'],
    [{ ...spend(user, 1), bucket: 'purchased' }, 'unknown_field'],
  ] as const) {
    const answer = await consume(body);
    expect({ body, status: answer.status, error: answer.body.error }).toEqual({ body, status: 400, error });
  }
  const asForm = await callApi(base, 'POST', consumePath, { rawBody: 'amount=1', headers: { authorization: `Bearer ${serviceApiToken}`, 'content-type': 'text/plain' } });
  expect(asForm.status).toBe(415);
  expect(await balanceOf(database.db, user)).toEqual({ purchased: 100, subscription: 0 });
});

test('only the service token spends: none, a wrong one, a user’s session or a prefix of the token gets 401', async () => {
  const user = newUser();
  await grant(user, 100);
  for (const authorization of [undefined, `Bearer ${serviceApiToken}x`, `Bearer ${serviceApiToken.slice(0, -1)}`, `Bearer ${await sessionToken(user)}`, `Basic ${serviceApiToken}`, serviceApiToken]) {
    const answer = await callApi(base, 'POST', consumePath, { body: spend(user, 5), headers: authorization === undefined ? {} : { authorization } });
    expect({ authorization: authorization?.slice(0, 12), status: answer.status }).toEqual({ authorization: authorization?.slice(0, 12), status: 401 });
    expect(answer.headers.get('www-authenticate')).toMatch(/^Bearer realm="service"/);
  }
  expect(await balanceOf(database.db, user)).toEqual({ purchased: 100, subscription: 0 });
});

test('an open stream of the user, on another replica, sees the spend', async () => {
  const user = newUser();
  await grant(user, 20);
  const replica = await harness.startReplica();
  const stopListening = await listenForBalanceChanges(database.db, replica.app.balanceChanges);
  const stream = await StreamClient.open(`${replica.url}/api/v1/billing/credits/stream`, { authorization: `Bearer ${await sessionToken(user)}` });
  try {
    expect(await stream.nextBalance()).toMatchObject({ total_credits: 20 });
    expect((await consume(spend(user, 8))).status).toBe(200);
    expect(await stream.nextBalance()).toMatchObject({ total_credits: 12, purchased_credits_balance: 12 });
  } finally {
    stream.close();
    await stopListening();
  }
});

test('every balance equals its ledger', async () => {
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});
