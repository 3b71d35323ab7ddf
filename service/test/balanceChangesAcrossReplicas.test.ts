/**
 * Two service processes on one database, as two replicas run: a balance change committed by one reaches an
 * open stream on the other within 1 s (the crediting transaction notifies nobody; the writing process tells
 * the others after its commit), and a change made while the other's listener connection was down is caught
 * up once it reconnects.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { startServiceProcess, stopAllServiceProcesses, waitUntil, type ServiceProcess } from './support/serviceProcess';
import { StreamClient } from './support/streamClient';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';
import { deliver, testWebhookSecret } from './support/testApp';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

const jwtSecret = 'replica-test-secret-0123456789abcdef0123456789';
/** The bound for a change made on one replica to reach a stream on another. */
const acrossReplicasMillis = 1_000;
/** The listener reconnects after 1 s (db.ts); a change missed meanwhile must arrive soon after. */
const catchUpMillis = 5_000;

let database: TestDatabase;
let writer: ServiceProcess;
let reader: ServiceProcess;

beforeAll(async () => {
  database = await createTestDatabase({ poolMax: 2 });
  const options = { databaseUrl: database.url, webhookSecret: testWebhookSecret, env: { AUTH_JWT_SECRET: jwtSecret } };
  [writer, reader] = await Promise.all([startServiceProcess({ ...options, name: 'writing replica' }), startServiceProcess({ ...options, name: 'reading replica' })]);
}, 60_000);
afterAll(async () => {
  await stopAllServiceProcesses();
  await database?.drop();
});

async function openStream(base: string, userId: string): Promise<StreamClient> {
  const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setIssuedAt().setExpirationTime('10m').sign(new TextEncoder().encode(jwtSecret));
  return StreamClient.open(`${base}/api/v1/billing/credits/stream`, { Authorization: `Bearer ${token}` });
}

async function buyCredits(userId: string, credits: number): Promise<void> {
  const event = stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) } }));
  expect((await deliver(writer.webhookUrl, event)).body.status).toBe('processed');
}

/** The reading replica's LISTEN connections to this database. */
async function listenerPids(): Promise<number[]> {
  const { rows } = await database.db.query<{ pid: number }>(
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'stripe-credits-webhook-listen' AND query ILIKE 'LISTEN%'",
  );
  return rows.map((row) => row.pid);
}

test('a credit purchase applied by one replica reaches a stream open on the other within 1 s', async () => {
  const user = `user_${randomUUID()}`;
  const stream = await openStream(reader.url, user);
  try {
    expect(await stream.nextBalance()).toMatchObject({ user_id: user, purchased_credits_balance: 0 });
    await buyCredits(user, 70);
    expect(await stream.nextBalance(acrossReplicasMillis)).toMatchObject({ user_id: user, purchased_credits_balance: 70 });
  } finally {
    stream.close();
  }
});

test("a change made while the other replica's listener connection is down reaches its stream once it reconnects", async () => {
  const user = `user_${randomUUID()}`;
  const stream = await openStream(reader.url, user);
  try {
    expect(await stream.nextBalance()).toMatchObject({ user_id: user, purchased_credits_balance: 0 });
    // Both replicas listen; the writer's own streams hear it without the channel, so cutting both is fair.
    const before = await listenerPids();
    expect(before).toHaveLength(2);
    await database.db.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [before]);
    await waitUntil(async () => (await listenerPids()).every((pid) => !before.includes(pid)), 5_000, 'the listener connections to end');
    await buyCredits(user, 30);
    expect(await stream.nextBalance(catchUpMillis)).toMatchObject({ user_id: user, purchased_credits_balance: 30 });
    await waitUntil(async () => (await listenerPids()).length === 2, 5_000, 'both listeners to be back');
  } finally {
    stream.close();
  }
});
