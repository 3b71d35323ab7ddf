import { connectDatabase } from '../db';
import { createLogger } from '../logger';
import { createTestDatabase, databaseUrl, type TestDatabase } from './support/testDatabase';
import { deliver, startTestApp, type TestApp } from './support/testApp';
import { checkoutSession, stripeEvent } from './support/stripeFixtures';
import { balanceOf, checkInvariants, invariantsHold } from './support/invariants';
import { startTcpProxy, type TcpProxy } from './support/tcpProxy';

let database: TestDatabase;
let replicaA: TestApp;
let replicaB: TestApp;
const secondPool: { close: () => Promise<void> } = { close: async () => undefined };

beforeAll(async () => {
  database = await createTestDatabase();
  // Two app instances with separate connection pools: two replicas of the service on one database.
  const otherDb = connectDatabase({ connectionString: database.url, poolMax: 10, logger: createLogger('silent') });
  secondPool.close = () => otherDb.close();
  replicaA = await startTestApp(database.db);
  replicaB = await startTestApp(otherDb);
});
afterAll(async () => {
  await replicaA.close();
  await replicaB.close();
  await secondPool.close();
  await database.drop();
});

const purchase = (userId: string, credits: number) =>
  stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, metadata: { credits: String(credits) } }));

test('20 concurrent copies of one event against two replicas credit once', async () => {
  const event = purchase('user_concurrent', 250);
  const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => deliver((i % 2 ? replicaA : replicaB).webhookUrl, event)));
  expect(responses.map((r) => r.status)).toEqual(Array(20).fill(200));
  const statuses = responses.map((r) => r.body.status).sort();
  expect(statuses.filter((s) => s === 'processed')).toHaveLength(1);
  expect(statuses.filter((s) => s === 'duplicate')).toHaveLength(19);
  expect(await balanceOf(database.db, 'user_concurrent')).toEqual({ purchased: 250, subscription: 0 });
});

test('two different events for the same checkout session credit it once', async () => {
  const session = checkoutSession({ client_reference_id: 'user_two_events', metadata: { credits: '40' } });
  const completed = stripeEvent('checkout.session.completed', session);
  const asyncSucceeded = stripeEvent('checkout.session.async_payment_succeeded', session);
  await Promise.all([deliver(replicaA.webhookUrl, completed), deliver(replicaB.webhookUrl, asyncSucceeded)]);
  expect(await balanceOf(database.db, 'user_two_events')).toEqual({ purchased: 40, subscription: 0 });
});

describe('when a handler fails', () => {
  beforeAll(async () => {
    // A real database fault, injected where a handler writes: the ledger refuses one user's entries.
    await database.db.query(`
      CREATE FUNCTION test_refuse_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.user_id = 'user_faulty' THEN RAISE EXCEPTION 'injected ledger fault'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER test_refuse_ledger BEFORE INSERT ON credit_ledger FOR EACH ROW EXECUTE FUNCTION test_refuse_ledger();`);
  });

  test('it answers 500, rolls back everything, and the retry applies the event once', async () => {
    const event = purchase('user_faulty', 60);
    const failed = await deliver(replicaA.webhookUrl, event);
    expect(failed.status).toBe(500);
    expect(failed.body.error).toBe('handler_failed');
    expect(await balanceOf(database.db, 'user_faulty')).toEqual({ purchased: 0, subscription: 0 });
    const purchases = await database.db.query('SELECT 1 FROM credit_purchases WHERE user_id = $1', ['user_faulty']);
    expect(purchases.rowCount).toBe(0);
    const recorded = await database.db.query<{ status: string; error: string }>('SELECT status, error FROM stripe_events WHERE id = $1', [event.id]);
    expect(recorded.rows).toEqual([{ status: 'failed', error: 'injected ledger fault' }]);

    const otherUser = await deliver(replicaA.webhookUrl, purchase('user_healthy', 5));
    expect(otherUser.body.status).toBe('processed');

    await database.db.query('DROP TRIGGER test_refuse_ledger ON credit_ledger');
    const retried = await deliver(replicaB.webhookUrl, event);
    expect(retried.body).toEqual({ received: true, status: 'processed' });
    expect(await balanceOf(database.db, 'user_faulty')).toEqual({ purchased: 60, subscription: 0 });
    expect((await deliver(replicaA.webhookUrl, event)).body.status).toBe('duplicate');
  });
});

describe('when the database is unreachable', () => {
  let proxy: TcpProxy;
  let proxied: TestApp;
  const proxiedPool: { close: () => Promise<void> } = { close: async () => undefined };

  beforeAll(async () => {
    proxy = await startTcpProxy(Number(new URL(database.url).port || 5432));
    const url = new URL(databaseUrl(new URL(database.url).pathname.slice(1)));
    url.port = String(proxy.port);
    const db = connectDatabase({ connectionString: url.toString(), poolMax: 4, logger: createLogger('silent') });
    proxiedPool.close = () => db.close();
    proxied = await startTestApp(db);
  });
  afterAll(async () => {
    await proxied.close();
    await proxiedPool.close();
    await proxy.close();
  });

  test('deliveries get 503 with Retry-After, and the retry after recovery applies them once', async () => {
    const events = [purchase('user_outage', 11), purchase('user_outage', 13), purchase('user_outage', 17)];
    expect((await deliver(proxied.webhookUrl, events[0]!)).body.status).toBe('processed');

    proxy.cut();
    for (const event of events.slice(1)) {
      const response = await deliver(proxied.webhookUrl, event);
      expect(response.status).toBe(503);
      expect(response.headers.get('retry-after')).toMatch(/^\d+$/);
    }
    expect((await fetch(`${proxied.url}/readyz`)).status).toBe(503);

    proxy.restore();
    for (const event of events) await deliver(proxied.webhookUrl, event); // Stripe retries everything it did not get a 2xx for, and more.
    expect(await balanceOf(database.db, 'user_outage')).toEqual({ purchased: 41, subscription: 0 });
    expect((await fetch(`${proxied.url}/readyz`)).status).toBe(200);
  });
});

test('balances equal ledger sums and no session is credited twice', async () => {
  expect(await checkInvariants(database.db)).toEqual(invariantsHold);
});
