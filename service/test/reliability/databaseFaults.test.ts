/**
 * Database faults while deliveries flow: connections cut and restored by a proxy, the server itself
 * restarted, and one handler failing on a real database error. Our faults are 503/500 so Stripe retries;
 * after recovery every event is applied exactly once.
 */
import { connectDatabase, type Database } from '../../db';
import { createLogger } from '../../logger';
import { checkDeliveryInvariants, deliveryInvariantsHold } from '../support/deliveryInvariants';
import { balanceOf } from '../support/invariants';
import { findLogLeaks } from '../support/logScan';
import { startPrivatePostgres, type PrivatePostgres } from '../support/privatePostgres';
import { allServiceLogLines, startServiceProcess, stopAllServiceProcesses, waitUntil, type ServiceProcess } from '../support/serviceProcess';
import { postSigned, sendAll, type AttemptRecord } from '../support/stripeSender';
import { charge, checkoutSession, stripeEvent, stripeId, subscription } from '../support/stripeFixtures';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy';
import { createTestDatabase, type TestDatabase } from '../support/testDatabase';
import { newFigures, reportFigures } from './figures';

const secret = 'whsec_reliability_database_99aa88bb77cc66dd55ee44ff33001122';
const figures = newFigures();
/** How many 503 answers a scenario waits to see before it ends the outage (bounded by outageMillis). */
const unavailableAnswersDuringOutage = 10;
const outageMillis = 3_000;

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await stopAllServiceProcesses();
  await database?.drop();
  reportFigures('databaseFaults', figures);
});

/** A realistic mix: purchases for 20 users, a subscription per 5th user, refunds of every 10th purchase. */
function mixedEvents(count: number, prefix: string) {
  const events: Array<{ id: string; type: string }> = [];
  const expected = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const userId = `${prefix}_${i % 20}`;
    const paymentIntent = stripeId('pi');
    const credits = 5 + (i % 13);
    events.push(stripeEvent('checkout.session.completed', checkoutSession({ client_reference_id: userId, payment_intent: paymentIntent, metadata: { credits: String(credits) } })));
    if (i % 10 === 0) {
      events.push(stripeEvent('charge.refunded', charge({ payment_intent: paymentIntent, amount: 1000, amount_refunded: 1000 })));
    } else {
      expected.set(userId, (expected.get(userId) ?? 0) + credits);
    }
    if (i % 5 === 0) events.push(stripeEvent('customer.subscription.updated', subscription({ metadata: { user_id: `${prefix}_sub_${i}` } }, { monthlyCredits: 30 })));
  }
  return { events, expected };
}

/**
 * Sends `events` like Stripe while `outage` runs once, after `startAfter` acknowledgements; `outage` gets a
 * function resolving once enough 503s were seen (or the bound passed), and must end the outage.
 */
async function deliverThroughOutage(
  service: ServiceProcess,
  events: ReadonlyArray<{ id: string }>,
  startAfter: number,
  outage: (enoughUnavailable: () => Promise<void>) => Promise<void>,
) {
  let acknowledged = 0;
  let unavailable = 0;
  let outageRun: Promise<void> | undefined;
  const serverErrors: AttemptRecord[] = [];
  const onAnswer = (answer: AttemptRecord) => {
    figures.deliveriesSent++;
    if (answer.status === 503) unavailable++;
    if (answer.status >= 500 && answer.status !== 503) serverErrors.push(answer);
    if (answer.status === 200 && ++acknowledged === startAfter) {
      figures.faultsInjected++;
      outageRun = outage(() => waitUntil(() => unavailable >= unavailableAnswersDuringOutage, outageMillis, 'deliveries answered 503').catch(() => undefined));
    }
  };
  const report = await sendAll(events, { target: () => service.webhookUrl, secrets: [secret], concurrency: 8, deadlineMillis: 60_000, onAnswer });
  await outageRun;
  return { report, unavailable, serverErrors };
}

describe('when the connection to the database is cut and restored', () => {
  let proxy: TcpProxy;
  let service: ServiceProcess;
  beforeAll(async () => {
    proxy = await startTcpProxy(Number(new URL(database.url).port || 5432));
    const viaProxy = new URL(database.url);
    viaProxy.port = String(proxy.port);
    service = await startServiceProcess({ databaseUrl: viaProxy.toString(), webhookSecret: secret, name: 'service behind proxy' });
  });
  afterAll(async () => {
    await service?.stop();
    await proxy?.close();
  });

  test('deliveries get 503 while it is down, readiness fails, and after it is back everything is applied once', async () => {
    figures.scenarios++;
    const { events, expected } = mixedEvents(150, 'user_cut');
    let readinessWhileDown = 0;
    const { report, unavailable, serverErrors } = await deliverThroughOutage(service, events, 40, async (enoughUnavailable) => {
      proxy.cut();
      await enoughUnavailable();
      readinessWhileDown = (await fetch(`${service.url}/readyz`)).status;
      proxy.restore();
    });
    expect(serverErrors).toEqual([]);
    expect(unavailable).toBeGreaterThan(0);
    expect(readinessWhileDown).toBe(503);
    await waitUntil(async () => (await fetch(`${service.url}/readyz`)).status === 200, 10_000, 'readiness after the cut');
    for (const [userId, credits] of expected) expect(await balanceOf(database.db, userId)).toEqual({ purchased: credits, subscription: 0 });
    expect(await checkDeliveryInvariants(database.db, { acknowledged: report.acknowledged })).toEqual(deliveryInvariantsHold);
    figures.invariantChecks++;
  });
});

