/**
 * Process faults: the service killed outright mid-burst and restarted while Stripe keeps retrying, and a
 * graceful SIGTERM that must finish what is in flight before the process exits.
 */
import { checkDeliveryInvariants, deliveryInvariantsHold } from '../support/deliveryInvariants';
import { balanceOf } from '../support/invariants';
import { findLogLeaks } from '../support/logScan';
import {
  allServiceLogLines,
  restartServiceProcess,
  startServiceProcess,
  stopAllServiceProcesses,
  waitUntil,
  type ServiceExit,
} from '../support/serviceProcess';
import { postSigned, sendAll, type AttemptRecord } from '../support/stripeSender';
import { charge, checkoutSession, stripeEvent, stripeId } from '../support/stripeFixtures';
import { createTestDatabase, type TestDatabase } from '../support/testDatabase';
import { newFigures, reportFigures } from './figures';

const secret = 'whsec_reliability_process_0a1b2c3d4e5f60718293a4b5c6d7e8f9';
const figures = newFigures();
/** Well under the service's 10 s grace period, which is only for requests that are still running. */
const shutdownPromptnessMillis = 2_000;
let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await stopAllServiceProcesses();
  await database?.drop();
  reportFigures('processFaults', figures);
});

interface Purchase {
  userId: string;
  credits: number;
  paymentIntent: string;
  event: { id: string };
}

/** `count` paid purchases spread over `users` users; each has its own payment unless one is given. */
function purchases(count: number, users: number, prefix: string, sharedPaymentIntent?: string): Purchase[] {
  return Array.from({ length: count }, (_, i) => {
    const userId = `${prefix}_${i % users}`;
    const credits = 1 + ((i * 7) % 50);
    const paymentIntent = sharedPaymentIntent ?? stripeId('pi');
    const session = checkoutSession({ client_reference_id: userId, payment_intent: paymentIntent, metadata: { credits: String(credits) } });
    return { userId, credits, paymentIntent, event: stripeEvent('checkout.session.completed', session) };
  });
}

test('a service killed with SIGKILL twice mid-burst loses and doubles nothing once Stripe has retried', async () => {
  figures.scenarios++;
  let current = await startServiceProcess({ databaseUrl: database.url, webhookSecret: secret, name: 'killed service' });
  const bought = purchases(300, 30, 'user_kill');
  // The first 60 purchases are later refunded in full: refunds race their purchases across the crashes.
  const refunds = bought.slice(0, 60).map((p) => stripeEvent('charge.refunded', charge({ payment_intent: p.paymentIntent, amount: 1000, amount_refunded: 1000 })));
  const events = [...bought.map((p) => p.event), ...refunds].sort(() => Math.random() - 0.5);

  const killAfterAcknowledged = [100, 220];
  const kills: Array<{ exit: Promise<ServiceExit>; failedAttemptsBefore: number }> = [];
  const restarts: Array<Promise<void>> = [];
  let acknowledgedCount = 0;
  let failedAttempts = 0;
  const onAnswer = (answer: AttemptRecord) => {
    figures.deliveriesSent++;
    if (answer.status === 0 || answer.status >= 500) failedAttempts++;
    if (answer.status !== 200) return;
    acknowledgedCount++;
    if (killAfterAcknowledged.includes(acknowledgedCount)) {
      const victim = current;
      victim.kill('SIGKILL');
      figures.faultsInjected++;
      kills.push({ exit: victim.exited, failedAttemptsBefore: failedAttempts });
      restarts.push(
        victim.exited.then(async () => {
          current = await restartServiceProcess(victim);
        }),
      );
    }
  };
  const report = await sendAll(events, { target: () => current.webhookUrl, secrets: [secret], concurrency: 16, deadlineMillis: 90_000, onAnswer });
  await Promise.all(restarts);

  expect(kills).toHaveLength(2);
  for (const kill of kills) expect(await kill.exit).toEqual({ code: null, signal: 'SIGKILL' });
  // Deliveries were in flight or refused while the service was down, and Stripe's retries covered them.
  expect(failedAttempts).toBeGreaterThan(0);
  expect(report.attempts).toBeGreaterThan(events.length);

  for (let user = 0; user < 30; user++) {
    const userId = `user_kill_${user}`;
    const expected = bought.filter((p, i) => p.userId === userId && i >= 60).reduce((sum, p) => sum + p.credits, 0);
    expect(await balanceOf(database.db, userId)).toEqual({ purchased: expected, subscription: 0 });
  }
  expect(await checkDeliveryInvariants(database.db, { acknowledged: report.acknowledged })).toEqual(deliveryInvariantsHold);
  figures.invariantChecks++;
  await current.stop();
});

test('SIGTERM lets every in-flight delivery finish and commit, refuses new ones, then exits 0', async () => {
  figures.scenarios++;
  const service = await startServiceProcess({ databaseUrl: database.url, webhookSecret: secret, name: 'terminated service' });
  const paymentIntent = stripeId('pi');
  const held = purchases(8, 2, 'user_term', paymentIntent);

  // Another transaction holds the payment's lock, so every delivery for it waits inside its transaction.
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const holder = database.db.withTransaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`payment:${paymentIntent}`]);
    await released;
  });
  await waitUntil(async () => (await database.db.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")).rowCount === 1, 10_000, 'the lock holder');

  const inFlight = held.map((p) => {
    figures.deliveriesSent++;
    return postSigned(service.webhookUrl, p.event, [secret]);
  });
  const waitingCount = async () =>
    // This test's database only: other suites on the same server take advisory locks too.
    (await database.db.query<{ count: number }>("SELECT count(*)::int AS count FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")).rows[0]!.count;
  await waitUntil(async () => (await waitingCount()) === held.length, 10_000, 'all deliveries to wait on the lock');

  service.kill('SIGTERM');
  figures.faultsInjected++;
  await service.waitForLog((line) => line.includes('shutting down'), 5_000);
  await waitUntil(async () => (await postSigned(service.webhookUrl, purchases(1, 1, 'user_late')[0]!.event, [secret])).status === 0, 5_000, 'new connections to be refused');
  expect(service.isRunning()).toBe(true);

  release();
  await holder;
  const answers = await Promise.all(inFlight);
  expect(answers.map((answer) => answer.status)).toEqual(Array(held.length).fill(200));
  const answeredAt = Date.now();
  expect(await service.exited).toEqual({ code: 0, signal: null });
  // Keep-alive connections left idle by the finished requests must not hold the exit for the whole grace period.
  expect(Date.now() - answeredAt).toBeLessThan(shutdownPromptnessMillis);

  expect(await balanceOf(database.db, 'user_term_0')).toEqual({ purchased: held.filter((p) => p.userId === 'user_term_0').reduce((s, p) => s + p.credits, 0), subscription: 0 });
  expect(await balanceOf(database.db, 'user_late_0')).toEqual({ purchased: 0, subscription: 0 });
  expect(await checkDeliveryInvariants(database.db, { acknowledged: held.map((p) => p.event.id) })).toEqual(deliveryInvariantsHold);
  figures.invariantChecks++;
});

test('no log line of these services carries a secret or a signature', () => {
  expect(allServiceLogLines().length).toBeGreaterThan(100);
  expect(findLogLeaks(allServiceLogLines(), [secret])).toEqual([]);
  figures.invariantChecks++;
});