describe('when the database server restarts', () => {
  let server: PrivatePostgres;
  let db: Database;
  let service: ServiceProcess;
  beforeAll(async () => {
    // Our own PostgreSQL: the shared server must keep running for the other test files.
    server = await startPrivatePostgres();
    const admin = connectDatabase({ connectionString: server.url(), poolMax: 1, logger: createLogger('silent') });
    await admin.query('CREATE DATABASE credits');
    await admin.close();
    service = await startServiceProcess({ databaseUrl: server.url('credits'), webhookSecret: secret, name: 'service on a restarting server' });
    db = connectDatabase({ connectionString: server.url('credits'), poolMax: 2, logger: createLogger('silent') });
  });
  afterAll(async () => {
    await service?.stop();
    await db?.close();
    await server?.destroy();
  });

  test('deliveries get 503 during the restart and none is lost or doubled; the service reconnects by itself', async () => {
    figures.scenarios++;
    const { events, expected } = mixedEvents(150, 'user_restart');
    const { report, unavailable, serverErrors } = await deliverThroughOutage(service, events, 40, async (enoughUnavailable) => {
      await server.stop();
      await enoughUnavailable();
      await server.start();
    });
    expect(serverErrors).toEqual([]);
    expect(unavailable).toBeGreaterThan(0);
    expect(service.isRunning()).toBe(true);
    await waitUntil(async () => (await fetch(`${service.url}/readyz`)).status === 200, 10_000, 'readiness after the restart');
    // The LISTEN connection for balance streams noticed the restart and came back.
    await service.waitForLog((line) => line.includes('database notification connection lost'), 1_000);
    for (const [userId, credits] of expected) expect(await balanceOf(db, userId)).toEqual({ purchased: credits, subscription: 0 });
    expect(await checkDeliveryInvariants(db, { acknowledged: report.acknowledged })).toEqual(deliveryInvariantsHold);
    figures.invariantChecks++;
  });
});

describe('when the handler of one event type fails on a database error', () => {
  let service: ServiceProcess;
  beforeAll(async () => {
    service = await startServiceProcess({ databaseUrl: database.url, webhookSecret: secret, name: 'service with a failing refund handler' });
    // A real fault where only the refund handler writes: every charge.refunded transaction fails.
    await database.db.query(`
      CREATE FUNCTION test_refuse_refunds() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'injected refund fault'; END $$;
      CREATE TRIGGER test_refuse_refunds BEFORE INSERT OR UPDATE ON charge_refunds FOR EACH ROW EXECUTE FUNCTION test_refuse_refunds();`);
  });
  afterAll(async () => {
    await database.db.query('DROP TRIGGER IF EXISTS test_refuse_refunds ON charge_refunds');
    await service?.stop();
  });

  test('only that type gets 500s, everything else is applied meanwhile, and the retries apply it once fixed', async () => {
    figures.scenarios++;
    figures.faultsInjected++;
    const { events, expected } = mixedEvents(60, 'user_handler');
    const answers = await Promise.all(
      events.map(async (event) => {
        figures.deliveriesSent++;
        return { event, answer: await postSigned(service.webhookUrl, event, [secret]) };
      }),
    );
    const refunds = answers.filter(({ event }) => event.type === 'charge.refunded');
    const others = answers.filter(({ event }) => event.type !== 'charge.refunded');
    expect(refunds.length).toBeGreaterThan(0);
    expect(refunds.map(({ answer }) => answer.status)).toEqual(refunds.map(() => 500));
    expect(others.map(({ answer }) => answer.status)).toEqual(others.map(() => 200));
    const { rows } = await database.db.query<{ count: number }>("SELECT count(*)::int AS count FROM stripe_events WHERE status = 'failed' AND error = 'injected refund fault'");
    expect(rows[0]!.count).toBe(refunds.length);

    await database.db.query('DROP TRIGGER test_refuse_refunds ON charge_refunds');
    const retried = await sendAll(
      refunds.map(({ event }) => event),
      { target: () => service.webhookUrl, secrets: [secret], concurrency: 4, deadlineMillis: 20_000, onAnswer: () => figures.deliveriesSent++ },
    );
    for (const [userId, credits] of expected) expect(await balanceOf(database.db, userId)).toEqual({ purchased: credits, subscription: 0 });
    expect(await checkDeliveryInvariants(database.db, { acknowledged: [...others.map(({ event }) => event.id), ...retried.acknowledged] })).toEqual(
      deliveryInvariantsHold,
    );
    figures.invariantChecks++;
  });
});

test('no log line of these services carries a secret or a signature', () => {
  expect(allServiceLogLines().length).toBeGreaterThan(100);
  expect(findLogLeaks(allServiceLogLines(), [secret])).toEqual([]);
  figures.invariantChecks++;
});
